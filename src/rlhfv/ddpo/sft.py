"""Supervised fine-tuning on the chosen (corrected) answers: the paper's first stage.

The same trainer as DDPO (``rlhfv.ddpo.trainer.Trainer``, one loop; checkpoints, resume,
LoRA, logging and multi-process runs all behave the same); only the objective differs:
the mean token negative log-likelihood of the chosen answers, the rejected rows of the
prepared pairs are not used (``chosen_half``)::

    from rlhfv.ddpo.config import TrainConfig
    from rlhfv.ddpo.sft import train_sft

    result = train_sft(TrainConfig(learning_rate=2e-5, num_epochs=1), model, processor, "prepared/", "runs/sft")

The loss of a micro-batch is the mean over its answer tokens (as the usual SFT trainers
do), so unlike the DDPO loss it is not exactly invariant to how a global batch is split
into micro-batches or processes when answers differ in length.

Images go through the paper's trustworthy pipeline by default (``image_pipeline: pad``:
pad to a square before a cropping processor, never crop; RLHF-V Sec. 3.3). The
untrustworthy augmentation the paper ablates (Table 3, "with cropping augmentation")
is an explicit opt-in: ``image_pipeline: random_crop`` (RandomResizedCrop, area 50-100%,
seeded per epoch and pair; see ``rlhfv.ddpo.batches``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rlhfv.ddpo.config import TrainConfig
from rlhfv.ddpo.forward import stacked_halves, token_logps
from rlhfv.ddpo.loss import IGNORE_INDEX, sft_loss


def chosen_half(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen rows of a stacked preference batch, with their images.

    Row-aligned entries (leading dimension 2B) keep their first B rows; Qwen2-VL's
    flattened ``pixel_values`` (one row per patch) keep the chosen images' patches, counted
    from ``image_grid_thw``; ``pair_index`` (B,) is kept as is.
    """
    half = batch["input_ids"].shape[0] // 2
    out: dict[str, Any] = {}
    grid = batch.get("image_grid_thw")
    for key, value in batch.items():
        if key == "pair_index" or not isinstance(value, torch.Tensor):
            out[key] = value
        elif (halves := stacked_halves(key, value, grid, half)) is not None:
            out[key] = halves[0]
        else:
            raise ValueError(
                f"cannot split batch entry {key!r} of shape {tuple(value.shape)} into chosen rows"
            )
    return out


class SFTObjective:
    """Supervised fine-tuning on the chosen (corrected) answers: mean token NLL."""

    name = "sft"

    def __init__(self, config: TrainConfig, reference: Any = None) -> None:  # no reference model in SFT
        self.config = config

    def __call__(
        self, model: torch.nn.Module, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen = chosen_half(batch)
        logps = token_logps(model, chosen, mode="plain")
        mask = chosen["labels"][:, 1:] != IGNORE_INDEX
        loss = sft_loss(logps, mask)
        tokens = mask.sum().clamp(min=1)
        return loss, {"loss": loss.detach(), "logps/chosen": (logps.detach() * mask).sum() / tokens}


def train_sft(
    config: TrainConfig,
    model: torch.nn.Module,
    processor: Any,
    prepared: str | Path | tuple[Any, Mapping[str, Any]],
    output_dir: str | Path,
    **kwargs: Any,
):
    """Fine-tune ``model`` on the chosen answers of ``prepared``; returns a ``TrainResult``.

    ``kwargs`` as ``rlhfv.ddpo.trainer.Trainer`` (``resume_from``, ``callbacks``, ``progress``...).
    """
    from rlhfv.ddpo.trainer import Trainer

    return Trainer(config, model, processor, prepared, output_dir, objective="sft", **kwargs).train()
