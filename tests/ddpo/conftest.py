"""Shared fixtures: tiny prepared preference data built in memory, a fast config."""

from __future__ import annotations

import io

import pytest

from rlhfv.ddpo.config import TrainConfig

QUESTIONS_AND_ANSWERS = [
    ("What is in the image?", "two red dogs on the grass.", "one red dog on the grass."),
    ("Describe the image.", "a blue car near a tree.", "a blue bus near a tree."),
    ("What color is the sky?", "the sky is red and there is a bird.", "the sky is green."),
    ("How many cats are there?", "there are three cats on a table.", "there are two cats on a table."),
    ("What is the man holding?", "the man is holding a red umbrella.", "the man is holding a black bag."),
    ("Where is the dog?", "the dog is behind the car.", "the dog is under the table."),
    ("What is on the plate?", "a pizza and a cake.", "a sandwich and a banana."),
    ("Describe the scene.", "a woman walking near a bus on the street.", "a woman sitting near a train."),
]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "gray"]
SIZES = [(40, 30), (30, 40), (32, 32), (48, 32), (36, 36), (32, 44), (40, 40), (50, 30)]


def image_png(color: str, size: tuple[int, int]) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).rectangle([2, 2, size[0] // 2, size[1] // 2], fill="black")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def make_prepared(processor, n: int = 4, offset: int = 0):
    """``(dataset, metadata)`` of ``n`` encoded preference pairs, as the data layer prepares them."""
    from datasets import Dataset

    from rlhfv.data.encode import encode_correction
    from rlhfv.data.schema import Correction

    rows = []
    for i in range(offset, offset + n):
        question, original, corrected = QUESTIONS_AND_ANSWERS[i % len(QUESTIONS_AND_ANSWERS)]
        pair = Correction(
            image=image_png(COLORS[i % len(COLORS)], SIZES[i % len(SIZES)]),
            question=question,
            original=original,
            corrected=corrected,
            id=str(i),
        )
        rows.append(encode_correction(pair, processor))
    dataset = Dataset.from_list(rows)
    return dataset, {"fingerprint": f"test-{n}-{offset}", "rows": n}


def fast_config(**overrides) -> TrainConfig:
    """Settings that make a tiny model move in a few CPU steps."""
    values = dict(
        learning_rate=5e-3,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        mixed_precision="no",
        report_to=[],
        per_device_batch_size=4,
        gradient_accumulation_steps=1,
        shuffle=False,
        max_steps=4,
        save_steps=1000,
        logging_steps=1,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture
def tiny_llava():
    from rlhfv.tiny import build_tiny

    return build_tiny("llava", seed=0)
