"""The Dense DPO (DDPO) objective as small pure tensor functions.

Batch convention (docs/architecture.md): 2B rows ``[chosen_0..chosen_{B-1};
rejected_0..rejected_{B-1}]``, so ``x.chunk(2)`` splits chosen from rejected. Labels
follow the Hugging Face convention (not shifted, ``-100`` where no loss is taken);
per-token tensors here are *shifted*: column ``t`` holds the log-prob of ``labels[:, t+1]``
given the logits at position ``t``, so tensors aligned with labels drop their first column
(``shift_token_weights``).

The paper's Eq. 5 (RLHF-V, arXiv 2312.00849), for a response ``y`` with unchanged tokens
``y_u`` and changed tokens ``y_c``::

    log pi(y|x) = ( sum_{t in y_u} log p(y_t|x,y_<t) + gamma * sum_{t in y_c} log p(y_t|x,y_<t) ) / N
    N = |y_u| + gamma * |y_c|

and the DPO loss on top of it::

    L = -log sigmoid( beta * [ (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)) ] )

Variants are chosen from the mappings ``NORMALISATIONS`` (``"mean"``: the paper's Eq. 5;
``"sum"``: the released training script) and ``PREFERENCE_LOSSES`` (``"sigmoid"``: DPO,
``"hinge"``, ``"ipo"``). With gamma = 1 and ``"sum"`` the objective is exactly vanilla DPO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def per_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next label token, and where it counts.

    ``logps[n, t] = log softmax(logits[n, t])[labels[n, t+1]]``, 0 where ``labels[n, t+1] == -100``.

    Args:
        logits: (N, T, V) float, any dtype (computed in float32).
        labels: (N, T) long, ``-100`` where no loss is taken; not shifted.

    Returns:
        logps: (N, T-1) float32, zero at masked positions.
        mask: (N, T-1) bool, True where ``labels[:, 1:] != -100``.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (N, T)")
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    safe_labels = shifted_labels.masked_fill(~mask, 0)
    # log_softmax(x)[y] = x[y] - logsumexp(x): no (N, T, V) log-prob tensor is kept for backward
    picked = torch.gather(shifted_logits, 2, safe_labels.unsqueeze(2)).squeeze(2)
    logps = picked - torch.logsumexp(shifted_logits, dim=2)
    return logps * mask, mask


def shift_token_weights(token_weights: torch.Tensor) -> torch.Tensor:
    """Align label-aligned weights (N, T) with shifted per-token log-probs (N, T-1)."""
    return token_weights[:, 1:]


def weighted_sum_logps(token_logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t * logp_t``: the released script's sequence log-prob (no average).

    Args:
        token_logps: (N, T') per-token log-probs (0 where masked).
        weights: (N, T') token weights (0 on prompt and padding).

    Returns:
        (N,) sequence log-probs.
    """
    return (token_logps * weights).sum(dim=1)


