"""Token change masks (paper and reference alignment) and DDPO token weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.data.diff import changed_segments
from rlhfv.data.schema import ChangedSegment
from rlhfv.data.weights import (
    changed_token_mask,
    reference_changed_masks,
    reference_changed_positions,
    token_weights,
)

# ---- reference mode: hand-worked token-id examples --------------------------------


def test_reference_replacement_marks_both_sides():
    assert reference_changed_positions([1, 2, 3, 9, 5, 6, 7], [1, 2, 3, 8, 8, 5, 6, 7]) == ([3], [3, 4])


def test_reference_pure_insertion_and_deletion_are_not_marked():
    assert reference_changed_positions([1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 4, 5, 6]) == ([], [])
    assert reference_changed_positions([1, 2, 3, 7, 4, 5, 6], [1, 2, 3, 4, 5, 6]) == ([], [])


def test_reference_drops_matches_shorter_than_three():
    # blocks: [1,2,3] (kept), [4] (size 1: dropped), [5,6,7] (kept) -> one gap of 3 on each side
    a = [1, 2, 3, 10, 4, 11, 5, 6, 7]
    b = [1, 2, 3, 20, 4, 21, 5, 6, 7]
    assert reference_changed_positions(a, b) == ([3, 4, 5], [3, 4, 5])
    # with min_match_size=1 the single shared token splits it into two replacements
    assert reference_changed_positions(a, b, min_match_size=1) == ([3, 5], [3, 5])


def test_reference_gaps_at_the_start_and_the_end():
    assert reference_changed_positions([9, 1, 2, 3], [8, 1, 2, 3]) == ([0], [0])
    assert reference_changed_positions([1, 2, 3, 4, 9], [1, 2, 3, 4, 8, 8]) == ([4], [4, 5])


def test_reference_keeps_difflib_autojunk_on():
    # with autojunk a token making up > 1% of a 200+ long sequence cannot seed a match:
    # after a differing first token, the shared run of 250 "1"s is never aligned and the
    # reference code marks everything; on a short sequence the run is aligned
    a, b = [2] + [1] * 250, [3] + [1] * 250
    assert reference_changed_positions(a, b) == (list(range(251)), list(range(251)))
    assert reference_changed_positions(a[:50], b[:50]) == ([0], [0])


def test_reference_masks_skip_the_first_token_and_shift_by_one():
    # the reference diffs input_ids[1:] and weights label position k + 1
    rejected = [0, 1, 2, 3, 9, 5, 6, 7]
    chosen = [0, 1, 2, 3, 8, 8, 5, 6, 7]
    assert reference_changed_masks(rejected, chosen) == (
        [0, 0, 0, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0, 0],
    )


# ---- paper mode: character spans onto token offsets --------------------------------


def test_leading_space_tokens_do_not_overlap_neighbouring_changes():
    # BPE-style offsets with the space in front of each word: "a| big| cat"
    original, corrected = "a cat", "a big cat"
    segs = changed_segments(original, corrected)  # insert "big " (with its trailing space)
    assert changed_token_mask([(0, 1), (1, 5), (5, 9)], corrected, segs, "corrected") == [0, 1, 0]
    # the insertion is a point on the original side: no original token is marked
    assert changed_token_mask([(0, 1), (1, 5)], original, segs, "original") == [0, 0]


def test_kinds_select_which_segments_count():
    seg_ins = [ChangedSegment("insert", 3, 3, 3, 7), ChangedSegment("replace", 0, 2, 0, 2)]
    offsets = [(0, 2), (3, 7), (8, 11)]
    text = "ab xyzw cde"
    assert changed_token_mask(offsets, text, seg_ins, "corrected") == [1, 1, 0]
    assert changed_token_mask(offsets, text, seg_ins, "corrected", kinds=["replace"]) == [1, 0, 0]
    with pytest.raises(ValueError, match="unknown change kinds"):
        changed_token_mask(offsets, text, seg_ins, "corrected", kinds=["swap"])


def test_deletion_marks_the_original_side_only():
    original, corrected = "a big cat", "a cat"
    segs = changed_segments(original, corrected)
    assert changed_token_mask([(0, 1), (2, 5), (6, 9)], original, segs, "original") == [0, 1, 0]
    assert changed_token_mask([(0, 1), (2, 5)], corrected, segs, "corrected") == [0, 0]


def test_special_tokens_with_empty_offsets_are_never_changed():
    segs = changed_segments("a red", "a blue")
    assert changed_token_mask([(0, 1), (2, 6), (0, 0)], "a blue", segs, "corrected") == [0, 1, 0]


_word = st.sampled_from(["a", "the", "red", "dog", "two", "cats", "sit", "on", "grass", ".", ",", "blue"])
_sentence = st.lists(_word, min_size=1, max_size=20).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(_sentence, _sentence, st.sets(st.sampled_from(["replace", "insert", "delete"]), min_size=1))
def test_token_marked_iff_it_shares_a_non_space_character_with_a_counted_segment(a, b, kinds):
    from rlhfv.tiny import word_level_tokenizer

    tok = _tokenizer(word_level_tokenizer)
    segs = changed_segments(a, b)
    for side, text in (("original", a), ("corrected", b)):
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        mask = changed_token_mask(offsets, text, segs, side, kinds)
        # independent check: set intersection of character positions
        changed_chars = set()
        for s in segs:
            if s.kind in kinds:
                lo, hi = (
                    (s.original_start, s.original_end)
                    if side == "original"
                    else (s.corrected_start, s.corrected_end)
                )
                changed_chars |= {i for i in range(lo, hi) if not text[i].isspace()}
        assert mask == [int(bool(changed_chars & set(range(s, e)))) for s, e in offsets]


_TOKENIZER = []


def _tokenizer(factory):
    if not _TOKENIZER:
        _TOKENIZER.append(factory())
    return _TOKENIZER[0]


# ---- weights -------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30),
    st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
)
def test_weights_are_gamma_on_changed_answer_tokens_one_on_other_answer_tokens_zero_elsewhere(flags, gamma):
    answer = torch.tensor([int(x) for x, _ in flags])
    changed = torch.tensor([int(y) for _, y in flags])
    w = token_weights(answer, changed, gamma)
    for k, (is_answer, is_changed) in enumerate(flags):
        expected = (gamma if is_changed else 1.0) if is_answer else 0.0
        assert w[k].item() == pytest.approx(expected)


# ---- sub-word tokenizers whose offsets carry the leading space (Llama-, GPT-style) --------

_CORPUS = [
    "There are two red dogs on the green grass.",
    "A blue car is parked next to a tall tree, near one cat sitting.",
    "the big cat and the small dog",
] * 20


@pytest.fixture(scope="module", params=["metaspace", "bytelevel"])
def subword_tokenizer(request):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if request.param == "metaspace":  # SentencePiece-like: "▁red" covers " red"
        pre, alphabet, size = pre_tokenizers.Metaspace(), [], 150
    else:  # GPT-2-like byte level
        pre, alphabet, size = (
            pre_tokenizers.ByteLevel(add_prefix_space=False),
            pre_tokenizers.ByteLevel.alphabet(),
            400,
        )
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre
    backend.train_from_iterator(
        _CORPUS,
        trainers.BpeTrainer(vocab_size=size, special_tokens=["<unk>", "</s>"], initial_alphabet=alphabet),
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")


def test_an_insertion_does_not_mark_the_next_word_through_its_leading_space(subword_tokenizer):
    original, corrected = "the cat and the dog", "the big cat and the dog"
    segs = changed_segments(original, corrected)
    enc = subword_tokenizer(corrected, add_special_tokens=False, return_offsets_mapping=True)
    mask = changed_token_mask(enc["offset_mapping"], corrected, segs, "corrected")
    marked = "".join(corrected[s:e] for (s, e), m in zip(enc["offset_mapping"], mask, strict=True) if m)
    assert marked.strip() == "big"


@settings(max_examples=60, deadline=None)
@given(_sentence, _sentence)
def test_subword_tokens_marked_iff_they_share_a_non_space_character_with_a_change(subword_tokenizer, a, b):
    segs = changed_segments(a, b)
    for side, text in (("original", a), ("corrected", b)):
        offsets = subword_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        mask = changed_token_mask(offsets, text, segs, side)
        spans = [
            (s.original_start, s.original_end) if side == "original" else (s.corrected_start, s.corrected_end)
            for s in segs
        ]
        for (ts, te), m in zip(offsets, mask, strict=True):
            shares = any(
                not text[i].isspace() and any(lo <= i < hi for lo, hi in spans) for i in range(ts, te)
            )
            assert m == int(shares)
        # every changed word is covered by some marked token
        for lo, hi in spans:
            for i in range(lo, hi):
                if not text[i].isspace():
                    assert any(m and ts <= i < te for (ts, te), m in zip(offsets, mask, strict=True))
