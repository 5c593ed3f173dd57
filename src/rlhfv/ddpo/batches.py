"""Feeding prepared pairs to the trainer: image pipelines, deterministic order, sharding.

Image pipelines (``TrainConfig.image_pipeline``), applied to the decoded image before the
processor, in the collator's worker:

* ``"pad"`` (default; the paper's trustworthy pipeline, Sec. 3.3): if the image processor
  would centre-crop (CLIP-style, e.g. LLaVA-1.5), first pad the image to a square with the
  processor's mean colour, so the resize keeps all of it and the crop removes nothing;
  processors that never crop (LLaVA-NeXT any-res, Qwen2-VL, Idefics3) see the image as is.
* ``"processor"``: the processor as is (LLaVA-1.5's processor then centre-crops).
* ``"random_crop"``: the untrustworthy augmentation the paper warns against, opt-in for
  ablations (Table 3): ``RandomResizedCrop(scale=(0.5, 1))`` back to the original size
  (so the number of image tokens fixed at preparation does not change), then ``"pad"``.
  Seeded by (seed, epoch, pair), so a resumed run sees the same crops.

Order: every epoch is a seeded permutation of the pairs; global micro-batch ``k`` of an
epoch is ``order[k*G:(k+1)*G]`` with ``G = per_device_batch_size * processes``, and
process ``r`` takes the ``r``-th slice of it. The position in the data is therefore a
function of the step alone (exact resume), and N processes see the same global batches
as one process with an N times larger per-device batch. The tail that does not fill a
global batch is dropped each epoch. With ``shuffle: false`` every epoch takes the pairs in
dataset order. With ``group_by_length`` the epoch's order comes from
``rlhfv.ddpo.forward.length_grouped_indices`` (per-device batches of similar length:
less padding), still seeded by (seed, epoch); with ``shuffle: false`` too, its groups are
consecutive pairs sorted by length, in dataset order, the same every epoch.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Mapping
from typing import Any

import torch

IMAGE_PIPELINES = ("pad", "processor", "random_crop")


def _open(data: bytes, row: int | None):
    from rlhfv.data.encode import open_image

    return open_image(data, row=row)  # undecodable bytes: an InputError naming the row


def _encode(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def processor_crops(image_processor: Any) -> bool:
    """Whether the image processor centre-crops a fixed-size view (and so can cut off content).

    Any-resolution processors (LLaVA-NeXT's ``image_grid_pinpoints``) keep the whole image
    by their own padding, and their image-token count depends on the image size, so they
    are left alone.
    """
    if getattr(image_processor, "image_grid_pinpoints", None):
        return False
    return bool(getattr(image_processor, "do_center_crop", False))


def pad_to_square(image, fill: tuple[int, int, int]):
    """Centre ``image`` on a square canvas of side max(w, h) filled with ``fill`` (LLaVA's expand2square)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def random_resized_crop(image, rng: random.Random, scale: tuple[float, float] = (0.5, 1.0)):
    """Crop a random area share in ``scale`` (aspect 3/4..4/3) and resize it back to the original size."""
    import math

    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return image.crop((left, top, left + w, top + h)).resize((width, height))
    return image


def image_transform(pipeline: str, image_processor: Any) -> Callable[..., bytes] | None:
    """The byte -> byte image transform of ``pipeline`` for this processor (None: leave the bytes),
    called as ``transform(data, rng, row=index)``; ``row`` names the pair in an error."""
    crops = processor_crops(image_processor)
    mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    fill = tuple(int(round(255 * m)) for m in mean[:3])

    def pad(data: bytes, rng: random.Random, row: int | None = None) -> bytes:
        return _encode(pad_to_square(_open(data, row), fill))

    def crop(data: bytes, rng: random.Random, row: int | None = None) -> bytes:
        image = random_resized_crop(_open(data, row), rng)
        return _encode(pad_to_square(image, fill) if crops else image)

    transforms: dict[str, Callable[..., bytes] | None] = {
        "pad": pad if crops else None,
        "processor": None,
        "random_crop": crop,
    }
    return transforms[pipeline]


class PreparedPairs(torch.utils.data.Dataset):
    """The prepared dataset's rows with ``pair_index`` (the row number) and the image pipeline applied."""

    def __init__(
        self,
        dataset: Any,
        transform: Callable[..., bytes] | None = None,
        seed: int = 0,
        keep: tuple[str, ...] | None = None,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        columns = getattr(dataset, "column_names", None)
        self.columns = [c for c in columns if keep is None or c in keep] if columns else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.dataset[int(index)])
        if self.columns is not None:
            row = {k: row[k] for k in self.columns}
        row["pair_index"] = int(index)
        if self.transform is not None:
            rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
            row["image"] = self.transform(row["image"], rng, row=int(index))
        return row


def epoch_order(n_pairs: int, epoch: int, seed: int, shuffle: bool = True) -> list[int]:
    """The pairs' order in ``epoch``: a permutation seeded by (seed, epoch), or 0..n-1."""
    if not shuffle:
        return list(range(n_pairs))
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_pairs, generator=gen).tolist()


def process_indices(
    order: list[int], start_micro_batch: int, per_device: int, num_processes: int, rank: int
) -> list[int]:
    """This process's pairs from global micro-batch ``start_micro_batch`` to the epoch's end (full batches only)."""
    global_batch = per_device * num_processes
    n_micro = len(order) // global_batch
    out: list[int] = []
    for k in range(start_micro_batch, n_micro):
        begin = k * global_batch + rank * per_device
        out.extend(order[begin : begin + per_device])
    return out


def pair_lengths(dataset: Any) -> list[int]:
    """Tokens per pair (chosen + rejected), read from the id columns only."""
    columns = dataset.select_columns(["chosen_input_ids", "rejected_input_ids"])
    return [len(row["chosen_input_ids"]) + len(row["rejected_input_ids"]) for row in columns]


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
