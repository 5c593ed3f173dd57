"""Image pipelines (trustworthy pad vs opt-in random crop), data order and sharding."""

from __future__ import annotations

import io
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rlhfv.ddpo.batches import (
    PreparedPairs,
    epoch_order,
    image_transform,
    pad_to_square,
    process_indices,
    processor_crops,
)
from rlhfv.tiny import build_tiny


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def wide_image_with_red_left_edge():
    image = Image.new("RGB", (96, 32), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 12, 32))  # content only at the left edge
    return image


def red_share(pixel_values: torch.Tensor, image_processor) -> float:
    """Share of pixels that are red after un-normalising the processor's output."""
    mean = torch.tensor(image_processor.image_mean)[:, None, None]
    std = torch.tensor(image_processor.image_std)[:, None, None]
    rgb = pixel_values[0] * std + mean
    red = (rgb[0] > 0.8) & (rgb[1] < 0.2) & (rgb[2] < 0.2)
    return red.float().mean().item()


def test_pad_keeps_content_a_centre_crop_removes():
    """LLaVA-1.5's CLIP processor centre-crops: the red edge is lost unless the image is padded first."""
    _, processor = build_tiny("llava")
    ip = processor.image_processor
    assert processor_crops(ip)
    data = png(wide_image_with_red_left_edge())
    rng = random.Random(0)
    as_is = ip(images=[Image.open(io.BytesIO(data)).convert("RGB")], return_tensors="pt")["pixel_values"]
    padded_bytes = image_transform("pad", ip)(data, rng)
    padded = ip(images=[Image.open(io.BytesIO(padded_bytes)).convert("RGB")], return_tensors="pt")[
        "pixel_values"
    ]
    assert red_share(as_is, ip) == 0.0
    assert red_share(padded, ip) > 0.03  # 12/96 of the width x 1/3 of the padded height ~ 0.04
    assert image_transform("processor", ip) is None


@pytest.mark.parametrize("arch", ["llava_next", "qwen2_vl", "idefics3"])
def test_processors_that_never_crop_see_the_image_as_is(arch):
    _, processor = build_tiny(arch)
    assert not processor_crops(processor.image_processor)
    assert image_transform("pad", processor.image_processor) is None


def test_random_crop_is_seeded_size_preserving_and_opt_in(tiny_llava):
    from datasets import Dataset

    _, processor = tiny_llava
    ip = processor.image_processor
    image = Image.new("RGB", (40, 30))
    image.putdata([(x * 6 % 256, y * 8 % 256, (x * y) % 256) for y in range(30) for x in range(40)])
    dataset = Dataset.from_list([{"image": png(image)} for _ in range(3)])
    pairs = PreparedPairs(dataset, image_transform("random_crop", ip), seed=7)
    first = [pairs[i]["image"] for i in range(3)]
    assert [pairs[i]["image"] for i in range(3)] == first  # same (seed, epoch, pair): same crop
    assert len(set(first)) == 3  # a different crop per pair
    pairs.epoch = 1
    assert [pairs[i]["image"] for i in range(3)] != first  # a new crop each epoch
    for data in first:
        cropped = Image.open(io.BytesIO(data))
        assert cropped.size == (40, 40)  # cropped to the original 40x30, then padded to a square for CLIP
    assert pairs[2]["pair_index"] == 2
    default = PreparedPairs(dataset, image_transform("pad", ip), seed=7)
    assert Image.open(io.BytesIO(default[0]["image"])).crop((0, 5, 40, 35)).tobytes() == image.tobytes()


@pytest.mark.parametrize("pipeline", ["pad", "random_crop"])
def test_an_undecodable_image_is_an_input_error_naming_the_row(tiny_llava, pipeline):
    """As under ``image_pipeline: processor`` (the collator decodes): no PIL traceback."""
    from datasets import Dataset

    from rlhfv.errors import InputError

    _, processor = tiny_llava
    rows = [{"image": png(Image.new("RGB", (40, 30)))}, {"image": b"not an image"}]
    pairs = PreparedPairs(Dataset.from_list(rows), image_transform(pipeline, processor.image_processor))
    assert pairs[0]["pair_index"] == 0
    with pytest.raises(InputError) as err:
        pairs[1]
    assert err.value.row == 1 and err.value.field == "image" and "row 1: field image: not a" in str(err.value)


def test_pad_to_square_centres_the_image():
    image = Image.new("RGB", (10, 4), (255, 0, 0))
    out = pad_to_square(image, (0, 0, 0))
    assert out.size == (10, 10)
    assert (
        out.getpixel((5, 2)) == (0, 0, 0)
        and out.getpixel((5, 3)) == (255, 0, 0)
        and out.getpixel((5, 7)) == (0, 0, 0)
    )


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 40),
    per_device=st.integers(1, 4),
    procs=st.integers(1, 4),
    start=st.integers(0, 5),
    epoch=st.integers(0, 3),
)
def test_processes_partition_each_global_batch(n, per_device, procs, start, epoch):
    order = epoch_order(n, epoch, seed=3)
    assert sorted(order) == list(range(n))
    shards = [process_indices(order, start, per_device, procs, r) for r in range(procs)]
    global_batch = per_device * procs
    n_micro = n // global_batch
    # one process with the whole global batch sees exactly the union, batch by batch
    single = process_indices(order, start, global_batch, 1, 0)
    assert len(single) == max(0, n_micro - start) * global_batch
    for k in range(max(0, n_micro - start)):
        union = [i for r in range(procs) for i in shards[r][k * per_device : (k + 1) * per_device]]
        assert union == single[k * global_batch : (k + 1) * global_batch]


def test_epoch_orders_differ_and_are_reproducible():
    assert epoch_order(50, 0, seed=1) == epoch_order(50, 0, seed=1)
    assert epoch_order(50, 0, seed=1) != epoch_order(50, 1, seed=1)
    assert epoch_order(5, 0, seed=1, shuffle=False) == [0, 1, 2, 3, 4]
