"""Builds ``src/rlhfv/data/example/corrections.jsonl``, the example shipped with the package.

Eight small drawn scenes (PIL), each with a question, a plausible hallucinating answer
and its fine-grained correction; segments carry the RLHF-V change categories. Images are
embedded as base64 PNG so the example is one self-contained file.

    .venv/bin/python -m tests.data.example_builder   # rewrite the example
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from rlhfv.data.diff import changed_segments
from rlhfv.data.io import write_jsonl
from rlhfv.data.schema import ChangedSegment, Correction

EXAMPLE = Path(__file__).parents[2] / "src" / "rlhfv" / "data" / "example" / "corrections.jsonl"
W, H = 96, 64


def _canvas(sky="lightblue", ground="green"):
    im = Image.new("RGB", (W, H), sky)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 44, W, H], fill=ground)
    return im, d


def _ball_and_box(d):
    d.ellipse([8, 28, 26, 46], fill="red")
    d.rectangle([62, 26, 84, 46], fill="blue")


def _house_and_tree(d):
    d.rectangle([14, 26, 42, 46], fill="white", outline="black")
    d.polygon([(10, 26), (28, 12), (46, 26)], fill="red")
    d.rectangle([72, 30, 76, 46], fill="brown")
    d.ellipse([62, 10, 86, 34], fill="darkgreen")


def _car(d):
    d.rectangle([0, 44, W, H], fill="gray")
    d.rectangle([24, 30, 72, 44], fill="yellow")
    d.ellipse([28, 40, 38, 50], fill="black")
    d.ellipse([58, 40, 68, 50], fill="black")


def _apples(d):
    d.rectangle([0, 40, W, H], fill="saddlebrown")  # a table
    for x in (10, 30, 50):
        d.ellipse([x, 26, x + 14, 40], fill="red")
    d.rectangle([72, 24, 84, 40], fill="white", outline="black")  # a cup


def _kite(d):
    d.rectangle([44, 30, 48, 46], fill="brown")
    d.ellipse([34, 18, 58, 36], fill="darkgreen")
    d.polygon([(46, 2), (54, 9), (46, 16), (38, 9)], fill="orange")
    d.line([(46, 16), (40, 26)], fill="black")


def _clock(d):
    d.ellipse([34, 10, 62, 38], fill="white", outline="black", width=2)
    d.line([(48, 24), (48, 14)], fill="black", width=2)
    d.line([(48, 24), (56, 24)], fill="black", width=2)


def _birds(d):
    for x, y in ((30, 14), (56, 20)):
        d.line([(x - 6, y - 4), (x, y), (x + 6, y - 4)], fill="black", width=2)


def _bus(d):
    d.rectangle([0, 44, W, H], fill="gray")
    d.rectangle([10, 16, 86, 44], fill="gold")
    for x in range(16, 80, 14):
        d.rectangle([x, 20, x + 9, 28], fill="lightblue")
    d.ellipse([18, 40, 30, 52], fill="black")
    d.ellipse([66, 40, 78, 52], fill="black")


# (draw, sky, ground, question, original answer, corrected answer, categories of the segments in order)
SCENES = [
    (
        _ball_and_box,
        "lightblue",
        "green",
        "What is in the picture?",
        "There are two red balls on the left and a green box on the right.",
        "There is one red ball on the left and a blue box on the right.",
        ["number", "number", "attribute"],
    ),
    (
        _house_and_tree,
        "lightblue",
        "green",
        "Describe the image in detail.",
        "A small house with a blue roof stands next to a tall tree. A dog is sitting in front of the door.",
        "A small house with a red roof stands next to a tall tree.",
        ["attribute", "object"],
    ),
    (
        _car,
        "lightblue",
        "green",
        "What color is the car, and where is it?",
        "The car is red and it is parked on the grass.",
        "The car is yellow and it is parked on the road.",
        ["attribute", "position"],
    ),
    (
        _apples,
        "white",
        "green",
        "How many apples are there?",
        "There are four apples on the table, next to a bottle.",
        "There are three apples on the table, next to a cup.",
        ["number", "object"],
    ),
    (
        _kite,
        "lightblue",
        "green",
        "Where is the kite?",
        "The kite is lying on the grass below the tree.",
        "The kite is flying in the sky above the tree.",
        ["action", "position"],
    ),
    (
        _clock,
        "beige",
        "beige",
        "What is on the wall?",
        "A round clock and a small window are on the wall.",
        "A round clock is on the wall.",
        ["object"],
    ),
    (
        _birds,
        "lightblue",
        "blue",
        "Describe the scene briefly.",
        "Three birds are flying over a green field.",
        "Two birds are flying over the water.",
        ["number", "position"],
    ),
    (
        _bus,
        "lightblue",
        "green",
        "What vehicle is shown, and what is it doing?",
        "A white truck is driving to the left.",
        "A yellow bus is parked on the street.",
        ["object", "action", "position"],
    ),
]


def build() -> list[Correction]:
    records = []
    for k, (draw, sky, ground, question, original, corrected, categories) in enumerate(SCENES):
        im, d = _canvas(sky, ground)
        draw(d)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
        segs = changed_segments(original, corrected)
        assert len(segs) == len(categories), (
            k,
            [(s.original_text(original), s.corrected_text(corrected)) for s in segs],
        )
        records.append(
            Correction(
                image=buf.getvalue(),
                question=question,
                original=original,
                corrected=corrected,
                annotator="example-annotator",
                segments=[
                    ChangedSegment(**{**s.to_dict(), "category": c})
                    for s, c in zip(segs, categories, strict=True)
                ],
                source={"origin": "rlhfv example: drawn scenes, hand-written answers"},
                id=f"example-{k + 1}",
            )
        )
    return records


if __name__ == "__main__":
    EXAMPLE.parent.mkdir(parents=True, exist_ok=True)
    n = write_jsonl(build(), EXAMPLE, embed_images=True)
    print(f"wrote {n} records to {EXAMPLE} ({EXAMPLE.stat().st_size} bytes)")
