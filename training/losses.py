"""Sequence-level losses of the DrVoice training suite: token log-probs, DPO and GSPO.

trl's DPO / GRPO trainers cannot score the Speech Refined Head (SRH), so DrVoice computes its own
sequence log-probabilities and feeds them to the small, pure losses below (DESIGN §8, paper
appendix C "Reinforcement learning": DPO for speech comprehension and instruction following, GSPO on
mathematical problems).

In DrVoice a reply has two token streams decoded from the same LLM states: the text stream (text
head, 5 Hz) and the speech stream (SRH, 25 Hz). The log-probability of a reply y under a policy is

    log pi(y) = sum_t log p_text(t_t | ...) + sum_j log p_srh(s_j | ...)

over the reply's assistant positions only (the same positions that carry the CE loss of eq. 7). The
recipes call :func:`masked_token_logprobs` once per head, reduce each with :func:`sequence_logprob`,
and add the two (B,) results before calling :func:`dpo_loss` / :func:`gspo_objective`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # target value of positions that carry no loss (prompt, padding), as in HF


# ----------------------------------------------------------------------------------------------
# token and sequence log-probabilities
# ----------------------------------------------------------------------------------------------


def masked_token_logprobs(logits: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Log-probability of each target token, 0 where the target is ignored.

    The logits and targets must already be aligned (position t of ``logits`` predicts
    ``targets[:, t]``); the caller does the usual one-position shift. ``log_softmax`` runs in fp32
    (bf16 log-probs are too coarse for DPO / GSPO ratios, whose signal is a small difference of
    two large sums).

    Args:
        logits: (B, T, V) unnormalised scores of any float dtype.
        targets: (B, T) int64 token ids, ``ignore_index`` where no loss is taken.
        ignore_index: target value marking ignored positions.

    Returns:
        (B, T) fp32 log-probabilities ``log softmax(logits)[b, t, targets[b, t]]``, exactly 0.0 at
        ignored positions.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not align")
    valid = targets != ignore_index  # (B, T)
    safe_targets = targets.masked_fill(~valid, 0)  # any in-range id; masked out below
    logprobs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V) fp32
    token_logprobs = logprobs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return token_logprobs.masked_fill(~valid, 0.0)


def sequence_logprob(
    token_logprobs: Tensor, mask: Tensor, reduction: Literal["sum", "mean"] = "sum"
) -> Tensor:
    """Reduce per-token log-probs to one number per sequence.

    ``"sum"`` is the sequence log-likelihood ``log pi(y)`` used by DPO; ``"mean"`` is the
    length-normalised log-likelihood ``(1/|y|) log pi(y)`` (GSPO's ratio uses it). Masked positions
    are ignored even if they hold non-finite values.

    Args:
        token_logprobs: (B, T) log-probs, e.g. from :func:`masked_token_logprobs`.
        mask: (B, T) bool (or 0/1) mask, true on the reply tokens that count.
        reduction: ``"sum"`` or ``"mean"`` over the valid tokens; a row with no valid token gives 0.

    Returns:
        (B,) tensor of the dtype of ``token_logprobs``.
    """
    if token_logprobs.shape != mask.shape:
        raise ValueError(f"token_logprobs {tuple(token_logprobs.shape)} and mask {tuple(mask.shape)} differ")
    mask = mask.bool()
    total = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs)).sum(dim=-1)  # (B,)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / mask.sum(dim=-1).clamp(min=1).to(total.dtype)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


# ----------------------------------------------------------------------------------------------
# DPO
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPOOutput:
    """Result of :func:`dpo_loss`. Everything but ``loss`` is detached (for logging)."""

    loss: Tensor  # () mean over the batch of -log sigmoid(beta * margin), differentiable
    chosen_rewards: Tensor  # (B,) beta * (log pi(y_w) - log ref(y_w))
    rejected_rewards: Tensor  # (B,) beta * (log pi(y_l) - log ref(y_l))
    reward_accuracy: Tensor  # () fraction of pairs with chosen reward > rejected reward (ties count 0)
    reward_margin: Tensor  # () mean of chosen_rewards - rejected_rewards


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
) -> DPOOutput:
    """Direct Preference Optimisation loss (Rafailov et al., 2023; DESIGN §8).

    ``loss = -log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))))``,
    averaged over the batch, with implicit rewards ``r = beta * (log pi(y) - log ref(y))``.

    In DrVoice each sequence log-prob is the sum of the text-head and SRH log-probs over the reply
    (module docstring); the caller adds them before calling this function. The reference
    log-probs are constants (computed under ``torch.no_grad`` by the frozen reference model) and are
    detached here in case they are not.

    Args:
        policy_chosen_logps: (B,) log pi(y_w), differentiable.
        policy_rejected_logps: (B,) log pi(y_l), differentiable.
        ref_chosen_logps: (B,) log ref(y_w).
        ref_rejected_logps: (B,) log ref(y_l).
        beta: inverse temperature of the implicit reward, > 0 (0.1 is the usual default).

    Returns:
        :class:`DPOOutput`.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps)}
    shapes |= {tuple(t.shape) for t in (ref_chosen_logps, ref_rejected_logps)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"all four log-prob tensors must have the same (B,) shape, got {sorted(shapes)}")

    chosen_logratio = policy_chosen_logps.float() - ref_chosen_logps.detach().float()  # (B,)
    rejected_logratio = policy_rejected_logps.float() - ref_rejected_logps.detach().float()  # (B,)
    margin = beta * (chosen_logratio - rejected_logratio)  # (B,)
    loss = -F.logsigmoid(margin).mean()  # logsigmoid is stable for large |margin|

    chosen_rewards = (beta * chosen_logratio).detach()
    rejected_rewards = (beta * rejected_logratio).detach()
    return DPOOutput(
        loss=loss,
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        reward_accuracy=(chosen_rewards > rejected_rewards).float().mean(),
        reward_margin=(chosen_rewards - rejected_rewards).mean(),
    )


