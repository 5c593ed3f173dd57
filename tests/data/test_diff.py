"""changed_segments: hand-worked examples and reconstruction properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.data.diff import apply_segments, changed_segments, word_tokens


def _triples(a: str, b: str) -> list[tuple[str, str, str]]:
    return [(s.kind, s.original_text(a), s.corrected_text(b)) for s in changed_segments(a, b)]


def test_replacement_of_words_and_punctuation():
    assert _triples("a red car.", "a blue car!") == [("replace", "red", "blue"), ("replace", ".", "!")]


def test_multiword_replace_and_insert():
    a = "There are two dogs on the grass."
    b = "There is one dog on the green grass."
    assert _triples(a, b) == [("replace", "are two dogs", "is one dog"), ("insert", "", "green ")]


def test_insert_is_a_point_on_the_original_side():
    (seg,) = changed_segments("a cat", "a big cat")
    assert (seg.kind, seg.original_start, seg.original_end) == ("insert", 2, 2)
    assert (seg.corrected_start, seg.corrected_end) == (2, 6)


def test_delete_is_a_point_on_the_corrected_side():
    (seg,) = changed_segments("a big cat", "a cat")
    assert (seg.kind, seg.original_start, seg.original_end, seg.corrected_start, seg.corrected_end) == (
        "delete",
        2,
        6,
        2,
        2,
    )


def test_identical_texts_have_no_segments():
    assert changed_segments("Two cats sit.", "Two cats sit.") == []


def test_punctuation_is_its_own_token_and_words_keep_apostrophes():
    assert [t for t, _, _ in word_tokens("It's a black-and-white cat, sitting.")] == [
        "It's",
        "a",
        "black-and-white",
        "cat",
        ",",
        "sitting",
        ".",
    ]
    assert _triples("a cat, sitting", "a cat sitting") == [("delete", ",", "")]


def test_common_words_still_anchor_long_texts():
    # with autojunk on, "the" (> 1% of a 200+ token text) could not anchor: here it must
    filler = " ".join(["the dog"] * 120)
    a, b = filler + " is red", filler + " is blue"
    assert _triples(a, b) == [("replace", "red", "blue")]


_words = st.sampled_from(["a", "the", "red", "dog", "two", "cats", "sit", "on", "grass", "it's", "x-y"])
_punct = st.sampled_from([".", ",", "!", "?", ";", "(", ")"])
_space = st.sampled_from([" ", "  ", "\n", " \t"])
_text = st.lists(st.one_of(_words, _punct, _space), max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(_text, _text)
def test_segments_reconstruct_both_texts(a: str, b: str):
    segs = changed_segments(a, b)
    assert apply_segments(a, b, segs) == b
    assert apply_segments(b, a, segs, reverse=True) == a


@settings(max_examples=300, deadline=None)
@given(_text, _text)
def test_text_between_segments_is_equal_and_segments_are_well_formed(a: str, b: str):
    segs = changed_segments(a, b)
    o_prev = c_prev = 0
    for s in segs:
        assert o_prev <= s.original_start <= s.original_end <= len(a)
        assert c_prev <= s.corrected_start <= s.corrected_end <= len(b)
        assert a[o_prev : s.original_start] == b[c_prev : s.corrected_start]
        assert s.original_text(a) != s.corrected_text(b)
        expected_kind = (
            "insert"
            if s.original_start == s.original_end
            else "delete"
            if s.corrected_start == s.corrected_end
            else "replace"
        )
        assert s.kind == expected_kind
        o_prev, c_prev = s.original_end, s.corrected_end
    assert a[o_prev:] == b[c_prev:]


@settings(max_examples=100, deadline=None)
@given(_text)
def test_a_text_against_itself_has_no_segments(a: str):
    assert changed_segments(a, a) == []


def test_cjk_characters_are_tokens_of_their_own():
    a, b = "图中有两只狗在草地上。", "图中有一只狗在草地上。"
    assert _triples(a, b) == [("replace", "两", "一")]
    assert [t for t, _, _ in word_tokens("两只dog")] == ["两", "只", "dog"]
