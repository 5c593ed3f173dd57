"""An annotator's edits on an answer -> the corrected answer and its changed segments.

An edit replaces the original characters ``[start, end)`` (code-point offsets into the
original answer, independent of any tokenizer) by ``text``: ``start == end`` inserts,
empty ``text`` deletes. Edits must not overlap (nor may an insertion touch another edit); they are applied left to right, and
each becomes one :class:`ChangedSegment` with its span on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfv.data.schema import CHANGE_CATEGORIES, ChangedSegment


class EditError(ValueError):
    """An edit list that does not describe a correction of the given answer."""


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str
    category: str


def apply_edits(original: str, edits: list[Edit]) -> tuple[str, list[ChangedSegment]]:
    """Return ``(corrected, segments)``.

    ``corrected = original[:s1] + t1 + original[e1:s2] + t2 + ... + original[en:]`` for the
    edits sorted by start; segment ``i`` spans ``[s_i, e_i)`` in the original and
    ``[s_i + d_i, s_i + d_i + len(t_i))`` in the corrected answer, where ``d_i`` is the
    length change of the edits before it.
    """
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    pieces: list[str] = []
    segments: list[ChangedSegment] = []
    cursor = 0  # end of the previous edit in the original
    shift = 0  # len(corrected so far) - len(original so far)
    for i, e in enumerate(ordered):
        if e.category not in CHANGE_CATEGORIES:
            raise EditError(f"edit {i}: category must be one of {', '.join(CHANGE_CATEGORIES)}")
        if not (0 <= e.start <= e.end <= len(original)):
            raise EditError(
                f"edit {i}: span [{e.start}, {e.end}) is outside the answer (length {len(original)})"
            )
        # an insertion touching another edit is ambiguous (which comes first?): merge them
        touches_insert = i > 0 and e.start == cursor and (e.start == e.end or ordered[i - 1].start == cursor)
        if e.start < cursor or touches_insert:
            raise EditError(f"edit {i}: span [{e.start}, {e.end}) overlaps another edit")
        if e.start == e.end and not e.text:
            raise EditError(f"edit {i}: inserts nothing")
        if original[e.start : e.end] == e.text:
            raise EditError(f"edit {i}: the correction equals the original text")
        pieces.append(original[cursor : e.start])
        pieces.append(e.text)
        kind = "insert" if e.start == e.end else ("delete" if not e.text else "replace")
        c_start = e.start + shift
        segments.append(ChangedSegment(kind, e.start, e.end, c_start, c_start + len(e.text), e.category))
        shift += len(e.text) - (e.end - e.start)
        cursor = e.end
    pieces.append(original[cursor:])
    return "".join(pieces), segments
