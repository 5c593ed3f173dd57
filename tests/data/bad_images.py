"""Images Pillow refuses in ways beyond OSError / ValueError, shared by the data, eval and
annotate tests: each command must report them as one-line input errors."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image


def broken_png_chunk() -> bytes:
    """A PNG whose pixel data spans two IDAT chunks, the second's type garbled: the header
    reads fine, and ``load()`` raises SyntaxError ("broken PNG file")."""
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buf, format="PNG")
    data = buf.getvalue()
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at : at + 4])
    payload = data[at + 8 : at + 8 + length]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    half = length // 2
    return (
        data[:at]
        + chunk(b"IDAT", payload[:half])
        + chunk(b"ID\x00T", payload[half:])
        + data[at + 12 + length :]
    )


def decompression_bomb(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A 3000x3000 PNG (a few KB) over twice a lowered ``Image.MAX_IMAGE_PIXELS``, so Pillow
    raises DecompressionBombError (no OSError or ValueError); ordinary test images stay under."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000_000)
    buf = io.BytesIO()
    Image.new("1", (3000, 3000)).save(buf, format="PNG")
    return buf.getvalue()


BAD_IMAGES = {"broken PNG chunk": lambda _mp: broken_png_chunk(), "decompression bomb": decompression_bomb}
