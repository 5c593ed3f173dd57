from __future__ import annotations

import pytest

from rlhfv.data.images import UNREADABLE_IMAGE, base64_image, decode_image
from rlhfv.data.io import _decode_b64
from rlhfv.errors import InputError
from tests.data.bad_images import BAD_IMAGES


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_decode_image_raises_only_unreadable_image_errors(kind, monkeypatch):
    with pytest.raises(UNREADABLE_IMAGE):
        decode_image(BAD_IMAGES[kind](monkeypatch))


@pytest.mark.parametrize("text", ["data:image/png;base64", "data:image/png;base64,!!", "abc"])
def test_bad_base64_and_data_uris_are_value_errors(text):
    with pytest.raises(ValueError):
        base64_image(text)


def test_data_uri_without_a_comma_is_an_input_error():
    with pytest.raises(InputError, match="invalid base64 image .*comma"):
        _decode_b64("data:image/png;base64", path="a.jsonl", row=1, field="image")
