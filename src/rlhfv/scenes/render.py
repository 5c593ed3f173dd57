"""Pillow rendering of scene graphs: one distinct icon per object class on a 3x3 grid.

Each object is drawn ``count`` times inside its grid cell, in its colour, on a dark
background. Rendering is deterministic: the same scene gives the same pixels (a small
per-scene jitter of icon placement comes from the scene's seed).

The paper's *untrustworthy augmentation* (random crops that cut objects out while the
text still names them) is the trainer's ``image_pipeline="random_crop"``
(:func:`rlhfv.ddpo.batches.random_resized_crop`), not a second crop here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw

from rlhfv.scenes.world import COLOURS, OBJECT_CLASSES, Scene, is_whole

BACKGROUND = (35, 35, 40)
DARK = (20, 20, 20)
DEFAULT_SIZE = 96

Box = tuple[float, float, float]  # left, top, side
Painter = Callable[[ImageDraw.ImageDraw, Box, tuple[int, int, int]], None]


def _pts(box: Box, rel: list[tuple[float, float]]) -> list[tuple[float, float]]:
    x, y, s = box
    return [(x + u * s, y + v * s) for u, v in rel]


def _ball(d, b, c):
    d.ellipse(_rect(b, 0.1, 0.1, 0.9, 0.9), fill=c)


def _box(d, b, c):
    d.rectangle(_rect(b, 0.12, 0.12, 0.88, 0.88), fill=c)


def _star(d, b, c):
    pts = []
    for k in range(10):
        r = 0.48 if k % 2 == 0 else 0.2
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((0.5 + r * math.cos(a), 0.52 + r * math.sin(a)))
    d.polygon(_pts(b, pts), fill=c)


def _heart(d, b, c):
    d.ellipse(_rect(b, 0.08, 0.15, 0.52, 0.55), fill=c)
    d.ellipse(_rect(b, 0.48, 0.15, 0.92, 0.55), fill=c)
    d.polygon(_pts(b, [(0.1, 0.42), (0.9, 0.42), (0.5, 0.92)]), fill=c)


def _moon(d, b, c):
    d.ellipse(_rect(b, 0.1, 0.1, 0.9, 0.9), fill=c)
    d.ellipse(_rect(b, 0.35, 0.0, 1.0, 0.75), fill=BACKGROUND)


def _tree(d, b, c):
    d.rectangle(_rect(b, 0.42, 0.65, 0.58, 0.95), fill=(120, 80, 40))
    d.polygon(_pts(b, [(0.5, 0.05), (0.1, 0.7), (0.9, 0.7)]), fill=c)


def _house(d, b, c):
    d.rectangle(_rect(b, 0.18, 0.45, 0.82, 0.92), fill=c)
    d.polygon(_pts(b, [(0.5, 0.08), (0.05, 0.48), (0.95, 0.48)]), fill=c)
    d.rectangle(_rect(b, 0.42, 0.65, 0.58, 0.92), fill=DARK)


def _car(d, b, c):
    d.rectangle(_rect(b, 0.05, 0.45, 0.95, 0.72), fill=c)
    d.rectangle(_rect(b, 0.25, 0.25, 0.72, 0.47), fill=c)
    d.ellipse(_rect(b, 0.15, 0.62, 0.35, 0.82), fill=DARK)
    d.ellipse(_rect(b, 0.65, 0.62, 0.85, 0.82), fill=DARK)


def _fish(d, b, c):
    d.ellipse(_rect(b, 0.05, 0.3, 0.7, 0.7), fill=c)
    d.polygon(_pts(b, [(0.62, 0.5), (0.95, 0.25), (0.95, 0.75)]), fill=c)
    d.ellipse(_rect(b, 0.17, 0.42, 0.27, 0.52), fill=DARK)


def _cup(d, b, c):
    d.rectangle(_rect(b, 0.15, 0.2, 0.65, 0.9), fill=c)
    d.ellipse(_rect(b, 0.55, 0.35, 0.9, 0.7), outline=c, width=max(1, int(b[2] * 0.1)))


def _flower(d, b, c):
    for k in range(5):
        a = k * 2 * math.pi / 5
        u, v = 0.5 + 0.27 * math.cos(a), 0.5 + 0.27 * math.sin(a)
        d.ellipse(_rect(b, u - 0.18, v - 0.18, u + 0.18, v + 0.18), fill=c)
    d.ellipse(_rect(b, 0.38, 0.38, 0.62, 0.62), fill=(240, 200, 40) if c != COLOURS["yellow"] else DARK)


def _kite(d, b, c):
    d.polygon(_pts(b, [(0.5, 0.02), (0.85, 0.4), (0.5, 0.98), (0.15, 0.4)]), fill=c)


def _cloud(d, b, c):
    d.ellipse(_rect(b, 0.05, 0.4, 0.45, 0.8), fill=c)
    d.ellipse(_rect(b, 0.25, 0.2, 0.75, 0.7), fill=c)
    d.ellipse(_rect(b, 0.55, 0.4, 0.95, 0.8), fill=c)
    d.rectangle(_rect(b, 0.25, 0.55, 0.75, 0.8), fill=c)


def _sun(d, b, c):
    w = max(1, int(b[2] * 0.08))
    for k in range(8):
        a = k * math.pi / 4
        d.line(_pts(b, [(0.5, 0.5), (0.5 + 0.48 * math.cos(a), 0.5 + 0.48 * math.sin(a))]), fill=c, width=w)
    d.ellipse(_rect(b, 0.25, 0.25, 0.75, 0.75), fill=c)


def _key(d, b, c):
    w = max(1, int(b[2] * 0.1))
    d.ellipse(_rect(b, 0.05, 0.3, 0.42, 0.67), outline=c, width=w)
    d.line(_pts(b, [(0.4, 0.5), (0.95, 0.5)]), fill=c, width=w)
    d.line(_pts(b, [(0.8, 0.5), (0.8, 0.72)]), fill=c, width=w)
    d.line(_pts(b, [(0.65, 0.5), (0.65, 0.68)]), fill=c, width=w)


def _umbrella(d, b, c):
    d.pieslice(_rect(b, 0.05, 0.1, 0.95, 0.9), 180, 360, fill=c)
    w = max(1, int(b[2] * 0.08))
    d.line(_pts(b, [(0.5, 0.5), (0.5, 0.9)]), fill=c, width=w)
    d.line(_pts(b, [(0.5, 0.9), (0.35, 0.9)]), fill=c, width=w)


def _bell(d, b, c):
    d.polygon(_pts(b, [(0.35, 0.15), (0.65, 0.15), (0.88, 0.8), (0.12, 0.8)]), fill=c)
    d.ellipse(_rect(b, 0.4, 0.75, 0.6, 0.95), fill=c)


def _arrow(d, b, c):
    d.polygon(
        _pts(
            b, [(0.05, 0.4), (0.55, 0.4), (0.55, 0.15), (0.95, 0.5), (0.55, 0.85), (0.55, 0.6), (0.05, 0.6)]
        ),
        fill=c,
    )


def _cross(d, b, c):
    d.rectangle(_rect(b, 0.38, 0.05, 0.62, 0.95), fill=c)
    d.rectangle(_rect(b, 0.05, 0.38, 0.95, 0.62), fill=c)


def _ring(d, b, c):
    d.ellipse(_rect(b, 0.1, 0.1, 0.9, 0.9), outline=c, width=max(1, int(b[2] * 0.16)))


def _boat(d, b, c):
    d.polygon(_pts(b, [(0.05, 0.65), (0.95, 0.65), (0.78, 0.9), (0.22, 0.9)]), fill=c)
    d.polygon(_pts(b, [(0.5, 0.05), (0.5, 0.6), (0.85, 0.6)]), fill=c)


def _mushroom(d, b, c):
    d.pieslice(_rect(b, 0.05, 0.1, 0.95, 0.9), 180, 360, fill=c)
    d.rectangle(_rect(b, 0.38, 0.5, 0.62, 0.92), fill=(225, 210, 180))


def _rect(box: Box, u0: float, v0: float, u1: float, v1: float) -> list[float]:
    x, y, s = box
    return [x + u0 * s, y + v0 * s, x + u1 * s, y + v1 * s]


PAINTERS: dict[str, Painter] = {
    "ball": _ball,
    "box": _box,
    "star": _star,
    "heart": _heart,
    "moon": _moon,
    "tree": _tree,
    "house": _house,
    "car": _car,
    "fish": _fish,
    "cup": _cup,
    "flower": _flower,
    "kite": _kite,
    "cloud": _cloud,
    "sun": _sun,
    "key": _key,
    "umbrella": _umbrella,
    "bell": _bell,
    "arrow": _arrow,
    "cross": _cross,
    "ring": _ring,
    "boat": _boat,
    "mushroom": _mushroom,
}
assert set(PAINTERS) == set(OBJECT_CLASSES)

# icon boxes for 1, 2, 3 copies, relative to a cell: (left, top, side)
_LAYOUTS: dict[int, list[tuple[float, float, float]]] = {
    1: [(0.1, 0.1, 0.8)],
    2: [(0.03, 0.28, 0.44), (0.53, 0.28, 0.44)],
    3: [(0.28, 0.03, 0.44), (0.03, 0.53, 0.44), (0.53, 0.53, 0.44)],
}


def render_scene(scene: Scene, size: int = DEFAULT_SIZE) -> Image.Image:
    """The scene as a ``size`` x ``size`` RGB image (64..128 pixels recommended)."""
    if not is_whole(size) or not 24 <= size <= 1024:
        raise ValueError(f"image size must be a whole number in 24..1024, got {size!r}")
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = size / 3
    jitter = random.Random(scene.seed)
    for obj in scene.objects:
        row, col = obj.cell
        dx, dy = (jitter.uniform(-0.04, 0.04) * cell for _ in range(2))
        for u, v, s in _LAYOUTS[obj.count]:
            box = (col * cell + u * cell + dx, row * cell + v * cell + dy, s * cell)
            PAINTERS[obj.cls](draw, box, COLOURS[obj.colour])
    return image
