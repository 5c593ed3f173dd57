"""Scene-world hallucination metrics: hand-worked numbers and properties."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.scenes.language import describe
from rlhfv.scenes.metrics import (
    METRIC_KEYS,
    attribute_counts,
    hallucinated_spans,
    hallucination_kinds,
    score_answers,
)
from rlhfv.scenes.world import PARTNERS, Scene, SceneObject, partner_of
from tests.scenes.strategies import scenes

SCENE = Scene((SceneObject("ball", "red", 2, "top left"), SceneObject("tree", "green", 1, "center")))


def test_hand_worked_example():
    answers = [
        # right about both objects
        "Two red balls are in the top left. A green tree is in the center.",
        # wrong colour of the ball, a hallucinated house, tree not mentioned
        "Two blue balls are in the top left. A red house is in the center.",
        # no object at all
        "The image shows a simple scene on a dark background.",
        # wrong count and position of the tree; ball right
        "Three green trees are in the top right. Two red balls are in the top left.",
    ]
    m = score_answers(answers, [SCENE] * 4)
    assert m["chair_s_mentioned"] == 1 / 3  # answers with a mention: 1, 2, 4; hallucinating: 2
    # mentions: answer 1 ball, tree; answer 2 ball, house; answer 4 tree, ball -> 6; 1 hallucinated
    assert m["chair_i"] == 1 / 6
    assert math.isclose(m["recall"], (2 + 1 + 0 + 2) / 8)
    # claims about present objects: a1 ball, tree; a2 ball; a4 tree, ball -> 5
    assert m["attribute_error"] == 1 / 5
    assert m["count_error"] == 1 / 5
    assert m["position_error"] == 1 / 5
    assert m["mean_words"] == sum(len(a.split()) for a in answers) / 4
    assert set(m) == set(METRIC_KEYS)


def test_hallucinated_spans_point_at_the_absent_object():
    text = "Two red balls are in the top left. A red house and some clouds are here."
    spans = hallucinated_spans(text, SCENE)
    assert [(text[s:e], c) for s, e, c in spans] == [("house", "house"), ("clouds", "cloud")]


@given(scenes(), st.integers(0, 2**31))
@settings(max_examples=100, deadline=None)
def test_a_true_description_scores_perfectly(scene, seed):
    text = describe(scene, random.Random(seed))
    m = score_answers([text], [scene])
    assert m["chair_s_mentioned"] == 0 and m["chair_i"] == 0 and m["recall"] == 1
    assert m["attribute_error"] == m["count_error"] == m["position_error"] == 0
    assert attribute_counts(text, scene).checked == len(scene.objects)


def test_hallucination_kinds_hand_worked():
    # SCENE holds a ball and a tree; the tree's partner is the house
    answers = [
        # the ball is named as a box (a substitution), the house is the tree's partner, added
        "Two red boxes are in the top left. A green tree is in the center. A red house is in the top right.",
        # a substitution: the tree named as a house (the partner), same number of claims
        "Two red balls are in the top left. A red house is in the center.",
        # both right; the house named twice in another answer would count once per answer
        "Two red balls are in the top left. A green tree is in the center.",
    ]
    kinds = hallucination_kinds(answers, [SCENE] * 3)
    # the box (red, like the unnamed ball) and the house (last claim, red like the unnamed
    # ball) in the first answer; the house (last claim, red, the unnamed tree is green) in the second
    assert kinds == {
        "answers": 3,
        "same_count_answers": 2,
        "hallucinated": 3,
        "partner": 2,
        "last_claim": 2,
        "colour_of_missed": 2,
    }


def test_partner_of_is_symmetric():
    for a, b in PARTNERS:
        assert partner_of(a) == b and partner_of(b) == a
    assert partner_of("ball") is None


@given(scenes(), scenes(), st.integers(0, 2**31))
@settings(max_examples=100, deadline=None)
def test_hallucination_kinds_are_parts_of_the_hallucinated(described, shown, seed):
    # a description of one scene read against another: every absent class it names counts once
    answer = describe(described, random.Random(seed))
    kinds = hallucination_kinds([answer], [shown])
    absent = described.classes - shown.classes
    assert kinds["hallucinated"] == len(absent)
    assert kinds["last_claim"] <= 1 and kinds["same_count_answers"] <= 1
    for kind in ("partner", "last_claim", "colour_of_missed"):
        assert 0 <= kinds[kind] <= kinds["hallucinated"]
    assert hallucination_kinds([answer], [described])["hallucinated"] == 0


def test_hallucination_kinds_refuses_answers_and_scenes_of_different_lengths():
    with pytest.raises(ValueError, match="2 answers but 1 scenes"):
        hallucination_kinds(["a", "b"], [SCENE])
