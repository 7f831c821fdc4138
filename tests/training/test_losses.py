"""Token log-probs, DPO and GSPO against hand-computed numbers (written in each docstring)."""

import math

import pytest
import torch
from torch.testing import assert_close

from training.losses import (
    IGNORE_INDEX,
    dpo_loss,
    group_advantages,
    gspo_objective,
    masked_token_logprobs,
    sequence_logprob,
)

# ---------------------------------------------------------------------------------------------
# token / sequence log-probs
# ---------------------------------------------------------------------------------------------


def test_masked_token_logprobs_hand_computed():
    """Logits [0, ln 3] over V=2 give p = [1/4, 3/4]: log p = [-1.386294, -0.287682].

    Uniform logits over V=4 give log(1/4) = -1.386294 for any target. Ignored targets give 0.
    """
    logits = torch.tensor(
        [
            [[0.0, math.log(3.0), -50.0, -50.0], [0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -50.0, -50.0]],
        ]
    )  # (1, 3, 4); -50 adds e^-50 ~ 2e-22 to the partition function: negligible
    targets = torch.tensor([[1, 2, IGNORE_INDEX]])
    out = masked_token_logprobs(logits, targets)
    assert out.shape == (1, 3) and out.dtype == torch.float32
    assert_close(out, torch.tensor([[-0.287682, -1.386294, 0.0]]), atol=1e-6, rtol=0)
    assert out[0, 2].item() == 0.0

    targets0 = torch.tensor([[0, IGNORE_INDEX, IGNORE_INDEX]])
    assert_close(masked_token_logprobs(logits, targets0)[0, 0], torch.tensor(-1.386294), atol=1e-6, rtol=0)


def test_masked_token_logprobs_upcasts_bf16_and_matches_cross_entropy():
    """bf16 logits are scored in fp32; the result equals -cross_entropy(reduction='none')."""
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11).to(torch.bfloat16)
    targets = torch.randint(0, 11, (2, 5))
    targets[0, :2] = IGNORE_INDEX
    out = masked_token_logprobs(logits, targets)
    assert out.dtype == torch.float32
    ref = -torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    assert_close(out, ref)


def test_masked_token_logprobs_shape_mismatch():
    with pytest.raises(ValueError, match="do not align"):
        masked_token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


