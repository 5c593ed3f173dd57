"""The abstention frontier of ``benchmarks/scene_noun_confidence.py``: which sentences go at a
threshold (hand-worked and against a plain re-implementation), and that its zero-threshold
row is the demo's own evaluation of the same answers."""

import math
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.scenes.language import noun_class
from tests.scenes.strategies import scene_and_wrong_answer
from tests.test_benchmarks import load_benchmark

confidence = load_benchmark("scene_noun_confidence")

ANSWER = (
    "The picture shows a few things. A red ball is in the top left. "
    "Two blue stars can be seen in the center. The bottom right holds a green tree."
)


def test_a_sentence_goes_when_its_noun_was_unsure():
    kept = confidence.drop_unsure_sentences(ANSWER, [0.9, 0.3, 0.8], threshold=0.5)
    assert (
        kept
        == "The picture shows a few things. A red ball is in the top left. The bottom right holds a green tree."
    )
    assert confidence.drop_unsure_sentences(ANSWER, [0.9, 0.3, 0.8], threshold=0.3) == ANSWER
    # a sentence without an object noun always stays
    assert confidence.drop_unsure_sentences(ANSWER, [0.1, 0.1, 0.1], 0.5) == "The picture shows a few things."


def test_probabilities_must_match_the_nouns():
    with pytest.raises(ValueError, match="3 object nouns in the answer but 2 probabilities"):
        confidence.drop_unsure_sentences(ANSWER, [0.9, 0.3], 0.5)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.findall(r"[^.]*\.", text)]


def plain_drop(answer: str, probs: list[float], threshold: float) -> str:
    """The same rule written as a loop over '.'-terminated sentences."""
    kept, k = [], 0
    for sentence in sentences(answer):
        nouns = [w for w in re.findall(r"[a-zA-Z]+", sentence) if noun_class(w)]
        if all(p >= threshold for p in probs[k : k + len(nouns)]):
            kept.append(sentence)
        k += len(nouns)
    return " ".join(kept)


@settings(max_examples=150, deadline=None)
@given(scene_and_wrong_answer(), st.integers(0, 2**31), st.floats(0, 1))
def test_drop_matches_a_plain_loop(case, seed, threshold):
    _, _, answer = case
    n_nouns = sum(1 for w in re.findall(r"[a-zA-Z]+", answer) if noun_class(w))
    rng = random.Random(seed)
    probs = [rng.random() for _ in range(n_nouns)]
    kept = confidence.drop_unsure_sentences(answer, probs, threshold)
    assert kept == plain_drop(answer, probs, threshold)
    # a higher threshold keeps a subset of the sentences
    stricter = confidence.drop_unsure_sentences(answer, probs, min(1.0, threshold + 0.25))
    assert set(sentences(stricter)) <= set(sentences(kept))
    assert sentences(confidence.drop_unsure_sentences(answer, probs, 0.0)) == sentences(answer)


def test_frontier_starts_at_the_demos_own_scores():
    """Zero threshold: the same answers as the demo's evaluation, so the same metrics; a
    threshold above every probability leaves no object named, so nothing is hallucinated."""
    from rlhfv.scenes.model import CHECKPOINT_DIR, load_scene_model
    from rlhfv.scenes.pipeline import evaluate_model

    scenes, answers, probs = confidence.answers_with_noun_probs(None, 24)
    model, processor = load_scene_model(CHECKPOINT_DIR)
    demo_metrics, demo_answers = evaluate_model(model, processor, 24)
    assert answers == demo_answers
    rows = confidence.abstention_frontier(scenes, answers, probs, thresholds=(0.0, 0.5, 1.01))
    assert [r["threshold"] for r in rows] == [0.0, 0.5, 1.01]
    assert {k: rows[0][k] for k in demo_metrics} == demo_metrics
    assert math.isnan(rows[2]["chair_i"]) and rows[2]["recall"] == 0  # no object named: 0 of 0
    assert rows[2]["mean_words"] < rows[1]["mean_words"] <= rows[0]["mean_words"]
    split = confidence.noun_confidences(scenes, answers, probs)
    assert len(split["present"]) + len(split["hallucinated"]) == sum(map(len, probs)) > 0
    assert all(0 < p <= 1 for p in split["present"] + split["hallucinated"])


