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
