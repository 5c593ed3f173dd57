"""Image decoding for every command (data, eval, annotate): what counts as an unreadable
image, the full decode that finds one, and base64 / ``data:`` URI parsing.

Import lazily where start-up time matters: this module imports Pillow.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Everything Pillow raises on bytes that are no usable image: SyntaxError comes from a
# broken PNG chunk, DecompressionBombError (no OSError or ValueError) from an image over
# Image.MAX_IMAGE_PIXELS.
UNREADABLE_IMAGE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_image(data: bytes) -> Image.Image:
    """``data`` fully decoded. ``Image.open`` reads only the header; ``load()`` decodes
    every pixel, so a truncated or corrupt image fails here, not later in a batch.
    Raises one of :data:`UNREADABLE_IMAGE`."""
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def decoded_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of ``data`` after checking it decodes, as :func:`decode_image` but
    with JPEGs decoded at 1/8 scale (``draft``): a corrupt one still fails, at a fraction of
    the cost. Raises one of :data:`UNREADABLE_IMAGE`."""
    with Image.open(io.BytesIO(data)) as im:
        size = im.size
        if im.format == "JPEG":
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
        im.load()
        return size


def unreadable_image_message(err: Exception, image: str | Path | None = None) -> str:
    """What to say about image bytes Pillow cannot decode, naming the image file when there is one.

    Pillow's own message names a ``BytesIO`` object, so it is only kept as a detail for a
    recognised but damaged image ("image file is truncated ...").
    """
    what = f"{image} is not" if image else "not"
    detail = "" if isinstance(err, UnidentifiedImageError) or "<_io." in str(err) else f": {err}"
    return f"{what} a JPEG/PNG/WebP/GIF image (or a corrupt one{detail})"


def is_image_file(text: str, base_dir: str | Path | None = None) -> bool:
    """Whether ``text`` names an existing file (relative to ``base_dir``); False for base64 data,
    whose length or characters make it no valid file name (the OS refuses names over 255 bytes)."""
    if len(text) >= 1024:
        return False
    try:
        return Path(base_dir, text).is_file() if base_dir is not None else Path(text).is_file()
    except (OSError, ValueError):
        return False


def base64_image(text: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URI or of bare base64 text.
    Raises ``ValueError`` (``binascii.Error`` is one) for anything else."""
    if text.startswith("data:"):
        _, comma, text = text.partition(",")
        if not comma:
            raise ValueError("a data URI needs a comma before its base64 data")
    return base64.b64decode(text, validate=True)
