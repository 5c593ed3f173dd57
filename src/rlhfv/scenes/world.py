"""The scene world's ground truth: scene graphs and the biased sampler that makes them.

A scene holds 1-6 objects. Each object has a class (one of ``OBJECT_CLASSES``), a colour,
a count (1-3 copies drawn together) and a cell of a 3x3 grid (``POSITIONS``, "top left"
.. "bottom right"); a scene holds at most one object per class and per cell, so "the red
ball" names one thing.

The sampler has the regularities that make real models hallucinate when they learn the
statistics of the text instead of looking at the image:

- co-occurrence: classes come in partner pairs (tree/house, sun/cloud, ...); when one is
  drawn, its partner joins with probability ``cooccur_prob``;
- typical colours: each class has a usual colour, used with probability ``colour_bias``;
- typical places: some classes prefer a row (the sun in the sky, the fish at the bottom),
  used with probability ``row_bias``;
- counts: mostly one, sometimes two or three.

Everything is seeded: ``scene_for(split, index, seed)`` is the same scene on any machine.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

# Each class is drawn as its own icon (rlhfv.scenes.render); singular -> plural noun.
OBJECT_CLASSES: dict[str, str] = {
    "ball": "balls",
    "box": "boxes",
    "star": "stars",
    "heart": "hearts",
    "moon": "moons",
    "tree": "trees",
    "house": "houses",
    "car": "cars",
    "fish": "fish",
    "cup": "cups",
    "flower": "flowers",
    "kite": "kites",
    "cloud": "clouds",
    "sun": "suns",
    "key": "keys",
    "umbrella": "umbrellas",
    "bell": "bells",
    "arrow": "arrows",
    "cross": "crosses",
    "ring": "rings",
    "boat": "boats",
    "mushroom": "mushrooms",
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "pink": (250, 130, 190),
    "white": (240, 240, 240),
}
# row-major cells of the 3x3 grid
POSITIONS: tuple[str, ...] = (
    "top left",
    "top center",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom center",
    "bottom right",
)
MAX_COUNT = 3
MAX_OBJECTS = 6

# Partner pairs: objects that usually appear together (the co-occurrence bias).
PARTNERS: tuple[tuple[str, str], ...] = (
    ("tree", "house"),
    ("sun", "cloud"),
    ("boat", "fish"),
    ("car", "key"),
    ("flower", "heart"),
    ("umbrella", "bell"),
    ("cup", "star"),
)
TYPICAL_COLOUR: dict[str, str] = {
    "ball": "red",
    "box": "blue",
    "star": "yellow",
    "heart": "pink",
    "moon": "white",
    "tree": "green",
    "house": "red",
    "car": "blue",
    "fish": "blue",
    "cup": "white",
    "flower": "pink",
    "kite": "purple",
    "cloud": "white",
    "sun": "yellow",
    "key": "yellow",
    "umbrella": "purple",
    "bell": "yellow",
    "arrow": "green",
    "cross": "red",
    "ring": "yellow",
    "boat": "white",
    "mushroom": "red",
}
TYPICAL_ROW: dict[str, int] = {
    "sun": 0,
    "cloud": 0,
    "moon": 0,
    "kite": 0,
    "fish": 2,
    "boat": 2,
    "mushroom": 2,
}


def is_whole(value: object) -> bool:
    """Whether ``value`` is an int (not a bool, which is one in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def cell_of(position: str) -> tuple[int, int]:
    """``(row, column)`` of a grid position ("top left" .. "bottom right"), each 0..2."""
    return divmod(POSITIONS.index(position), 3)


@dataclass(frozen=True, order=True)
class SceneObject:
    """One object of a scene: ``count`` copies of ``cls`` in ``colour`` in one grid cell."""

    cls: str
    colour: str
    count: int
    position: str

    def __post_init__(self) -> None:
        for name, known in (("cls", OBJECT_CLASSES), ("colour", COLOURS), ("position", POSITIONS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in known:
                what = {"cls": "object class"}.get(name, name)
                raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(known)}")
        if not is_whole(self.count) or not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count must be a whole number 1..{MAX_COUNT}, got {self.count!r}")

    @property
    def cell(self) -> tuple[int, int]:
        """``(row, column)`` of the object's grid cell, each 0..2."""
        return cell_of(self.position)


@dataclass(frozen=True)
class Scene:
    """A scene graph: the ground truth an image is rendered from and answers are checked against."""

    objects: tuple[SceneObject, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.objects, list):  # a tuple, so that scenes compare and hash as values
            object.__setattr__(self, "objects", tuple(self.objects))
        if not isinstance(self.objects, tuple) or not all(isinstance(o, SceneObject) for o in self.objects):
            raise ValueError(f"a scene's objects are a tuple of SceneObject, got {self.objects!r}")
        if not is_whole(self.seed):
            raise ValueError(f"seed must be a whole number, got {self.seed!r}")
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1..{MAX_OBJECTS} objects, got {len(self.objects)}")
        classes = [o.cls for o in self.objects]
        cells = [o.position for o in self.objects]
        if len(set(classes)) != len(classes) or len(set(cells)) != len(cells):
            raise ValueError("a scene holds at most one object per class and per cell")

    @property
    def classes(self) -> set[str]:
        return {o.cls for o in self.objects}

    def get(self, cls: str) -> SceneObject | None:
        """The scene's object of class ``cls``, or None."""
        return next((o for o in self.objects if o.cls == cls), None)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        """The scene :meth:`to_dict` gave (a ``ValueError`` saying what is wrong otherwise)."""
        keys = {f.name for f in fields(SceneObject)}
        if not isinstance(d, dict) or not isinstance(d.get("objects"), list):
            raise ValueError(f"a scene dict has a list of objects, got {d!r}")
        for o in d["objects"]:
            if not isinstance(o, dict) or set(o) != keys:
                raise ValueError(f"a scene object dict has the keys {', '.join(sorted(keys))}, got {o!r}")
        return cls(tuple(SceneObject(**o) for o in d["objects"]), seed=d.get("seed", 0))


@dataclass(frozen=True)
class WorldConfig:
    """The sampler's biases (see the module docstring); defaults are the demo's world."""

    cooccur_prob: float = field(default=0.85, metadata={"help": "P(partner joins | one of a pair drawn)"})
    colour_bias: float = field(default=0.7, metadata={"help": "P(an object has its class's usual colour)"})
    row_bias: float = field(default=0.75, metadata={"help": "P(a class with a usual row sits in it)"})
    count_weights: tuple[float, ...] = (0.6, 0.25, 0.15)
    n_objects_weights: tuple[float, ...] = (0.1, 0.2, 0.25, 0.2, 0.15, 0.1)

    def __post_init__(self) -> None:
        for name in ("cooccur_prob", "colour_bias", "row_bias"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        for name, size in (("count_weights", MAX_COUNT), ("n_objects_weights", MAX_OBJECTS)):
            weights = getattr(self, name)
            ok = isinstance(weights, tuple | list) and len(weights) == size
            if not ok or not all(_is_number(w) and w >= 0 for w in weights) or not sum(weights) > 0:
                raise ValueError(f"{name} must be {size} weights >= 0, not all 0, got {weights!r}")
            object.__setattr__(self, name, tuple(weights))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_PARTNER_OF: dict[str, str] = {a: b for a, b in PARTNERS} | {b: a for a, b in PARTNERS}


def partner_of(cls: str) -> str | None:
    """The class that usually appears with ``cls`` (the co-occurrence bias), or None."""
    return _PARTNER_OF.get(cls)


def absent_partner(
    scene: Scene, named: Sequence[SceneObject], rng: random.Random
) -> tuple[str, SceneObject] | None:
    """The first of ``named`` whose usual partner is absent from ``scene``, with that partner as a
    caption naming it from habit would: ``(anchor class, partner object)`` with the partner's usual
    colour, one copy, in a free cell beside the anchor (any free cell if none). None if no such anchor.
    """
    present = scene.classes
    used = {o.position for o in scene.objects}
    free = [p for p in POSITIONS if p not in used]  # never empty: MAX_OBJECTS < 9 cells
    for anchor in named:
        partner = _PARTNER_OF.get(anchor.cls)
        if partner is None or partner in present:
            continue
        row, col = anchor.cell
        beside = [p for p in free if abs(cell_of(p)[0] - row) + abs(cell_of(p)[1] - col) == 1]
        return anchor.cls, SceneObject(partner, TYPICAL_COLOUR[partner], 1, rng.choice(beside or free))
    return None


def sample_scene(rng: random.Random, config: WorldConfig = WorldConfig(), seed: int = 0) -> Scene:
    """Draw one scene graph with the world's co-occurrence, colour, row and count biases."""
    n = rng.choices(range(1, MAX_OBJECTS + 1), weights=config.n_objects_weights)[0]
    classes: list[str] = []
    while len(classes) < n:
        cls = rng.choice([c for c in OBJECT_CLASSES if c not in classes])
        classes.append(cls)
        partner = _PARTNER_OF.get(cls)
        if partner and partner not in classes and len(classes) < n and rng.random() < config.cooccur_prob:
            classes.append(partner)
    free = list(POSITIONS)
    objects = []
    for cls in classes:
        row = TYPICAL_ROW.get(cls)
        in_row = [p for p in free if POSITIONS.index(p) // 3 == row] if row is not None else []
        position = rng.choice(in_row) if in_row and rng.random() < config.row_bias else rng.choice(free)
        free.remove(position)
        colour = TYPICAL_COLOUR[cls] if rng.random() < config.colour_bias else rng.choice(list(COLOURS))
        count = rng.choices(range(1, MAX_COUNT + 1), weights=config.count_weights)[0]
        objects.append(SceneObject(cls, colour, count, position))
    return Scene(tuple(objects), seed=seed)


def split_seed(split: str, index: int, seed: int = 0) -> int:
    """A stable 63-bit seed for item ``index`` of ``split`` (independent of Python's hash salt)."""
    digest = hashlib.sha256(f"{split}/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def scene_for(split: str, index: int, seed: int = 0, config: WorldConfig = WorldConfig()) -> Scene:
    """Scene ``index`` of ``split`` ("sft", "feedback", "test", ...): deterministic per seed."""
    s = split_seed(split, index, seed)
    return sample_scene(random.Random(s), config, seed=s)
