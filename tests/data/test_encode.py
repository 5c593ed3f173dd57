"""Encoding through processors that differ from the tiny built-ins: a Python (slow) tokenizer
without offsets, an image processor that refuses some images."""

from __future__ import annotations

import io
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rlhfv.data.encode import PromptEncoder, encode_correction, open_image, prompt_ids
from rlhfv.data.prepare import load_prepared, prepare
from rlhfv.data.schema import Correction
from rlhfv.errors import InputError
from rlhfv.tiny import DEFAULT_WORDS, PUNCTUATION, build_tiny


def _png(size=(40, 30), colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _slow_llava(fast):
    """``fast`` (the tiny LLaVA processor) with its word-level vocabulary in a Python tokenizer:
    same ids, but no ``offset_mapping`` (transformers ignores the request for these)."""
    from transformers import LlavaProcessor, PythonBackend

    class WordTokenizer(PythonBackend):
        vocab_files_names = {}  # no files: the vocabulary is passed in

        def __init__(self, vocab=None, **kwargs):
            self._vocab = dict(vocab)
            self._words = {i: w for w, i in self._vocab.items()}
            super().__init__(**kwargs)

        @property
        def vocab_size(self):
            return len(self._vocab)

        def get_vocab(self):
            return dict(self._vocab)

        def _tokenize(self, text, **kwargs):  # the fast one: lower-cased, punctuation split off
            return re.findall(r"\w+|[^\w\s]", text.lower())

        def _convert_token_to_id(self, token):
            return self._vocab.get(token, self._vocab["<unk>"])

        def _convert_id_to_token(self, index):
            return self._words.get(index, "<unk>")

    slow = WordTokenizer(
        vocab=fast.tokenizer.get_vocab(),
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    return LlavaProcessor(
        image_processor=fast.image_processor,
        tokenizer=slow,
        patch_size=fast.patch_size,
        vision_feature_select_strategy=fast.vision_feature_select_strategy,
        num_additional_image_tokens=fast.num_additional_image_tokens,
        chat_template=fast.chat_template,
    )


@pytest.fixture(scope="module")
def llava_pair():
    fast = build_tiny("llava")[1]
    return fast, _slow_llava(fast)


_answer = st.lists(st.sampled_from([*DEFAULT_WORDS[:80], *PUNCTUATION[:4]]), min_size=1, max_size=12).map(
    " ".join
)


@settings(max_examples=30, deadline=None)
@given(_answer, _answer)
def test_reference_alignment_needs_no_offsets_and_matches_the_fast_tokenizer(llava_pair, original, corrected):
    fast, slow = llava_pair
    assert "offset_mapping" not in slow.tokenizer("a red dog", return_offsets_mapping=True)
    if original == corrected:
        return
    c = Correction(image=_png(), question="what is it?", original=original, corrected=corrected)
    assert encode_correction(c, slow, alignment="reference") == encode_correction(
        c, fast, alignment="reference"
    )


def test_paper_alignment_without_offsets_says_what_to_do(llava_pair, tmp_path):
    _, slow = llava_pair
    c = Correction(image=_png(), question="what is it?", original="a red dog", corrected="a blue dog")
    with pytest.raises(InputError) as info:
        encode_correction(c, slow, alignment="paper")
    assert (info.value.field, info.value.reason) == ("--processor", "no_offsets")
    assert "gives no character offsets" in str(info.value) and "--alignment reference" in str(info.value)
    # prepare refuses before the first row, so --skip-bad cannot turn it into "no usable rows"
    f = tmp_path / "c.jsonl"
    (tmp_path / "p.png").write_bytes(_png())
    f.write_text(
        json.dumps(
            {"image": "p.png", "question": c.question, "original": c.original, "corrected": c.corrected}
        )
    )
    with pytest.raises(InputError, match="no character offsets") as info:
        prepare(f, tmp_path / "out", slow, processor_name="slow-llava", skip_bad=True)
    assert info.value.path == "slow-llava" and not (tmp_path / "out").exists()
    summary = prepare(f, tmp_path / "out", slow, alignment="reference")
    assert summary.rows_written == 1
    assert sum(load_prepared(tmp_path / "out")[0][0]["chosen_changed"]) > 0


@pytest.mark.parametrize("cached", [False, True])
def test_an_image_the_processor_refuses_is_a_bad_image_row(cached):
    processor = build_tiny("qwen2_vl")[1]
    thin = Correction(
        image=_png((1000, 2)), question="what is it?", original="a red dog", corrected="a blue dog"
    )
    encoder = PromptEncoder(processor) if cached else None
    with pytest.raises(InputError) as info:
        encode_correction(thin, processor, path="c.jsonl", row=7, prompt_encoder=encoder)
    err = info.value
    assert (err.path, err.row, err.field, err.reason) == ("c.jsonl", 7, "image", "bad_image")
    assert str(err).startswith("c.jsonl: row 7: field image: the processor refuses this 1000x2 image (")
    assert "aspect ratio" in str(err)


@pytest.mark.parametrize(
    ("has_image_processor", "message"),
    [
        # the image processor is fine, the processor as a whole is not
        (True, "tokens and images do not match"),
        # a setup problem: nothing to check the image with alone
        (False, "no image processor"),
    ],
)
def test_a_processor_failure_is_not_blamed_on_the_image(has_image_processor, message):
    processor = build_tiny("llava")[1]

    class Failing:
        if not has_image_processor:
            image_processor = None

        def __getattr__(self, name):
            return getattr(processor, name)

        def __call__(self, **kwargs):
            raise ValueError(message)

    with pytest.raises(ValueError, match=message):
        prompt_ids(Failing(), open_image(_png()), "what is it?", row=1)
