"""Core-Cocktail merge (paper §3.3, eq. "M_r <- alpha M_1 + (1 - alpha) M_0"; DESIGN §8).

Stage 1 of Core-Cocktail fine-tunes the whole DrVoice model M1 at a high learning rate; the merge then
interpolates its shared LLM back towards the base LLM M0 (Qwen2.5-*-Instruct) before stage 2 resumes
at a small learning rate. A smaller alpha keeps more of the base LLM (the paper's appendix A uses
alpha = 0, Fun-Audio-Chat's report 0.5).

M1 is the full DrVoice state dict, M0 only the base LLM's, so the rules are (DESIGN §8):

- a parameter present in both with the same shape is interpolated (in fp32, cast back to M1's dtype);
- a parameter only in M1 (speech encoder, adapter, SRH, speech embeddings, grouping / ungrouping
  projections) keeps M1's values;
- a resized vocabulary (M1 has more rows along dim 0, other dims equal: ``embed_tokens`` and
  ``lm_head`` after adding ``<|sil|>``, ``<|audio_bos|>``, ...) merges the first M0 rows and keeps
  M1's extra rows (the new tokens have no base counterpart);
- any other shape mismatch is an error;
- M0 parameters nothing in M1 maps to are reported, never added.

Tied weights (``lm_head.weight`` sharing ``embed_tokens.weight``): each key is merged independently.
When M0 and M1 are both tied the two results are equal; the model's ``load_state_dict`` then writes the
shared tensor twice with the same values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

KeyMap = Callable[[str], "str | None"]  # M1 key -> matching M0 key, or None when M1-only


@dataclass
class MergeReport:
    """What :func:`merge_state_dicts` did with each key (M1 keys, except ``unused_m0``)."""

    merged: list[str] = field(default_factory=list)  # interpolated over the whole tensor
    kept_from_m1: list[str] = field(default_factory=list)  # no M0 counterpart (or not floating point)
    resized: list[str] = field(default_factory=list)  # first M0 rows interpolated, extra rows from M1
    unused_m0: list[str] = field(default_factory=list)  # M0 keys no M1 key maps to (not in the output)

    @property
    def num_merged(self) -> int:
        return len(self.merged)

    @property
    def num_kept_from_m1(self) -> int:
        return len(self.kept_from_m1)

    @property
    def num_resized(self) -> int:
        return len(self.resized)

    @property
    def num_unused_m0(self) -> int:
        return len(self.unused_m0)

    def summary(self) -> str:
        """One line for the logs, e.g. ``merged 290, resized 2, kept from M1 412, unused M0 0``."""
        return (
            f"merged {self.num_merged}, resized {self.num_resized}, "
            f"kept from M1 {self.num_kept_from_m1}, unused M0 {self.num_unused_m0}"
        )


def prefix_key_map(m1_prefix: str, m0_prefix: str = "") -> KeyMap:
    """Key map for an M1 that nests the LLM under a prefix.

    ``prefix_key_map("llm.")`` maps ``"llm.model.layers.0.mlp.up_proj.weight"`` to
    ``"model.layers.0.mlp.up_proj.weight"`` and every key outside ``llm.`` (encoder, SRH, ...) to None.

    Args:
        m1_prefix: prefix of the shared-LLM keys in M1.
        m0_prefix: prefix that replaces it to form the M0 key.

    Returns:
        A function usable as ``key_map`` in :func:`merge_state_dicts`.
    """

    def key_map(m1_key: str) -> str | None:
        if not m1_key.startswith(m1_prefix):
            return None
        return m0_prefix + m1_key[len(m1_prefix) :]

    return key_map


def interpolate(m1: Tensor, m0: Tensor, alpha: float) -> Tensor:
    """``alpha * m1 + (1 - alpha) * m0`` computed in (at least) fp32, returned in ``m1``'s dtype.

    Exact at the ends for finite values: alpha = 1 returns m1, alpha = 0 returns m0 (rounded to m1's
    dtype when M0 is stored wider).

    Args:
        m1: tensor of the fine-tuned model.
        m0: tensor of the base model, same shape (moved to ``m1``'s device).
        alpha: interpolation weight in [0, 1].

    Returns:
        New tensor with ``m1``'s shape, dtype and device.
    """
    compute_dtype = torch.promote_types(m1.dtype, torch.float32)  # fp32, or fp64 if M1 is fp64
    m0 = m0.to(device=m1.device, dtype=compute_dtype)
    return (alpha * m1.to(compute_dtype) + (1.0 - alpha) * m0).to(m1.dtype)


def merge_state_dicts(
    m1: Mapping[str, Tensor],
    m0: Mapping[str, Tensor],
    alpha: float,
    *,
    key_map: KeyMap | None = None,
) -> tuple[dict[str, Tensor], MergeReport]:
    """Core-Cocktail merge ``M_r = alpha * M1 + (1 - alpha) * M0`` of two state dicts (paper §3.3).

    Args:
        m1: stage-1 DrVoice state dict (every key of the result comes from here).
        m0: base-LLM state dict (e.g. Qwen2.5-7B-Instruct's ``model.safetensors``).
        alpha: weight of M1 in [0, 1]; 0 restores the base LLM on shared parameters.
        key_map: maps an M1 key to its M0 key, or None for an M1-only parameter. Default: the same key
            (when it exists in M0). A returned key absent from M0 also counts as M1-only.

    Returns:
        ``(merged, report)``: ``merged`` has exactly M1's keys in M1's order, dtypes and shapes.
        Tensors kept from M1 are the M1 tensors themselves (no copy); merged ones are new tensors.

    Raises:
        ValueError: alpha outside [0, 1], or an M1/M0 pair whose shapes differ other than by M1 having
            more rows along dim 0 (the error names both keys).
    """
    if not 0.0 <= alpha <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    key_map = key_map if key_map is not None else (lambda key: key)

    merged: dict[str, Tensor] = {}
    report = MergeReport()
    used_m0: set[str] = set()
    with torch.no_grad():
        for key, w1 in m1.items():
            key0 = key_map(key)
            if key0 is None or key0 not in m0:
                merged[key] = w1
                report.kept_from_m1.append(key)
                continue
            w0 = m0[key0]
            used_m0.add(key0)
            if not (w1.is_floating_point() and w0.is_floating_point()):
                # Integer / bool buffers (position ids, counters) are not interpolated.
                merged[key] = w1
                report.kept_from_m1.append(key)
            elif w1.shape == w0.shape:
                merged[key] = interpolate(w1, w0, alpha)
                report.merged.append(key)
            elif w1.dim() >= 1 and w1.shape[1:] == w0.shape[1:] and w1.shape[0] > w0.shape[0]:
                # Resized vocabulary: rows [0, V0) are the base tokens, rows [V0, V1) the added ones.
                num_old = w0.shape[0]
                out = w1.clone()
                out[:num_old] = interpolate(w1[:num_old], w0, alpha)
                merged[key] = out
                report.resized.append(key)
            else:
                raise ValueError(
                    f"cannot merge M1 {key!r} {tuple(w1.shape)} with M0 {key0!r} {tuple(w0.shape)}: "
                    "shapes differ other than by extra vocabulary rows in M1"
                )
    report.unused_m0 = [key0 for key0 in m0 if key0 not in used_m0]
    logger.info("Core-Cocktail merge (alpha=%g): %s", alpha, report.summary())
    if report.unused_m0:
        logger.warning(
            "%d M0 keys have no M1 counterpart, e.g. %s", report.num_unused_m0, report.unused_m0[:3]
        )
    return merged, report
