"""DDPO objective against hand-worked numbers and a plain Python loop."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfv.ddpo.loss import (
    NORMALISATIONS,
    PREFERENCE_LOSSES,
    ddpo_loss,
    per_token_logps,
    preference_metrics,
    sft_loss,
    shift_token_weights,
    weighted_mean_logps,
    weighted_sum_logps,
)

LN = math.log


def hand_batch(gamma: float = 2.0):
    """B = 1 pair, T = 3, V = 2, worked out on paper in the test docstrings."""
    logits = torch.tensor(
        [
            [[0.0, LN(3)], [0.0, 0.0], [5.0, -5.0]],  # chosen: p(1)=3/4 then p(0)=1/2
            [[LN(3), 0.0], [1.0, 2.0], [7.0, 7.0]],  # rejected: p(0)=3/4, then padding
        ]
    )
    labels = torch.tensor([[-100, 1, 0], [-100, 0, -100]])
    weights = torch.tensor([[0.0, 1.0, gamma], [0.0, 1.0, 0.0]])
    ref = torch.tensor([[LN(0.5), LN(0.5)], [LN(0.5), 0.0]])
    return logits, labels, weights, ref


def test_per_token_logps_hand_worked():
    logits, labels, _, _ = hand_batch()
    logps, mask = per_token_logps(logits, labels)
    assert mask.tolist() == [[True, True], [True, False]]
    expected = torch.tensor([[LN(3 / 4), LN(1 / 2)], [LN(3 / 4), 0.0]])
    torch.testing.assert_close(logps, expected)


def test_weighted_sequence_logps_hand_worked():
    logits, labels, weights, _ = hand_batch(gamma=2.0)
    logps, _ = per_token_logps(logits, labels)
    w = shift_token_weights(weights)
    # chosen: ln(3/4) + 2 ln(1/2) = ln(3/16), N = 1 + 2 = 3; rejected: ln(3/4), N = 1
    torch.testing.assert_close(weighted_sum_logps(logps, w), torch.tensor([LN(3 / 16), LN(3 / 4)]))
    torch.testing.assert_close(weighted_mean_logps(logps, w), torch.tensor([LN(3 / 16) / 3, LN(3 / 4)]))


def test_ddpo_loss_hand_worked_mean_and_sum():
    logits, labels, weights, ref = hand_batch(gamma=2.0)
    logps, _ = per_token_logps(logits, labels)
    w = shift_token_weights(weights)
    # mean: chosen ratio = (ln(3/16) - 3 ln(1/2)) / 3 = ln(1.5)/3, rejected ratio = ln(3/4) - ln(1/2) = ln 1.5
    # beta = 3: loss = log(1 + exp(-3 * (-2/3) ln 1.5)) = log(1 + 1.5^2) = log(3.25)
    out = ddpo_loss(logps, ref, w, beta=3.0, normalisation="mean")
    assert out.loss.item() == pytest.approx(LN(3.25), abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(LN(1.5), abs=1e-6)
    assert out.rejected_rewards.item() == pytest.approx(3 * LN(1.5), abs=1e-6)
    # sum: both ratios ln 1.5, margin 0: loss = ln 2 whatever beta
    out = ddpo_loss(logps, ref, w, beta=0.7, normalisation="sum")
    assert out.loss.item() == pytest.approx(LN(2), abs=1e-6)
    metrics = {k: v.item() for k, v in preference_metrics(out).items()}
    assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["rewards/accuracies"] == 0.0
    assert metrics["logps/chosen"] == pytest.approx(LN(3 / 16), abs=1e-6)
    assert metrics["logps/rejected"] == pytest.approx(LN(3 / 4), abs=1e-6)


def test_sft_term_hand_worked():
    logits, labels, weights, ref = hand_batch(gamma=2.0)
    logps, mask = per_token_logps(logits, labels)
    w = shift_token_weights(weights)
    plain = ddpo_loss(logps, ref, w, beta=3.0, normalisation="mean")
    with_sft = ddpo_loss(logps, ref, w, beta=3.0, normalisation="mean", sft_weight=0.5)
    # total = dpo - 0.5 * log pi(y_w) with log pi(y_w) = ln(3/16)/3
    assert with_sft.loss.item() == pytest.approx(LN(3.25) - 0.5 * LN(3 / 16) / 3, abs=1e-6)
    assert plain.loss.item() == pytest.approx(LN(3.25), abs=1e-6)
    # token NLL over the three answer tokens: -(ln 3/4 + ln 1/2 + ln 3/4) / 3
    assert sft_loss(logps, mask).item() == pytest.approx(-(2 * LN(0.75) + LN(0.5)) / 3, abs=1e-6)


def test_other_preference_losses_hand_worked():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-3.0])
    rc, rr = torch.tensor([-2.0]), torch.tensor([-2.0])
    # margin of log-ratios: (1) - (-1) = 2
    hinge, _, _ = PREFERENCE_LOSSES["hinge"](pc, pr, rc, rr, 0.25)
    assert hinge.item() == pytest.approx(0.5)  # max(0, 1 - 0.25 * 2)
    ipo, _, _ = PREFERENCE_LOSSES["ipo"](pc, pr, rc, rr, 1.0)
    assert ipo.item() == pytest.approx(2.25)  # (2 - 1/(2*1))^2
    sig, cr, rj = PREFERENCE_LOSSES["sigmoid"](pc, pr, rc, rr, 0.25)
    assert sig.item() == pytest.approx(math.log(1 + math.exp(-0.5)))
    assert (cr.item(), rj.item()) == pytest.approx((0.25, -0.25))


def loop_ddpo(logits, labels, weights, ref, beta, normalisation):
    """The objective written out token by token with Python floats."""
    rows = logits.shape[0]
    seq = []
    ref_seq = []
    for n in range(rows):
        total = ref_total = weight_sum = 0.0
        for t in range(1, labels.shape[1]):
            y = int(labels[n, t])
            if y == -100:
                continue
            row = [float(v) for v in logits[n, t - 1]]
            top = max(row)
            logp = row[y] - (top + math.log(sum(math.exp(v - top) for v in row)))
            w = float(weights[n, t])
            total += w * logp
            ref_total += w * float(ref[n, t - 1])
            weight_sum += w
        if normalisation == "mean":
            total, ref_total = total / weight_sum, ref_total / weight_sum
        seq.append(total)
        ref_seq.append(ref_total)
    b = rows // 2
    losses = []
    for i in range(b):
        margin = (seq[i] - ref_seq[i]) - (seq[b + i] - ref_seq[b + i])
        losses.append(math.log(1 + math.exp(-beta * margin)))
    return sum(losses) / b, seq


@pytest.mark.parametrize("normalisation", sorted(NORMALISATIONS))
def test_ddpo_matches_python_loop(normalisation):
    gen = torch.Generator().manual_seed(3)
    n, t, v = 6, 9, 11
    logits = torch.randn(n, t, v, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, v, (n, t), generator=gen)
    starts = [2, 3, 1, 4, 2, 5]
    ends = [9, 7, 8, 9, 6, 9]
    weights = torch.zeros(n, t, dtype=torch.float64)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        labels[i, :s] = -100
        labels[i, e:] = -100
        weights[i, s:e] = torch.where(torch.rand(e - s, generator=gen) < 0.3, 5.0, 1.0).double()
    ref = torch.randn(n, t - 1, generator=gen, dtype=torch.float64) - 2
    logps, _ = per_token_logps(logits, labels)
    out = ddpo_loss(logps.double(), ref, shift_token_weights(weights), beta=0.5, normalisation=normalisation)
    expected_loss, expected_seq = loop_ddpo(logits, labels, weights, ref, 0.5, normalisation)
    assert out.loss.item() == pytest.approx(expected_loss, rel=1e-6)
    got_seq = torch.cat([out.policy_chosen_logps, out.policy_rejected_logps]).tolist()
    assert got_seq == pytest.approx(expected_seq, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=2, max_size=6).filter(lambda x: len(x) % 2 == 0),
    scale=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**16),
)
def test_invariances(lengths, scale, seed):
    """Weighted mean ignores a common weight scale; gamma = 1 with the mean is the per-token average."""
    gen = torch.Generator().manual_seed(seed)
    t = max(lengths)
    logps = -torch.rand(len(lengths), t, generator=gen, dtype=torch.float64) * 5
    ones = torch.zeros_like(logps)
    for i, length in enumerate(lengths):
        ones[i, :length] = 1.0
    logps = logps * ones
    dense = ones * torch.where(torch.rand(ones.shape, generator=gen) < 0.5, 5.0, 1.0).double()
    torch.testing.assert_close(weighted_mean_logps(logps, dense), weighted_mean_logps(logps, dense * scale))
    torch.testing.assert_close(
        weighted_mean_logps(logps, ones), logps.sum(1) / torch.tensor(lengths, dtype=torch.float64)
    )
    # gamma = 1 and the sum: DDPO equals vanilla DPO on summed log-probs
    ref = -torch.rand(logps.shape, generator=gen, dtype=torch.float64) * ones
    out = ddpo_loss(logps, ref, ones, beta=0.1, normalisation="sum")
    pc, pr = logps.sum(1).chunk(2)
    rc, rr = ref.sum(1).chunk(2)
    vanilla = -torch.nn.functional.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()
    torch.testing.assert_close(out.loss, vanilla)


def test_gradient_flows_only_through_policy():
    logits, labels, weights, ref = hand_batch()
    logits.requires_grad_(True)
    ref = ref.clone().requires_grad_(True)
    logps, _ = per_token_logps(logits, labels)
    ddpo_loss(logps, ref, shift_token_weights(weights), beta=1.0).loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert ref.grad is None
    # padding positions receive no gradient
    assert logits.grad[1, 1:].abs().sum() == 0
