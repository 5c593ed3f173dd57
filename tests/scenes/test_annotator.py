"""The simulated annotator: minimal, categorised corrections from the ground truth."""

from __future__ import annotations

from hypothesis import given, settings

from rlhfv.data.schema import CHANGE_CATEGORIES
from rlhfv.scenes.annotator import ANNOTATOR_NAME, annotate
from rlhfv.scenes.language import claims_of, describe, facts_of, scene_facts
from rlhfv.scenes.world import Scene, SceneObject
from tests.scenes.strategies import scene_and_wrong_answer


def _rebuild(source: str, target: str, segments, side: str) -> str:
    """Apply segments to ``source`` to get ``target`` (independent of the annotator's code)."""
    out, pos = [], 0
    for s in segments:
        a0, a1 = (
            (s.original_start, s.original_end) if side == "original" else (s.corrected_start, s.corrected_end)
        )
        b0, b1 = (
            (s.corrected_start, s.corrected_end) if side == "original" else (s.original_start, s.original_end)
        )
        out.append(source[pos:a0])
        out.append(target[b0:b1])
        pos = a1
    out.append(source[pos:])
    return "".join(out)


@given(scene_and_wrong_answer())
@settings(max_examples=300, deadline=None)
def test_corrected_answer_states_only_ground_truth(case):
    scene, wrong, answer = case
    c = annotate(answer, scene, image=b"x", question="Describe this image in detail.")
    assert facts_of(c.corrected) <= scene_facts(scene)
    # objects that were right stay mentioned; hallucinated ones are gone
    assert {f[0] for f in facts_of(c.corrected)} >= {o.cls for o in wrong.objects} & scene.classes


@given(scene_and_wrong_answer())
@settings(max_examples=300, deadline=None)
def test_segments_reconstruct_both_texts(case):
    scene, _, answer = case
    c = annotate(answer, scene, image=b"x", question="q")
    segs = c.segments
    assert all(a.original_end <= b.original_start for a, b in zip(segs, segs[1:], strict=False))
    assert _rebuild(c.original, c.corrected, segs, "original") == c.corrected
    assert _rebuild(c.corrected, c.original, segs, "corrected") == c.original
    assert all(s.category in CHANGE_CATEGORIES for s in segs)
    # text outside the segments is untouched: the unchanged stretches are equal on both sides
    o_pos = c_pos = 0
    for s in segs:
        assert c.original[o_pos : s.original_start] == c.corrected[c_pos : s.corrected_start]
        o_pos, c_pos = s.original_end, s.corrected_end


@given(scene_and_wrong_answer())
@settings(max_examples=200, deadline=None)
def test_a_right_answer_is_left_alone(case):
    scene, _, answer = case
    import random

    right = describe(scene, random.Random(len(answer)))
    c = annotate(right, scene, image=b"x", question="q")
    assert c.corrected == right and c.segments == []


def test_categories_on_a_hand_made_answer():
    scene = Scene((SceneObject("ball", "red", 2, "top left"), SceneObject("tree", "green", 1, "center")))
    answer = (
        "The image shows a simple scene on a dark background. In the top right there is a red ball. "
        "A blue house sits in the bottom left. Two green trees sit in the center. I see a star."
    )
    c = annotate(answer, scene, image=b"x", question="q", id="ex1")
    assert c.corrected == (
        "The image shows a simple scene on a dark background. In the top left there are two red balls. "
        "A green tree sits in the center."
    )
    changes = [(s.original_text(answer), s.corrected_text(c.corrected), s.category) for s in c.segments]
    assert changes == [
        ("top right", "top left", "position"),
        ("is", "are", "number"),
        ("a", "two", "number"),
        ("ball", "balls", "number"),
        ("A blue house sits in the bottom left. ", "", "object"),
        ("Two", "A", "number"),
        ("trees", "tree", "number"),
        ("sit", "sits", "number"),
        (" I see a star.", "", "object"),
    ]
    assert c.annotator == ANNOTATOR_NAME and c.id == "ex1" and c.source["scene"] == scene.to_dict()


def test_hallucinated_object_becomes_an_unmentioned_true_one():
    scene = Scene((SceneObject("ball", "red", 1, "top left"), SceneObject("sun", "yellow", 3, "top right")))
    answer = "A red ball is in the top left. A white cloud is in the top right."
    c = annotate(answer, scene, image=b"x", question="q")
    assert c.corrected == "A red ball is in the top left. Three yellow suns are in the top right."
    assert {s.category for s in c.segments} == {"object"}
    assert [claim.cls for claim in claims_of(c.corrected)] == ["ball", "sun"]


def test_a_repeated_object_is_treated_as_an_extra_one():
    scene = Scene((SceneObject("bell", "yellow", 1, "top left"), SceneObject("ring", "red", 2, "center")))
    answer = "A yellow bell is in the top left. A yellow bell is in the top center. A yellow bell is in the top right."
    c = annotate(answer, scene, image=b"x", question="q")
    assert c.corrected == "A yellow bell is in the top left. Two red rings are in the center."
    assert [s.category for s in c.segments] == ["object"] * 6  # N, C, O, BE, P + a deletion
