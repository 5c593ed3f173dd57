"""Edits -> corrected answer and segments: hand-worked examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.annotate.edits import Edit, EditError, apply_edits
from rlhfv.data.schema import CHANGE_CATEGORIES, ChangedSegment


def test_hand_worked_replace_insert_delete() -> None:
    original = "a red cat sat on two mats"
    edits = [
        Edit(2, 5, "black", "attribute"),  # "red" -> "black": +2
        Edit(17, 21, "", "number"),  # delete "two ": -4
        Edit(10, 10, "quickly ", "action"),  # insert before "sat": +8
    ]
    corrected, segments = apply_edits(original, edits)
    assert corrected == "a black cat quickly sat on mats"
    assert segments == [
        ChangedSegment("replace", 2, 5, 2, 7, "attribute"),
        ChangedSegment("insert", 10, 10, 12, 20, "action"),
        ChangedSegment("delete", 17, 21, 27, 27, "number"),
    ]


@pytest.mark.parametrize(
    "edits",
    [
        [Edit(0, 3, "x", "object"), Edit(2, 4, "y", "object")],  # overlap
        [Edit(3, 3, "x", "object"), Edit(3, 5, "y", "object")],  # insertion touching an edit
        [Edit(0, 3, "x", "object"), Edit(3, 3, "y", "object")],
        [Edit(1, 1, "x", "object"), Edit(1, 1, "y", "object")],  # two insertions at one point
        [Edit(0, 30, "x", "object")],  # past the end
        [Edit(0, 1, "x", "colour")],
        [Edit(0, 1, "a", "object")],  # no change
        [Edit(2, 2, "", "object")],  # empty insertion
    ],
)
def test_invalid_edits(edits: list[Edit]) -> None:
    with pytest.raises(EditError):
        apply_edits("abcdefgh", edits)


@st.composite
def answer_and_edits(draw):  # noqa: ANN001, ANN201
    original = draw(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=40)
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(original)), max_size=8, unique=True)))
    edits = []
    # pair consecutive cut points into spans; keep only non-touching, valid ones
    last_end = -1
    for a, b in zip(cuts[::2], cuts[1::2], strict=False):
        text = draw(st.text(max_size=6))
        if a <= last_end or (a == b and not text) or original[a:b] == text:
            continue
        if a == b and a == last_end:
            continue
        edits.append(Edit(a, b, text, draw(st.sampled_from(CHANGE_CATEGORIES))))
        last_end = b
    return original, draw(st.permutations(edits))


@settings(deadline=None)  # a shared, loaded machine: time per example varies
@given(answer_and_edits())
def test_segments_describe_the_edit_both_ways(case) -> None:  # noqa: ANN001
    original, edits = case
    corrected, segments = apply_edits(original, edits)
    by_start = sorted(edits, key=lambda e: e.start)
    assert len(segments) == len(edits)
    # independent reconstruction: apply the edits right to left on the original
    expected = original
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        expected = expected[: e.start] + e.text + expected[e.end :]
    assert corrected == expected
    for seg, e in zip(segments, by_start, strict=True):
        assert seg.original_text(original) == original[e.start : e.end]
        assert seg.corrected_text(corrected) == e.text
        assert seg.category == e.category
        assert seg.kind == ("insert" if e.start == e.end else "delete" if not e.text else "replace")
    # undoing the segments right to left on the corrected answer gives the original back
    back = corrected
    for seg in reversed(segments):
        back = back[: seg.corrected_start] + seg.original_text(original) + back[seg.corrected_end :]
    assert back == original
    # the unchanged text between segments is identical on both sides
    bounds_o = [0] + [x for s in segments for x in (s.original_start, s.original_end)] + [len(original)]
    bounds_c = [0] + [x for s in segments for x in (s.corrected_start, s.corrected_end)] + [len(corrected)]
    for i in range(0, len(bounds_o), 2):
        assert original[bounds_o[i] : bounds_o[i + 1]] == corrected[bounds_c[i] : bounds_c[i + 1]]