# ----------------------------------------------------------------------------------------------
# GSPO
# ----------------------------------------------------------------------------------------------


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6) -> Tensor:
    """Group-normalised advantages ``A_i = (r_i - mean_group(r)) / (std_group(r) + eps)``.

    Rows ``[g * G, (g + 1) * G)`` are the G samples of prompt g. ``std`` is the population standard
    deviation (no Bessel correction: the advantages of a group then have unit variance; trl's GRPO
    uses the corrected one, a factor sqrt((G-1)/G) apart). A group whose rewards are all equal carries
    no preference and gets advantage exactly 0 (not a rounding residue divided by ``eps``).

    Args:
        rewards: (N,) scalar reward of each sample, N = num_prompts * group_size.
        group_size: G, samples per prompt.
        eps: added to the std to avoid division by ~0.

    Returns:
        (N,) fp32 advantages, detached.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be (N,), got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"number of samples {rewards.numel()} is not a multiple of group_size {group_size}")
    grouped = rewards.detach().float().view(-1, group_size)  # (N / G, G)
    mean = grouped.mean(dim=1, keepdim=True)  # (N / G, 1)
    std = grouped.std(dim=1, unbiased=False, keepdim=True)  # (N / G, 1)
    advantages = (grouped - mean) / (std + eps)
    all_equal = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # (N / G, 1)
    advantages = advantages.masked_fill(all_equal, 0.0)
    return advantages.view(-1)


@dataclass(frozen=True)
class GSPOOutput:
    """Result of :func:`gspo_objective`. Everything but ``loss`` is detached (for logging)."""

    loss: Tensor  # () -objective, to minimise, differentiable w.r.t. the new log-probs
    ratios: Tensor  # (N,) sequence importance ratios s_i
    advantages: Tensor  # (N,) group-normalised advantages A_i
    clip_fraction: Tensor  # () fraction of samples where the clipped term is the min (no gradient)
    mean_reward: Tensor  # () mean of the rewards


def gspo_objective(
    new_token_logps: Tensor,
    old_token_logps: Tensor,
    mask: Tensor,
    rewards: Tensor,
    group_size: int,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    eps: float = 1e-6,
) -> GSPOOutput:
    """Group Sequence Policy Optimisation (Zheng et al., 2025; DESIGN §8), as a loss to minimise.

    For each sampled reply y_i (G replies per prompt)::

        s_i = exp( (1/|y_i|) * sum_t (log pi(y_i,t) - log pi_old(y_i,t)) )   # sequence ratio
        A_i = (r_i - mean_group(r)) / (std_group(r) + eps)                     # group_advantages
        J   = mean_i min( s_i * A_i, clip(s_i, 1 - clip_low, 1 + clip_high) * A_i )
        loss = -J                                                              # no KL term

    The min makes the objective pessimistic: with A_i > 0 the ratio is clipped above (s_i >
    1 + clip_high gives no gradient), with A_i < 0 below (s_i < 1 - clip_low gives no gradient);
    the other side stays unclipped. On-policy (new == old) every s_i is exactly 1 and the gradient
    w.r.t. a valid token log-prob is ``-(1/N) * A_i / |y_i|``, the advantage-weighted gradient of
    the length-normalised log-likelihood. The ranges are tiny (3e-4 / 4e-4) because s_i is a
    per-token geometric mean.

    In DrVoice the token log-probs of a reply are its text-head tokens and its SRH speech tokens
    (concatenate both streams along T with their masks; |y_i| counts both).

    Args:
        new_token_logps: (N, T) log-probs of the sampled tokens under the current policy, differentiable.
        old_token_logps: (N, T) the same under the sampling policy pi_old (detached here).
        mask: (N, T) bool, true on the reply tokens; masked positions may hold any value.
        rewards: (N,) scalar reward of each reply; rows of one prompt are consecutive.
        group_size: G, replies per prompt.
        clip_low: lower clip range, ratio floor is ``1 - clip_low``.
        clip_high: upper clip range, ratio ceiling is ``1 + clip_high``.
        eps: added to the group std.

    Returns:
        :class:`GSPOOutput`.
    """
    if new_token_logps.shape != old_token_logps.shape or new_token_logps.shape != mask.shape:
        raise ValueError(
            f"new {tuple(new_token_logps.shape)}, old {tuple(old_token_logps.shape)} and mask "
            f"{tuple(mask.shape)} must have the same (N, T) shape"
        )
    if new_token_logps.dim() != 2 or rewards.shape != new_token_logps.shape[:1]:
        raise ValueError(f"rewards {tuple(rewards.shape)} must be (N,) for log-probs {tuple(mask.shape)}")
    if not (0 <= clip_low < 1 and clip_high >= 0):
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")

    mask = mask.bool()
    log_ratio = new_token_logps.float() - old_token_logps.detach().float()  # (N, T)
    log_ratio = torch.where(mask, log_ratio, torch.zeros_like(log_ratio))  # ignore padding values
    lengths = mask.sum(dim=-1).clamp(min=1)  # (N,) |y_i|
    ratios = torch.exp(log_ratio.sum(dim=-1) / lengths)  # (N,) s_i

    advantages = group_advantages(rewards, group_size, eps)  # (N,)
    unclipped = ratios * advantages
    clipped = ratios.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    objective = torch.minimum(unclipped, clipped).mean()

    # Samples where the min picks the clipped term, i.e. whose gradient is cut.
    is_clipped = ((advantages > 0) & (ratios > 1.0 + clip_high)) | (
        (advantages < 0) & (ratios < 1.0 - clip_low)
    )
    return GSPOOutput(
        loss=-objective,
        ratios=ratios.detach(),
        advantages=advantages,
        clip_fraction=is_clipped.float().mean(),
        mean_reward=rewards.detach().float().mean(),
    )
