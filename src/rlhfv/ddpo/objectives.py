"""Training objectives: one batch in, ``(loss, metrics)`` out; the trainer's loop is shared.

``OBJECTIVES`` maps a stage name to its class: ``"ddpo"`` (Dense DPO on the stacked
``[chosen; rejected]`` batch) and ``"sft"`` (token-level NLL on the chosen answers only,
the paper's first stage). Metrics are detached 0-d tensors so the trainer can average
them across processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rlhfv.ddpo.config import TrainConfig
from rlhfv.ddpo.forward import token_logps
from rlhfv.ddpo.loss import IGNORE_INDEX, ddpo_loss, preference_metrics, sft_loss, shift_token_weights
from rlhfv.ddpo.reference import ReferenceSource

Metrics = dict[str, torch.Tensor]


class DDPOObjective:
    """Dense DPO: policy per-token log-probs vs the reference source's, weighted by ``token_weights``."""

    name = "ddpo"

    def __init__(self, config: TrainConfig, reference: ReferenceSource) -> None:
        self.config = config
        self.reference = reference

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, Metrics]:
        policy = token_logps(model, batch, mode=self.config.forward)
        with torch.no_grad():
            ref = self.reference(model, batch).to(policy.device)
        out = ddpo_loss(
            policy,
            ref,
            shift_token_weights(batch["token_weights"]),
            beta=self.config.beta,
            normalisation=self.config.normalisation,
            loss_type=self.config.loss_type,
            sft_weight=self.config.sft_weight,
        )
        return out.loss, preference_metrics(out)


def chosen_half(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen rows of a stacked preference batch, with their images.

    Row-aligned entries (leading dimension 2B) keep their first B rows; Qwen2-VL's
    flattened ``pixel_values`` (one row per patch) keep the chosen images' patches, counted
    from ``image_grid_thw``; ``pair_index`` (B,) is kept as is.
    """
    rows = batch["input_ids"].shape[0]
    half = rows // 2
    out: dict[str, Any] = {}
    grid = batch.get("image_grid_thw")
    for key, value in batch.items():
        if key == "pair_index" or not isinstance(value, torch.Tensor):
            out[key] = value
        elif key == "pixel_values" and grid is not None:
            out[key] = value[: int(grid[:half].prod(dim=-1).sum())]
        elif value.shape[0] == rows:
            out[key] = value[:half]
        else:
            raise ValueError(
                f"cannot split batch entry {key!r} of shape {tuple(value.shape)} into chosen rows"
            )
    return out


class SFTObjective:
    """Supervised fine-tuning on the chosen (corrected) answers: mean token NLL."""

    name = "sft"

    def __init__(self, config: TrainConfig, reference: ReferenceSource | None = None) -> None:
        self.config = config

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, Metrics]:
        chosen = chosen_half(batch)
        logps = token_logps(model, chosen, mode="plain")
        mask = chosen["labels"][:, 1:] != IGNORE_INDEX
        loss = sft_loss(logps, mask)
        tokens = mask.sum().clamp(min=1)
        return loss, {"loss": loss.detach(), "logps/chosen": (logps.detach() * mask).sum() / tokens}


OBJECTIVES: dict[str, type] = {"ddpo": DDPOObjective, "sft": SFTObjective}
