"""The one record type: a fine-grained correction of a model's answer.

Every part of rlhfv speaks it: the annotation app writes it, ``rlhfv data`` reads and
prepares it, training and evaluation consume the prepared form. The original answer is
the DPO *rejected* response, the corrected answer the *chosen* one (RLHF-V, Sec. 3).
"""

from __future__ import annotations

import io
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

CHANGE_CATEGORIES: tuple[str, ...] = ("object", "position", "number", "attribute", "action", "other")
SegmentKind = Literal["replace", "insert", "delete"]
SEGMENT_OFFSETS: tuple[str, ...] = ("original_start", "original_end", "corrected_start", "corrected_end")


def _offset(name: str, value: Any) -> int:
    """``value`` as an integer offset: an int (numpy's too), or an integral float such as ``2.0``."""
    if not isinstance(value, bool):  # True is an int to Python, never an offset to a user
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ValueError(f"{name} must be an integer, got {value!r}")


@dataclass(frozen=True)
class ChangedSegment:
    """One changed segment, as character spans ``[start, end)`` on both sides.

    ``replace``: both spans non-empty; ``insert``: the original span is empty (a point);
    ``delete``: the corrected span is empty. ``category`` is one of ``CHANGE_CATEGORIES``
    when an annotator labelled it, else ``None`` (segments recovered by a diff).
    """

    kind: SegmentKind
    original_start: int
    original_end: int
    corrected_start: int
    corrected_end: int
    category: str | None = None

    def original_text(self, original: str) -> str:
        return original[self.original_start : self.original_end]

    def corrected_text(self, corrected: str) -> str:
        return corrected[self.corrected_start : self.corrected_end]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangedSegment:
        """The segment in ``d`` (other keys ignored), checked so that no bad value reaches the slicing.

        Offsets must be integers; an integral float (``2.0``, what some JSON writers emit) is
        accepted as that integer, anything else (``"2"``, ``2.5``, ``true``) is refused.
        ``kind`` must be a string and ``category`` a string or null. Raises ``ValueError``
        saying which key is wrong.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a segment must be an object, got {type(d).__name__}")
        missing = [k for k in ("kind", *SEGMENT_OFFSETS) if k not in d]
        if missing:
            raise ValueError(f"segment has no {', '.join(missing)}")
        kind, category = d["kind"], d.get("category")
        if not isinstance(kind, str):
            raise ValueError(f"kind must be a string, got {kind!r}")
        if category is not None and not isinstance(category, str):
            raise ValueError(f"category must be a string or null, got {category!r}")
        return cls(kind=kind, category=category, **{k: _offset(k, d[k]) for k in SEGMENT_OFFSETS})


@dataclass
class Correction:
    """``(image, question, original answer, corrected answer)`` plus provenance.

    ``image`` is a path (absolute once read; readers resolve paths relative to their
    file) or the encoded image bytes (JPEG/PNG). ``segments`` holds the annotator's
    labelled segments when known; ``None`` means "recover them with a diff".
    """

    image: str | bytes
    question: str
    original: str
    corrected: str
    annotator: str | None = None
    segments: list[ChangedSegment] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    @property
    def chosen(self) -> str:
        return self.corrected

    @property
    def rejected(self) -> str:
        return self.original

    def load_image(self):
        """The image as an RGB ``PIL.Image``."""
        from PIL import Image

        src = io.BytesIO(self.image) if isinstance(self.image, bytes) else Path(self.image)
        with Image.open(src) as im:
            return im.convert("RGB")
