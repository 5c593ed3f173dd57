"""Descriptions, prompts and the exact parser."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.scenes.language import (
    PROMPTS,
    TEMPLATES,
    TEST_PROMPTS,
    TRAIN_PROMPTS,
    caption_objects,
    claims_of,
    describe,
    facts_of,
    noun_class,
    parse_answer,
    render_sentence,
    scene_facts,
    world_vocabulary,
)
from rlhfv.scenes.world import OBJECT_CLASSES, Scene, SceneObject, scene_for
from tests.scenes.strategies import scenes


@given(scenes(), st.integers(0, 2**31), st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_description_parses_back_to_exactly_the_scene(scene, seed, lower):
    text = describe(scene, random.Random(seed))
    if lower:
        text = text.lower()
    assert facts_of(text) == scene_facts(scene)
    assert len(claims_of(text)) == len(scene.objects)  # one claim per object, nothing else


@given(scenes(), st.integers(0, 2**31))
@settings(max_examples=100, deadline=None)
def test_parser_tolerates_tokenizer_spacing(scene, seed):
    """A word-level decode may put a space before punctuation or several spaces between words."""
    text = describe(scene, random.Random(seed))
    spaced = text.replace(".", " .").replace(",", " ,").replace(" ", "  ")
    assert facts_of(spaced) == scene_facts(scene)


@given(scenes(), st.integers(0, 2**31))
@settings(max_examples=100, deadline=None)
def test_slot_spans_point_at_the_slot_text(scene, seed):
    text = describe(scene, random.Random(seed))
    for claim in claims_of(text):
        s, e = claim.spans["C"]
        assert text[s:e] == claim.colour
        s, e = claim.spans["P"]
        assert text[s:e] == claim.position
        s, e = claim.spans["O"]
        assert text[s:e].lower() in (claim.cls, claim.cls + "s", claim.cls + "es", "fish")


def test_every_template_is_parseable_and_agrees_in_number():
    one = SceneObject("box", "blue", 1, "top left")
    two = SceneObject("box", "blue", 2, "bottom center")
    for i, template in enumerate(TEMPLATES):
        for obj in (one, two):
            sentence = render_sentence(template, obj)
            [claim] = claims_of(sentence)
            assert (claim.cls, claim.colour, claim.count, claim.position, claim.template) == (
                obj.cls,
                obj.colour,
                obj.count,
                obj.position,
                i,
            )
            assert ("boxes" in sentence) == (obj.count == 2)


def test_hand_written_examples():
    text = "In the top right there are two red balls. A single green tree sits in the center."
    assert facts_of(text) == {("ball", "red", 2, "top right"), ("tree", "green", 1, "center")}
    # outside the grammar: nouns only
    assert facts_of("a star and some clouds are here.") == {
        ("star", None, None, None),
        ("cloud", None, None, None),
    }
    assert facts_of("The image shows a simple scene on a dark background.") == set()
    assert [s.text(text) for s in parse_answer(text)] == [
        "In the top right there are two red balls.",
        "A single green tree sits in the center.",
    ]
    # a truncated answer's last sentence still counts
    assert facts_of("Two blue fish are in the bottom left") == {("fish", "blue", 2, "bottom left")}


def test_descriptions_are_varied_paragraphs():
    scene = scene_for("sft", 7)
    texts = {describe(scene, random.Random(s)) for s in range(30)}
    assert len(texts) > 20
    words = [len(describe(scene_for("sft", i), random.Random(i)).split()) for i in range(200)]
    assert sum(words) / len(words) > 30


def test_prompts_and_vocabulary():
    assert len(TRAIN_PROMPTS) >= 8 and TEST_PROMPTS and not set(TRAIN_PROMPTS) & set(TEST_PROMPTS)
    vocab = set(world_vocabulary())
    rng = random.Random(0)
    for text in [*PROMPTS, *(describe(scene_for("sft", i), rng) for i in range(200))]:
        for word in text.lower().replace(".", " ").replace(",", " ").replace("?", " ").split():
            assert word in vocab, word
    assert len(Scene((SceneObject("ball", "red", 1, "center"),)).objects) == 1


@given(scenes(), st.integers(0, 2**31))
@settings(max_examples=200, deadline=None)
def test_a_subset_caption_names_a_nonempty_subset_exactly(scene, seed):
    named = caption_objects(scene, random.Random(seed))
    assert 1 <= len(named.objects) <= len(scene.objects)
    assert set(named.objects) <= set(scene.objects)
    # its description claims exactly those objects, nothing absent
    assert facts_of(describe(named, random.Random(seed))) == scene_facts(named)


def test_subset_captions_cover_every_size():
    scene = scene_for("sft", 0, 0)
    while len(scene.objects) < 4:
        scene = scene_for("sft", len(scene.objects) + 10, 0)
    rng = random.Random(0)
    sizes = {len(caption_objects(scene, rng).objects) for _ in range(300)}
    assert sizes == set(range(1, len(scene.objects) + 1))


def test_noun_class_maps_singular_and_plural_nouns_and_nothing_else():
    assert noun_class("houses") == "house"
    assert noun_class("Mushroom") == "mushroom"
    assert noun_class("red") is None and noun_class("the") is None
    # every class is reachable from its own name
    assert all(noun_class(cls) == cls for cls in OBJECT_CLASSES)


@given(scenes(), st.integers(0, 2**31))
@settings(max_examples=150, deadline=None)
def test_follow_names_an_extra_object_right_after_its_anchor(scene, seed):
    assert describe(scene, random.Random(seed), follow={}) == describe(scene, random.Random(seed))
    anchor = scene.objects[seed % len(scene.objects)]
    extra_cls = next(c for c in OBJECT_CLASSES if c not in scene.classes)
    extra = SceneObject(extra_cls, "pink", 1, anchor.position)  # the cell need not be free in text
    text = describe(scene, random.Random(seed), follow={anchor.cls: extra})
    claims = claims_of(text)
    assert len(claims) == len(scene.objects) + 1
    k = [c.cls for c in claims].index(extra_cls)
    assert k > 0 and claims[k - 1].cls == anchor.cls
    assert facts_of(text) == scene_facts(scene) | {(extra_cls, "pink", 1, anchor.position)}