def test_sequence_logprob_sum_and_mean():
    """Row 0: [-1, -2, x] with mask [1, 1, 0] -> sum -3, mean -1.5 (x = -inf is ignored).
    Row 1: [-0.5, -0.5, -2] all valid -> sum -3, mean -1.  Row 2: no valid token -> 0 both ways.
    """
    lp = torch.tensor([[-1.0, -2.0, -math.inf], [-0.5, -0.5, -2.0], [-4.0, -4.0, -4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    assert_close(sequence_logprob(lp, mask), torch.tensor([-3.0, -3.0, 0.0]))
    assert_close(sequence_logprob(lp, mask, reduction="mean"), torch.tensor([-1.5, -1.0, 0.0]))
    with pytest.raises(ValueError, match="reduction"):
        sequence_logprob(lp, mask, reduction="max")


def test_text_plus_speech_sequence_logprob_is_a_sum():
    """The DrVoice reply log-prob is text-head + SRH: -3 (text) + -1.5 (speech) = -4.5."""
    text = sequence_logprob(torch.tensor([[-1.0, -2.0]]), torch.tensor([[True, True]]))
    speech = sequence_logprob(torch.tensor([[-0.5, -0.5, -0.5, 9.0]]), torch.tensor([[1, 1, 1, 0]]))
    assert_close(text + speech, torch.tensor([-4.5]))


# ---------------------------------------------------------------------------------------------
# DPO
# ---------------------------------------------------------------------------------------------


def test_dpo_loss_hand_computed():
    """beta = 0.1.

    Pair 0: pi_w=-10, ref_w=-12, pi_l=-15, ref_l=-13.
        chosen reward 0.1*(-10+12) = 0.2, rejected 0.1*(-15+13) = -0.2, margin 0.4
        loss = -log sigmoid(0.4) = log(1 + e^-0.4) = log(1.670320) = 0.513015
    Pair 1: all four -5: rewards 0, margin 0, loss = log 2 = 0.693147.
    Mean loss (0.513015 + 0.693147) / 2 = 0.603081; accuracy 1/2 (a tie is not a win);
    mean margin (0.4 + 0) / 2 = 0.2.
    """
    out = dpo_loss(
        policy_chosen_logps=torch.tensor([-10.0, -5.0]),
        policy_rejected_logps=torch.tensor([-15.0, -5.0]),
        ref_chosen_logps=torch.tensor([-12.0, -5.0]),
        ref_rejected_logps=torch.tensor([-13.0, -5.0]),
        beta=0.1,
    )
    assert_close(out.loss, torch.tensor(0.603081), atol=1e-6, rtol=0)
    assert_close(out.chosen_rewards, torch.tensor([0.2, 0.0]))
    assert_close(out.rejected_rewards, torch.tensor([-0.2, 0.0]))
    assert_close(out.reward_accuracy, torch.tensor(0.5))
    assert_close(out.reward_margin, torch.tensor(0.2))


def test_dpo_gradient_hand_computed():
    """At margin 0, d(-log sigmoid(beta m))/dm = -beta * sigmoid(0) = -beta/2; over a batch of B=2 the
    mean divides by 2: d loss / d pi_w = -0.1 * 0.5 / 2 = -0.025, d loss / d pi_l = +0.025.
    The reference log-probs get no gradient.
    """
    pi_w = torch.tensor([-3.0, -7.0], requires_grad=True)
    pi_l = torch.tensor([-4.0, -2.0], requires_grad=True)
    ref_w = torch.tensor([-3.0, -7.0], requires_grad=True)
    ref_l = torch.tensor([-4.0, -2.0], requires_grad=True)
    dpo_loss(pi_w, pi_l, ref_w, ref_l, beta=0.1).loss.backward()
    assert_close(pi_w.grad, torch.tensor([-0.025, -0.025]))
    assert_close(pi_l.grad, torch.tensor([0.025, 0.025]))
    assert ref_w.grad is None and ref_l.grad is None


def test_dpo_is_stable_for_huge_margins():
    """margin +1000 -> loss ~0 (not nan); margin -1000 -> loss = 1000 (log(1 + e^1000) ~ 1000)."""
    out = dpo_loss(
        torch.tensor([0.0]), torch.tensor([-1e4]), torch.tensor([0.0]), torch.tensor([0.0]), beta=0.1
    )
    assert_close(out.loss, torch.tensor(0.0))
    out = dpo_loss(
        torch.tensor([-1e4]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), beta=0.1
    )
    assert_close(out.loss, torch.tensor(1000.0))


def test_dpo_validates_inputs():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="same"):
        dpo_loss(x, torch.zeros(3), x, x)


# ---------------------------------------------------------------------------------------------
# GSPO
# ---------------------------------------------------------------------------------------------


def test_group_advantages_hand_computed():
    """G = 2. Group 0 rewards [1, 0]: mean 0.5, population std 0.5 -> A = +-0.5 / (0.5 + 1e-6).
    Group 1 rewards [3, 3]: all equal -> A = [0, 0] exactly.
    G = 4, rewards [0, 0, 0, 2]: mean 0.5, std sqrt((3*0.25 + 2.25)/4) = sqrt(0.75) = 0.866025
    -> A = [-0.57735, -0.57735, -0.57735, 1.73205] (eps = 0).
    """
    adv = group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), group_size=2)
    a = 0.5 / (0.5 + 1e-6)
    assert_close(adv, torch.tensor([a, -a, 0.0, 0.0]))
    assert adv[2].item() == 0.0 and adv[3].item() == 0.0

    adv4 = group_advantages(torch.tensor([0.0, 0.0, 0.0, 2.0]), group_size=4, eps=0.0)
    assert_close(adv4, torch.tensor([-0.57735, -0.57735, -0.57735, 1.73205]), atol=1e-5, rtol=0)


def test_group_advantages_equal_inexact_floats_are_zero():
    """[0.1, 0.1, 0.1]: the fp32 mean may differ from 0.1 by one ulp; the advantage is still exactly 0."""
    adv = group_advantages(torch.tensor([0.1, 0.1, 0.1]), group_size=3)
    assert torch.equal(adv, torch.zeros(3))


def test_group_advantages_validates_group_size():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(5), group_size=2)


def test_gspo_sequence_ratio_hand_computed():
    """Row 0: new - old = [0.1, 0.3, (99 masked)] -> mean 0.2 -> s = e^0.2 = 1.221403.
    Row 1: new - old = [-0.1, -0.1, -0.1] -> s = e^-0.1 = 0.904837.
    """
    new = torch.tensor([[0.1, 0.3, 99.0], [-0.1, -0.1, -0.1]])
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    out = gspo_objective(new, old, mask, torch.tensor([1.0, 0.0]), group_size=2)
    assert_close(out.ratios, torch.tensor([1.221403, 0.904837]), atol=1e-6, rtol=0)


