"""Changed segments between an original answer and its correction.

A word-level, punctuation-aware diff: both texts are split into words and punctuation
marks (whitespace separates them), the two token lists are aligned with
``difflib.SequenceMatcher`` (``autojunk=False``: common words such as "the" must still be
able to anchor the alignment in long answers), and every stretch of text between two
aligned tokens that differs becomes one :class:`ChangedSegment` with character spans on
both sides.

Guarantees (property-tested): replacing each segment's original span by its corrected
span turns ``original`` into ``corrected`` (and the reverse); the text between segments
is identical on both sides; segments are sorted and do not overlap. Whitespace shared by
both sides at the edges of a change stays outside the segment, so ``"a red car"`` ->
``"a blue car"`` gives one replace segment ``"red"`` -> ``"blue"``; an inserted word
carries one separating space (``"a cat"`` -> ``"a big cat"``: insert ``"big "`` at 2).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from rlhfv.data.schema import ChangedSegment

# Chinese, Japanese and Korean characters: no spaces between words, so one token each
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD_CHAR = rf"(?:(?![{_CJK}])\w)"
# a word (letters/digits/underscore, joined by inner apostrophes or hyphens: "don't",
# "black-and-white"), one CJK character, or any single other non-space character
_TOKEN = re.compile(rf"{_WORD_CHAR}+(?:['\u2019-]{_WORD_CHAR}+)*|[{_CJK}]|[^\w\s]")


def word_tokens(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation marks of ``text`` as ``(token, start, end)``; whitespace dropped.

    >>> word_tokens("A dog's red-ish ball.")
    [('A', 0, 1), ("dog's", 2, 7), ('red-ish', 8, 15), ('ball', 16, 20), ('.', 20, 21)]
    """
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _common_ws_prefix(a: str, b: str) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n] and a[n].isspace():
        n += 1
    return n


def _gap_segment(original: str, corrected: str, o0: int, o1: int, c0: int, c1: int) -> ChangedSegment | None:
    """The segment for one stretch between aligned tokens, or None when it is unchanged."""
    a, b = original[o0:o1], corrected[c0:c1]
    if a == b:
        return None
    head = _common_ws_prefix(a, b)
    tail = _common_ws_prefix(a[head:][::-1], b[head:][::-1])
    o0, o1, c0, c1 = o0 + head, o1 - tail, c0 + head, c1 - tail
    kind = "insert" if o0 == o1 else "delete" if c0 == c1 else "replace"
    return ChangedSegment(kind, o0, o1, c0, c1)


def changed_segments(original: str, corrected: str) -> list[ChangedSegment]:
    """Replaced, inserted and deleted segments turning ``original`` into ``corrected``.

    >>> [(s.kind, s.original_text("a red car."), s.corrected_text("a blue car!"))
    ...  for s in changed_segments("a red car.", "a blue car!")]
    [('replace', 'red', 'blue'), ('replace', '.', '!')]
    """
    a_tok, b_tok = word_tokens(original), word_tokens(corrected)
    matcher = difflib.SequenceMatcher(
        None, [t for t, _, _ in a_tok], [t for t, _, _ in b_tok], autojunk=False
    )
    # anchors: aligned token pairs; the text between consecutive anchors is either
    # identical on both sides or one changed segment
    segments: list[ChangedSegment] = []
    o_prev, c_prev = 0, 0
    for i, j, n in matcher.get_matching_blocks():
        for k in range(n):
            _, o_start, o_end = a_tok[i + k]
            _, c_start, c_end = b_tok[j + k]
            seg = _gap_segment(original, corrected, o_prev, o_start, c_prev, c_start)
            if seg is not None:
                segments.append(seg)
            o_prev, c_prev = o_end, c_end
    seg = _gap_segment(original, corrected, o_prev, len(original), c_prev, len(corrected))
    if seg is not None:
        segments.append(seg)
    return segments


def apply_segments(
    source: str, target: str, segments: Iterable[ChangedSegment], *, reverse: bool = False
) -> str:
    """Rebuild ``target`` from ``source`` by replacing each segment's span.

    With ``reverse=False`` ``source`` is the original and ``target`` the corrected text
    (its spans supply the new content); with ``reverse=True`` the roles swap. Text outside
    the segments comes from ``source``, so the result equals ``target`` exactly when the
    segments are a complete diff.
    """
    out, pos = [], 0
    for seg in sorted(segments, key=lambda s: (s.original_start, s.corrected_start)):
        s0, s1, t0, t1 = (
            (seg.corrected_start, seg.corrected_end, seg.original_start, seg.original_end)
            if reverse
            else (seg.original_start, seg.original_end, seg.corrected_start, seg.corrected_end)
        )
        out.append(source[pos:s0])
        out.append(target[t0:t1])
        pos = s1
    out.append(source[pos:])
    return "".join(out)