def weighted_mean_logps(token_logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 5: ``sum_t w_t * logp_t / N`` with ``N = sum_t w_t = |y_u| + gamma * |y_c|``.

    Args:
        token_logps: (N, T') per-token log-probs (0 where masked).
        weights: (N, T') token weights (1 unchanged, gamma changed, 0 prompt/padding).

    Returns:
        (N,) sequence log-probs; a row with no weighted token gives 0.
    """
    total_weight = weights.sum(dim=1)
    return (token_logps * weights).sum(dim=1) / total_weight.clamp(min=torch.finfo(weights.dtype).tiny)


NORMALISATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": weighted_mean_logps,
    "sum": weighted_sum_logps,
}


PreferenceLoss = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor],
]


def _logratios(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    return policy_chosen - ref_chosen, policy_rejected - ref_rejected


def dpo_sigmoid_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO: ``loss = -log sigmoid(beta * [(pi_w - ref_w) - (pi_l - ref_l)])``.

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: (B,) sequence log-probs.
        beta: the KL strength.

    Returns:
        losses (B,), chosen_rewards (B,) = ``beta * (pi_w - ref_w)``, rejected_rewards (B,)
        = ``beta * (pi_l - ref_l)``; the rewards are detached.
    """
    chosen_ratio, rejected_ratio = _logratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def dpo_hinge_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SLiC hinge: ``loss = max(0, 1 - beta * [(pi_w - ref_w) - (pi_l - ref_l)])``; shapes as ``dpo_sigmoid_loss``."""
    chosen_ratio, rejected_ratio = _logratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    losses = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IPO: ``loss = ([(pi_w - ref_w) - (pi_l - ref_l)] - 1 / (2 beta))^2``; shapes as ``dpo_sigmoid_loss``."""
    chosen_ratio, rejected_ratio = _logratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "sigmoid": dpo_sigmoid_loss,
    "hinge": dpo_hinge_loss,
    "ipo": ipo_loss,
}


@dataclass(frozen=True)
class DDPOLossOutput:
    """What one DDPO loss evaluation returns.

    ``loss`` is the scalar to back-propagate; the per-pair tensors are (B,).
    """

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor


def ddpo_loss(
    policy_token_logps: torch.Tensor,
    ref_token_logps: torch.Tensor,
    weights: torch.Tensor,
    *,
    beta: float,
    normalisation: str = "mean",
    loss_type: str = "sigmoid",
    sft_weight: float = 0.0,
) -> DDPOLossOutput:
    """Dense DPO on a stacked batch of per-token log-probs.

    ``loss = mean_b L_b - sft_weight * mean_b log pi(y_w^b)`` (the reference code's total, with
    the SFT term on the weighted chosen log-prob); ``L_b`` from ``PREFERENCE_LOSSES[loss_type]``
    on sequence log-probs from ``NORMALISATIONS[normalisation]``.

    Args:
        policy_token_logps: (2B, T') per-token policy log-probs, ``[chosen; rejected]``.
        ref_token_logps: (2B, T') per-token reference log-probs, same layout (no gradient).
        weights: (2B, T') shifted token weights (``shift_token_weights(batch["token_weights"])``).
        beta, normalisation, loss_type, sft_weight: see ``rlhfv.ddpo.config.TrainConfig``.
    """
    if policy_token_logps.shape != weights.shape or ref_token_logps.shape != weights.shape:
        raise ValueError(
            f"per-token shapes disagree: policy {tuple(policy_token_logps.shape)}, "
            f"reference {tuple(ref_token_logps.shape)}, weights {tuple(weights.shape)}"
        )
    if policy_token_logps.shape[0] % 2:
        raise ValueError(f"expected 2B stacked rows [chosen; rejected], got {policy_token_logps.shape[0]}")
    sequence_logps = NORMALISATIONS[normalisation]
    weights = weights.to(policy_token_logps.dtype)
    policy_chosen, policy_rejected = sequence_logps(policy_token_logps, weights).chunk(2)
    ref_chosen, ref_rejected = sequence_logps(ref_token_logps.to(weights.dtype), weights).chunk(2)
    losses, chosen_rewards, rejected_rewards = PREFERENCE_LOSSES[loss_type](
        policy_chosen, policy_rejected, ref_chosen.detach(), ref_rejected.detach(), beta
    )
    loss = losses.mean()
    if sft_weight:
        loss = loss - sft_weight * policy_chosen.mean()
    return DDPOLossOutput(loss, losses, chosen_rewards, rejected_rewards, policy_chosen, policy_rejected)


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level negative log-likelihood: ``-sum_t logp_t / |{t : mask_t}|`` over all rows.

    Args:
        token_logps: (N, T') per-token log-probs (0 where masked).
        mask: (N, T') bool, answer tokens.
    """
    return -(token_logps * mask).sum() / mask.sum().clamp(min=1)


def preference_metrics(out: DDPOLossOutput) -> dict[str, torch.Tensor]:
    """Batch means of the standard DPO metrics (names as TRL logs them), as detached 0-d tensors."""
    margins = out.chosen_rewards - out.rejected_rewards
    return {
        "loss": out.loss.detach(),
        "rewards/chosen": out.chosen_rewards.mean(),
        "rewards/rejected": out.rejected_rewards.mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float().mean(),
        "logps/chosen": out.policy_chosen_logps.detach().mean(),
        "logps/rejected": out.policy_rejected_logps.detach().mean(),
    }
