"""Training objectives: one batch in, ``(loss, metrics)`` out; the trainer's loop is shared.

``OBJECTIVES`` maps a stage name to its class: ``"ddpo"`` (Dense DPO on the stacked
``[chosen; rejected]`` batch) and ``"sft"`` (token-level NLL on the chosen answers only,
the paper's first stage; ``rlhfv.ddpo.sft``). Metrics are detached 0-d tensors so the trainer can average
them across processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rlhfv.ddpo.config import TrainConfig
from rlhfv.ddpo.forward import token_logps
from rlhfv.ddpo.loss import ddpo_loss, preference_metrics, shift_token_weights
from rlhfv.ddpo.reference import ReferenceSource
from rlhfv.ddpo.sft import SFTObjective

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


OBJECTIVES: dict[str, type] = {"ddpo": DDPOObjective, "sft": SFTObjective}
