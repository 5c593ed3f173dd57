"""Which answer tokens changed, and the DDPO token weights built from that.

Two alignment modes produce a 0/1 "changed" mask per token:

``paper`` (default): the character spans of :func:`rlhfv.data.diff.changed_segments` (or
an annotator's segments) are mapped onto the tokenizer's offsets. An answer token is
changed when it shares a non-whitespace character with a counted segment on its side
(a segment made only of whitespace marks the tokens that share any character with it).
Which kinds count is an option (default all three):

* ``replace``: the replaced tokens on the original side and the new ones on the corrected
  side are changed;
* ``insert``: the inserted tokens on the corrected side are changed; the original side
  has only an insertion *point*, so no original token is marked (its neighbours were
  not wrong, something was missing);
* ``delete``: the deleted tokens on the original side are changed; nothing is marked on
  the corrected side.

``reference``: the RLHF-V reference code (``utils/diff_lib.py::get_diff_ids``),
reproduced exactly by :func:`reference_changed_positions` on token ids.

The weight of a token is then (RLHF-V Eq. 5) ``gamma`` if it is an answer token that
changed, ``1`` if it is another answer token, ``0`` on prompt and padding.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Literal

from rlhfv.data.schema import ChangedSegment

CHANGE_KINDS: tuple[str, ...] = ("replace", "insert", "delete")
ALIGNMENTS: tuple[str, ...] = ("paper", "reference")
Side = Literal["original", "corrected"]


def changed_char_mask(
    text: str, segments: Iterable[ChangedSegment], side: Side, kinds: Iterable[str] = CHANGE_KINDS
) -> list[bool]:
    """Per character of ``text`` (one side of the pair): inside a counted changed span.

    Whitespace is marked only by whitespace-only segments, so that a token's leading
    space (" cat" in BPE vocabularies) does not make it overlap a neighbouring change.
    """
    kinds = set(kinds)
    unknown = kinds - set(CHANGE_KINDS)
    if unknown:
        raise ValueError(f"unknown change kinds {sorted(unknown)}; choose from {CHANGE_KINDS}")
    mask = [False] * len(text)
    for seg in segments:
        if seg.kind not in kinds:
            continue
        start, end = (
            (seg.original_start, seg.original_end)
            if side == "original"
            else (seg.corrected_start, seg.corrected_end)
        )
        blank = text[start:end].isspace()
        for i in range(start, min(end, len(text))):
            if blank or not text[i].isspace():
                mask[i] = True
    return mask


def changed_token_mask(
    offsets: Sequence[tuple[int, int]],
    text: str,
    segments: Iterable[ChangedSegment],
    side: Side,
    kinds: Iterable[str] = CHANGE_KINDS,
) -> list[int]:
    """0/1 per token: the token's character span ``offsets[k]`` (into ``text``) overlaps a change.

    ``offsets`` are the tokenizer's ``offset_mapping`` for ``text``; tokens with an
    empty span (special tokens such as eos) are never changed.

    >>> from rlhfv.data.diff import changed_segments
    >>> segs = changed_segments("a red car", "a blue car")
    >>> changed_token_mask([(0, 1), (1, 6), (6, 10)], "a blue car", segs, "corrected")  # a| blue| car
    [0, 1, 0]
    """
    chars = changed_char_mask(text, segments, side, kinds)
    return [int(any(chars[s:e])) for s, e in offsets]


def reference_changed_positions(
    a_seq: Sequence[int], b_seq: Sequence[int], min_match_size: int = 3
) -> tuple[list[int], list[int]]:
    """Positions changed in ``a_seq`` and ``b_seq``, exactly as the RLHF-V reference code.

    Port of ``get_diff_ids(a_seq, b_seq, min_match_size=3)``: ``difflib.SequenceMatcher``
    with default ``autojunk=True`` on the two id sequences; matching blocks shorter than
    ``min_match_size`` are dropped (their tokens count as changed); the gaps between the
    kept blocks (and before the first / after the last) are paired across the sides and
    only gaps non-empty on BOTH sides are marked, on both sides. Pure insertions and
    deletions are not marked.

    >>> reference_changed_positions([1, 2, 3, 9, 5, 6, 7], [1, 2, 3, 8, 8, 5, 6, 7])
    ([3], [3, 4])
    """
    matcher = difflib.SequenceMatcher(None, list(a_seq), list(b_seq))
    blocks = matcher.get_matching_blocks()
    # the sentinel (len(a), len(b), 0) is always kept, as in the reference code
    kept = [m for m in blocks[:-1] if m.size >= min_match_size] + [blocks[-1]]
    a_ids: set[int] = set()
    b_ids: set[int] = set()
    a_prev = b_prev = 0
    for m in kept:
        if m.a > a_prev and m.b > b_prev:
            a_ids.update(range(a_prev, m.a))
            b_ids.update(range(b_prev, m.b))
        a_prev, b_prev = m.a + m.size, m.b + m.size
    return sorted(a_ids), sorted(b_ids)


def reference_changed_masks(
    rejected_ids: Sequence[int], chosen_ids: Sequence[int], min_match_size: int = 3
) -> tuple[list[int], list[int]]:
    """0/1 masks over two full sequences (prompt + answer), marked as the reference code does.

    The reference diffs ``input_ids[1:]`` (the sequences without their first token) and
    weights the label at position ``k + 1`` for a changed index ``k``; this returns masks
    over the full sequences (position 0 is never marked). Callers keep only answer tokens.
    """
    r_mod, c_mod = reference_changed_positions(rejected_ids[1:], chosen_ids[1:], min_match_size)
    rejected = [0] * len(rejected_ids)
    chosen = [0] * len(chosen_ids)
    for k in r_mod:
        rejected[k + 1] = 1
    for k in c_mod:
        chosen[k + 1] = 1
    return rejected, chosen


def token_weights(answer_mask, changed, gamma: float):
    """DDPO token weights: ``gamma`` on changed answer tokens, 1 on other answer tokens, 0 elsewhere.

    ``answer_mask`` and ``changed`` are 0/1 torch tensors of one shape; returns float32
    ``w = answer_mask * (gamma if changed else 1)`` (selected, not blended, so ``gamma``
    is exact).

    >>> import torch
    >>> token_weights(torch.tensor([0, 1, 1, 1, 0]), torch.tensor([0, 0, 1, 0, 1]), 5.0)
    tensor([0., 1., 5., 1., 0.])
    """
    import torch

    answer = answer_mask.bool()
    w = torch.where(changed.bool(), torch.tensor(float(gamma)), torch.tensor(1.0))
    return torch.where(answer, w, torch.tensor(0.0)).float()