# -- the decision probes (--probe) ---------------------------------------------------------


def pairwise_auc(scores, labels):
    """AUC straight from its definition: every positive against every negative."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_auc_by_hand():
    assert confidence.roc_auc([0.9, 0.8, 0.1], [True, False, False]) == 1.0
    assert confidence.roc_auc([0.1, 0.8, 0.9], [True, False, False]) == 0.0
    # 0.5 ties 0.5 (one half), beats 0.2: (0.5 + 1) / 2
    assert confidence.roc_auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75
    assert math.isnan(confidence.roc_auc([0.3, 0.4], [True, True]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_auc_matches_the_pairwise_definition(pairs):
    scores, labels = [s / 5 for s, _ in pairs], [y for _, y in pairs]
    if all(labels) or not any(labels):
        assert math.isnan(confidence.roc_auc(scores, labels))
    else:
        assert confidence.roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels))


def test_sentence_starts():
    period = 9
    assert confidence.sentence_starts([1, 2, 9, 3, 4, 9, 5], period) == [0, 0, 0, 3, 3, 3, 6]
    assert confidence.sentence_starts([], period) == []


def test_a_hidden_layer_finds_what_a_linear_probe_cannot():
    import torch

    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(2000, 4, generator=generator), torch.randn(1000, 4, generator=generator)

    def xor(x):  # label by the sign of x0 * x1: no single direction separates it
        return (x[:, 0] * x[:, 1] > 0).tolist()

    def linear(x):
        return (x[:, 2] > 0).tolist()

    for labels, linear_auc_range in ((linear, (0.95, 1.0)), (xor, (0.35, 0.65))):
        probe = confidence.fit_probe(train, labels(train))
        assert (
            linear_auc_range[0]
            <= confidence.roc_auc(probe(test).tolist(), labels(test))
            <= linear_auc_range[1]
        )
    mlp = confidence.fit_probe(train, xor(train), hidden=64)
    assert confidence.roc_auc(mlp(test).tolist(), xor(test)) > 0.9


def test_noun_decisions_line_up_with_the_answers():
    """One state pair per emitted noun, in the same order as answers_with_noun_probs; dropping
    the top k nouns' sentences leaves N - k nouns (one object per sentence in the grammar)."""
    decisions = confidence.noun_decisions(None, 16)
    scenes, answers, probs = confidence.answers_with_noun_probs(None, 16)
    assert decisions["answers"] == answers and decisions["noun_probs"] == probs
    n_nouns = sum(map(len, probs))
    assert n_nouns > 16
    assert decisions["start_states"].shape == decisions["noun_states"].shape == (n_nouns, 128)
    split = confidence.noun_confidences(scenes, answers, probs)
    assert sum(decisions["hallucinated"]) == len(split["hallucinated"])
    # no noun opens a sentence in the grammar, so its sentence-start state is another state
    assert not (decisions["start_states"] == decisions["noun_states"]).all(dim=1).any()

    counts, suspicion = list(map(len, probs)), [1 - p for ps in probs for p in ps]
    rows = confidence.drop_most_suspect(scenes, answers, counts, suspicion, (0.0, 0.25, 1.0))
    assert [r["threshold"] for r in rows] == [0.0, 0.25, 1.0]
    assert rows[0] == {**confidence.abstention_frontier(scenes, answers, probs, (0.0,))[0], "threshold": 0.0}
    assert rows[2]["recall"] == 0
    ranks = confidence.suspicion_ranks(counts, suspicion)
    assert sorted(r for rs in ranks for r in rs) == list(range(n_nouns))
    k = round(0.25 * n_nouns)
    kept = [confidence.drop_unsure_sentences(a, rs, k) for a, rs in zip(answers, ranks, strict=True)]
    assert sum(len(confidence.object_nouns(a)) for a in kept) == n_nouns - k
    # the k nouns that went are the k least probable ones
    gone = sorted(
        p for ps, rs in zip(probs, ranks, strict=True) for p, r in zip(ps, rs, strict=True) if r < k
    )
    assert gone == sorted(p for ps in probs for p in ps)[:k]