def test_gspo_objective_hand_computed_clip_on_both_sides():
    """clip_low = clip_high = 0.2 (ratio range [0.8, 1.2]), eps = 0, one group of G = 4.
    Rewards [1, 1, 0, 0]: mean 0.5, std 0.5 -> A = [+1, +1, -1, -1].
    Log-ratios (every token) [+0.3, -0.3, +0.3, -0.3] -> s = [1.349859, 0.740818, 1.349859, 0.740818].

    row 0, A>0, s>1.2: min(1.349859, 1.2) = 1.2            clipped (no gradient)
    row 1, A>0, s<0.8: min(0.740818, 0.8) = 0.740818       unclipped (the min keeps the low side)
    row 2, A<0, s>1.2: min(-1.349859, -1.2) = -1.349859    unclipped (pessimistic side)
    row 3, A<0, s<0.8: min(-0.740818, -0.8) = -0.8         clipped (no gradient)
    J = (1.2 + 0.740818 - 1.349859 - 0.8) / 4 = -0.052260, loss = +0.052260, clip fraction 2/4.
    """
    new = torch.tensor([[0.3, 0.3], [-0.3, -0.3], [0.3, 0.3], [-0.3, -0.3]], requires_grad=True)
    old = torch.zeros(4, 2)
    mask = torch.ones(4, 2, dtype=torch.bool)
    out = gspo_objective(
        new, old, mask, torch.tensor([1.0, 1.0, 0.0, 0.0]), group_size=4, clip_low=0.2, clip_high=0.2, eps=0.0
    )
    assert_close(out.advantages, torch.tensor([1.0, 1.0, -1.0, -1.0]))
    assert_close(out.loss, torch.tensor(0.0522601), atol=1e-6, rtol=0)
    assert_close(out.clip_fraction, torch.tensor(0.5))
    assert_close(out.mean_reward, torch.tensor(0.5))

    out.loss.backward()
    # Unclipped rows: d loss / d new_t = -(1/N) * A * s / |y| ; clipped rows: 0.
    # row 1: -(1/4) * 1 * 0.740818 / 2 = -0.092602 ; row 2: -(1/4) * (-1) * 1.349859 / 2 = +0.168732
    expected = torch.tensor([[0.0, 0.0], [-0.092602, -0.092602], [0.168732, 0.168732], [0.0, 0.0]])
    assert_close(new.grad, expected, atol=1e-6, rtol=0)


def test_gspo_on_policy_ratio_is_one_and_gradient_is_advantage_weighted_mean_logprob():
    """On-policy (old = new): s_i = exp(0) = 1 exactly, nothing is clipped, and
    d loss / d new[i, t] = -(1/N) * A_i / |y_i| on valid tokens, 0 on padding; old gets no gradient.
    """
    torch.manual_seed(0)
    num_samples, length, group = 6, 5, 3
    new = (-torch.rand(num_samples, length) * 4).requires_grad_(True)
    old = new.detach().clone().requires_grad_(True)
    lengths = torch.tensor([5, 3, 1, 4, 2, 5])
    mask = torch.arange(length)[None, :] < lengths[:, None]  # (N, T)
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, -1.0])

    out = gspo_objective(new, old, mask, rewards, group_size=group)
    assert torch.equal(out.ratios, torch.ones(num_samples))
    assert out.clip_fraction.item() == 0.0
    out.loss.backward()

    adv = group_advantages(rewards, group)
    expected = -(1.0 / num_samples) * (adv / lengths)[:, None] * mask
    assert_close(new.grad, expected)
    assert old.grad is None
    # On-policy the objective value is mean(A) = 0 (advantages are zero-mean per group).
    assert_close(out.loss, torch.tensor(0.0), atol=1e-7, rtol=0)


def test_gspo_equal_rewards_give_zero_loss_and_gradient():
    """A group whose rewards are all equal has A = 0: no loss and no gradient, even off-policy."""
    new = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -2.0], [-0.4, -2.9]])
    out = gspo_objective(new, old, torch.ones(2, 2, dtype=torch.bool), torch.tensor([0.7, 0.7]), group_size=2)
    assert torch.equal(out.advantages, torch.zeros(2))
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert torch.equal(new.grad, torch.zeros(2, 2))


def test_gspo_default_clip_range_is_asymmetric():
    """Defaults: ratio range [1 - 3e-4, 1 + 4e-4] = [0.9997, 1.0004]. Two groups of G = 2, rewards [1, 0]
    each, so A = [+1, -1, +1, -1] (up to eps). One token per row, log-ratios and s = e^x:

    row 0, A>0, s = e^+0.00035 = 1.00035 <= 1.0004   kept     (a symmetric 3e-4 range would clip it)
    row 1, A<0, s = e^-0.00025 = 0.99975 >= 0.9997   kept
    row 2, A>0, s = e^+0.00045 = 1.00045 >  1.0004   clipped  (no gradient)
    row 3, A<0, s = e^-0.00035 = 0.99965 <  0.9997   clipped  (a symmetric 4e-4 range would keep it)
    clip fraction 2/4.
    """
    new = torch.tensor([[0.00035], [-0.00025], [0.00045], [-0.00035]], requires_grad=True)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out = gspo_objective(new, torch.zeros(4, 1), torch.ones(4, 1, dtype=torch.bool), rewards, group_size=2)
    assert_close(out.clip_fraction, torch.tensor(0.5))
    out.loss.backward()
    grad = new.grad[:, 0]
    assert grad[0] < 0 and grad[1] > 0  # -(1/4) * A * s: pushes row 0 up, row 1 down
    assert grad[2].item() == 0.0 and grad[3].item() == 0.0


def test_gspo_validates_shapes():
    x = torch.zeros(4, 3)
    m = torch.ones(4, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="same"):
        gspo_objective(x, torch.zeros(4, 2), m, torch.zeros(4), group_size=2)
    with pytest.raises(ValueError, match="rewards"):
        gspo_objective(x, x, m, torch.zeros(3), group_size=2)
    with pytest.raises(ValueError, match="multiple of group_size"):
        gspo_objective(x, x, m, torch.zeros(4), group_size=3)
