"""Speech token grouping (eq. 3) and ungrouping (eqs. 4-5): 25 Hz speech <-> 5 Hz LLM steps."""

from __future__ import annotations

import math

import torch
from torch import nn


def group_tokens(tokens: list[int] | torch.Tensor, group_size: int, pad_id: int) -> torch.Tensor:
    """Splits a 25 Hz token sequence into groups of k, padding the last group with `pad_id`.

    Args:
        tokens: (T,) speech tokens.
        group_size: k.
        pad_id: speech pad token.
    Returns:
        LongTensor (ceil(T / k), k).
    """
    t = torch.as_tensor(tokens, dtype=torch.long).flatten()
    n_groups = math.ceil(t.numel() / group_size)
    out = torch.full((n_groups * group_size,), pad_id, dtype=torch.long)
    out[: t.numel()] = t
    return out.view(n_groups, group_size)  # (T/k, k)


class SpeechGrouping(nn.Module):
    """Embeds k consecutive speech tokens and maps them to one LLM input vector.

    eq. (3): g_i = Linear(s_{ik} || ... || s_{(i+1)k-1}) for grouping="concat"; grouping="mean"
    averages the k embeddings before the Linear (Fun-Audio-Chat).
    """

    def __init__(
        self,
        speech_vocab_total: int,
        embed_dim: int,
        group_size: int,
        out_dim: int,
        grouping: str = "concat",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.group_size = group_size
        self.grouping = grouping
        self.embed = nn.Embedding(speech_vocab_total, embed_dim, device=device, dtype=dtype)
        in_dim = embed_dim * group_size if grouping == "concat" else embed_dim
        self.proj = nn.Linear(in_dim, out_dim, device=device, dtype=dtype)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """(..., k) speech tokens -> (..., out_dim)."""
        e = self.embed(groups)  # (..., k, d_se)
        e = e.flatten(-2) if self.grouping == "concat" else e.mean(dim=-2)  # (..., k*d_se) | (..., d_se)
        return self.proj(e)


class Ungrouping(nn.Module):
    """eqs. (4)-(5): h_ug = W_p h_L, then split in time into k vectors of width d_srh."""

    def __init__(self, llm_hidden: int, srh_hidden: int, group_size: int, device=None, dtype=None):
        super().__init__()
        self.group_size = group_size
        self.srh_hidden = srh_hidden
        self.proj = nn.Linear(llm_hidden, group_size * srh_hidden, device=device, dtype=dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d_llm) -> (..., k, d_srh)."""
        h = self.proj(hidden)  # (..., k*d_srh)
        return h.view(*hidden.shape[:-1], self.group_size, self.srh_hidden)
