"""Hypothesis strategies for scene-world tests: scenes and wrong answers about them."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from rlhfv.scenes.language import describe
from rlhfv.scenes.world import COLOURS, MAX_COUNT, OBJECT_CLASSES, POSITIONS, Scene, SceneObject


@st.composite
def scenes(draw) -> Scene:
    n = draw(st.integers(1, 6))
    classes = draw(st.lists(st.sampled_from(list(OBJECT_CLASSES)), min_size=n, max_size=n, unique=True))
    cells = draw(st.lists(st.sampled_from(POSITIONS), min_size=n, max_size=n, unique=True))
    objects = tuple(
        SceneObject(c, draw(st.sampled_from(list(COLOURS))), draw(st.integers(1, MAX_COUNT)), p)
        for c, p in zip(classes, cells, strict=True)
    )
    return Scene(objects, seed=draw(st.integers(0, 2**31)))


@st.composite
def wrong_scenes(draw, scene: Scene) -> Scene:
    """``scene`` with some objects' colour, count, position or class changed (a model's mistakes)."""
    objects = list(scene.objects)
    for i, o in enumerate(objects):
        kind = draw(st.sampled_from(["keep", "keep", "colour", "count", "position", "class"]))
        if kind == "colour":
            o = SceneObject(o.cls, draw(st.sampled_from(list(COLOURS))), o.count, o.position)
        elif kind == "count":
            o = SceneObject(o.cls, o.colour, draw(st.integers(1, MAX_COUNT)), o.position)
        elif kind == "position":
            free = [p for p in POSITIONS if p not in {x.position for x in objects}] or [o.position]
            o = SceneObject(o.cls, o.colour, o.count, draw(st.sampled_from(free)))
        elif kind == "class":
            free = [c for c in OBJECT_CLASSES if c not in {x.cls for x in objects}]
            o = SceneObject(draw(st.sampled_from(free)), o.colour, o.count, o.position)
        objects[i] = o
    return Scene(tuple(objects), seed=scene.seed)


@st.composite
def scene_and_wrong_answer(draw):
    scene = draw(scenes())
    wrong = draw(wrong_scenes(scene))
    rng = random.Random(draw(st.integers(0, 2**31)))
    answer = describe(wrong, rng)
    if draw(st.booleans()):  # as a word-level tokenizer decodes it
        answer = answer.lower()
    return scene, wrong, answer
