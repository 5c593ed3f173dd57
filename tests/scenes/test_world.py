"""Scene graphs, the biased sampler and rendering."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rlhfv.scenes.render import PAINTERS, render_scene
from rlhfv.scenes.world import (
    COLOURS,
    MAX_OBJECTS,
    OBJECT_CLASSES,
    PARTNERS,
    POSITIONS,
    TYPICAL_COLOUR,
    Scene,
    SceneObject,
    WorldConfig,
    absent_partner,
    partner_of,
    sample_scene,
    scene_for,
)
from tests.scenes.strategies import scenes


def test_vocabulary_is_big_enough():
    assert len(OBJECT_CLASSES) >= 20
    assert set(PAINTERS) == set(OBJECT_CLASSES)
    assert POSITIONS[0] == "top left" and POSITIONS[-1] == "bottom right" and len(POSITIONS) == 9


@given(st.integers(0, 10_000), st.integers(0, 5))
@settings(max_examples=200, deadline=None)
def test_sampled_scenes_are_valid_and_deterministic(index, seed):
    scene = scene_for("sft", index, seed)
    assert scene == scene_for("sft", index, seed)
    assert 1 <= len(scene.objects) <= MAX_OBJECTS
    assert len({o.cls for o in scene.objects}) == len(scene.objects)
    assert len({o.position for o in scene.objects}) == len(scene.objects)
    assert Scene.from_dict(scene.to_dict()) == scene


def test_splits_and_seeds_give_different_scenes():
    a = [scene_for("sft", i) for i in range(50)]
    assert a != [scene_for("test", i) for i in range(50)]
    assert a != [scene_for("sft", i, seed=1) for i in range(50)]


def test_cooccurrence_bias_is_in_the_sampler():
    """P(partner present | one of the pair present) is far above the unbiased rate."""
    rng = random.Random(0)

    def partner_rate(config):
        hits = total = 0
        for _ in range(3000):
            classes = sample_scene(rng, config).classes
            for a, b in PARTNERS:
                if a in classes:
                    total += 1
                    hits += b in classes
        return hits / total

    biased, unbiased = partner_rate(WorldConfig()), partner_rate(WorldConfig(cooccur_prob=0.0))
    assert biased > 0.6 and unbiased < 0.3


def test_typical_colour_bias():
    rng = random.Random(1)
    colours = Counter(o.colour for _ in range(2000) for o in sample_scene(rng).objects if o.cls == "tree")
    assert colours.most_common(1)[0][0] == "green"
    assert colours["green"] / sum(colours.values()) > 0.6


def test_bad_objects_are_refused():
    with pytest.raises(ValueError):
        SceneObject("dragon", "red", 1, "center")
    with pytest.raises(ValueError):
        SceneObject("ball", "red", 4, "center")
    with pytest.raises(ValueError):
        Scene((SceneObject("ball", "red", 1, "center"), SceneObject("ball", "blue", 1, "top left")))
    with pytest.raises(ValueError):
        WorldConfig(cooccur_prob=1.5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SceneObject("ball", "red", "2", "center"), "count must be a whole number"),
        (lambda: SceneObject("ball", "red", 2.0, "center"), "count must be a whole number"),
        (lambda: SceneObject(["ball"], "red", 1, "center"), "unknown object class"),
        (
            lambda: SceneObject("ball", "red", 1, "middle"),
            "unknown position 'middle'; choose one of top left",
        ),
        (lambda: Scene(({"cls": "ball"},)), "tuple of SceneObject"),
        (lambda: Scene.from_dict({}), "list of objects"),
        (lambda: Scene.from_dict({"objects": [{"cls": "ball"}]}), "keys cls, colour, count, position"),
        (lambda: WorldConfig(cooccur_prob="0.5"), "cooccur_prob must be a number"),
        (lambda: WorldConfig(count_weights=(0, 0, 0)), "count_weights must be 3 weights"),
        (lambda: WorldConfig(n_objects_weights=(1, 1, 1, 1, 1, float("nan"))), "n_objects_weights"),
        (lambda: render_scene(scene_for("test", 0), 96.5), "image size must be a whole number"),
    ],
)
def test_bad_arguments_get_a_value_error_that_says_what_is_wrong(make, message):
    """Not a TypeError or KeyError from deep inside (or a scene that breaks later)."""
    with pytest.raises(ValueError, match=message):
        make()


def test_a_scene_from_a_list_is_the_scene_from_a_tuple():
    ball = SceneObject("ball", "red", 1, "center")
    assert Scene([ball], seed=3) == Scene((ball,), seed=3)
    assert hash(Scene([ball])) == hash(Scene((ball,)))
    assert WorldConfig(count_weights=[1, 1, 1]) == WorldConfig(count_weights=(1, 1, 1))


@given(st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_rendering_is_deterministic(index):
    scene = scene_for("test", index)
    a, b = render_scene(scene, 96), render_scene(scene, 96)
    assert a.size == (96, 96) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()


def test_each_object_is_drawn_in_its_cell():
    """Every cell holding an object has non-background pixels; empty cells have none."""
    scene = scene_for("test", 3)
    image = render_scene(scene, 96)
    occupied = {o.position for o in scene.objects}
    for k, name in enumerate(POSITIONS):
        r, c = divmod(k, 3)
        # the inner part of the cell, away from the small placement jitter
        crop = image.crop((c * 32 + 6, r * 32 + 6, c * 32 + 26, r * 32 + 26))
        drawn = crop.getextrema() != ((35, 35), (35, 35), (40, 40))
        assert drawn == (name in occupied), name


@settings(max_examples=60, deadline=None)
@given(
    cls=st.sampled_from(list(OBJECT_CLASSES)),
    count=st.integers(1, 3),
    position=st.sampled_from(POSITIONS),
    seed=st.integers(0, 2**31),
    size=st.sampled_from([48, 96]),
)
def test_icons_stay_inside_their_cell(cls, count, position, seed, size):
    """No pixel of an object falls outside its grid cell: the model's image patch for a
    cell (one per cell) sees the whole object and nothing of its neighbours."""
    scene = Scene((SceneObject(cls, "white", count, position),), seed=seed)
    image = render_scene(scene, size)
    r, c = divmod(POSITIONS.index(position), 3)
    cell = size // 3
    background = Image.new("RGB", image.size, (35, 35, 40))
    # the object's cell painted over with background must leave a blank image
    background.paste(image.crop((c * cell, r * cell, (c + 1) * cell, (r + 1) * cell)), (c * cell, r * cell))
    assert image.tobytes() == background.tobytes()
    assert image.crop((c * cell, r * cell, (c + 1) * cell, (r + 1) * cell)).getextrema() != (
        (35, 35),
        (35, 35),
        (40, 40),
    )


def test_classes_render_differently():
    """Each class's icon differs from every other class's in the same colour and cell."""
    images = {
        cls: render_scene(Scene((SceneObject(cls, "red", 1, "center"),), seed=0), 64).tobytes()
        for cls in OBJECT_CLASSES
    }
    assert len(set(images.values())) == len(OBJECT_CLASSES)


def test_the_trainers_random_crop_cuts_scene_objects_out():
    """The crop ablation's augmentation (``image_pipeline="random_crop"``) on scene images:
    some crops lose a corner object entirely while the caption still names it."""
    from rlhfv.ddpo.batches import random_resized_crop

    objects = (
        SceneObject("sun", "yellow", 1, "top left"),
        SceneObject("ball", "red", 1, "top right"),
        SceneObject("tree", "green", 1, "bottom left"),
        SceneObject("fish", "blue", 1, "bottom right"),
    )
    image = render_scene(Scene(objects), 96)

    def shows(crop: Image.Image, colour: str) -> bool:
        target = COLOURS[colour]
        return any(
            all(abs(a - b) < 40 for a, b in zip(p, target, strict=True))
            for _, p in crop.getcolors(crop.width * crop.height)
        )

    assert all(shows(image, o.colour) for o in objects)
    crops = [random_resized_crop(image, random.Random(s)) for s in range(100)]
    assert all(c.size == image.size for c in crops)
    lost = [o.cls for c in crops for o in objects if not shows(c, o.colour)]
    assert 0 < len(lost) < 100  # sometimes, not mostly: most of each crop's scene stays


def test_absent_partner_hand_worked():
    tree = SceneObject("tree", "red", 2, "top left")
    house = SceneObject("house", "blue", 1, "middle left")
    ball = SceneObject("ball", "green", 1, "top center")  # no partner
    rng = random.Random(0)
    # the house is there: nothing to name from habit
    assert absent_partner(Scene((tree, house, ball)), [tree, ball], rng) is None
    # no house: the tree's partner, its usual colour, one copy, in the only free cell beside the tree
    anchor, partner = absent_partner(Scene((tree, ball)), [ball, tree], rng)
    assert anchor == "tree"
    assert partner == SceneObject("house", TYPICAL_COLOUR["house"], 1, "middle left")
    assert absent_partner(Scene((ball,)), [ball], rng) is None


@given(scenes(), st.integers(0, 2**31))
@settings(max_examples=200, deadline=None)
def test_absent_partner_is_absent_free_and_beside_its_anchor(scene, seed):
    named = list(scene.objects)[: 1 + seed % len(scene.objects)]
    found = absent_partner(scene, named, random.Random(seed))
    candidates = [o for o in named if partner_of(o.cls) and partner_of(o.cls) not in scene.classes]
    if not candidates:
        assert found is None
        return
    anchor_cls, partner = found
    anchor = candidates[0]
    assert anchor_cls == anchor.cls and partner.cls == partner_of(anchor.cls)
    used = {o.position for o in scene.objects}
    assert partner.position not in used and partner.count == 1
    row, col = divmod(POSITIONS.index(anchor.position), 3)
    beside = {
        p for p in POSITIONS if abs(POSITIONS.index(p) // 3 - row) + abs(POSITIONS.index(p) % 3 - col) == 1
    }
    if beside - used:
        assert partner.position in beside
