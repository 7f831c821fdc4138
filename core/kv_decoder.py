"""A lean incremental forward for Qwen2 / Llama decoders, for generation one sequence at a time.

At the demo's size (4 × 256 LLM, 2 × 256 SRH) a transformers forward of one new position costs
several milliseconds, nearly all of it Python: module dispatch, cache objects, mask and rope
bookkeeping. Generation makes six such calls per 200 ms of speech (one LLM step, k = 5 SRH steps),
so that overhead is most of the real-time factor. `KVDecoder` computes the same function (same
parameters, read in place, so a model being trained is seen as it is now) with plain tensor ops and
a preallocated key/value cache that grows by doubling. Only what it reproduces exactly is taken:
`unsupported_reason(model)` names anything else (rope scaling, sliding windows, q/k norms, other
activations, other architectures), and the generator then keeps the transformers path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("qwen2", "llama")


def unsupported_reason(model: nn.Module) -> str | None:
    """Why `KVDecoder` cannot run this transformers base model (None: it can).

    Args:
        model: a transformers base model (`Qwen2Model`, `LlamaModel`: has `layers`, `norm`,
            `rotary_emb`).
    """
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in ARCHITECTURES:
        return f"architecture {getattr(cfg, 'model_type', None)!r} is not one of {ARCHITECTURES}"
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rope type {rope.get('rope_type')!r} (only the default rope is reproduced)"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r} (only silu)"
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return "sliding-window layers"
    if getattr(model.rotary_emb, "attention_scaling", 1.0) != 1.0:
        return "scaled rope attention"
    attn = model.layers[0].self_attn
    if any(hasattr(attn, name) for name in ("q_norm", "k_norm")):
        return "q/k norms"
    return None


class _GrowingCache:
    """Keys and values of every layer, (layers, 1, kv_heads, capacity, head_dim), doubling when full."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, device, dtype, capacity: int = 256):
        self.shape = (layers, 1, kv_heads, capacity, head_dim)
        self.keys = torch.empty(self.shape, device=device, dtype=dtype)
        self.values = torch.empty(self.shape, device=device, dtype=dtype)

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def reserve(self, length: int) -> None:
        if length <= self.capacity:
            return
        capacity = self.capacity
        while capacity < length:
            capacity *= 2
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty(*old.shape[:3], capacity, old.shape[4])
            new[:, :, :, : old.shape[3]] = old
            setattr(self, name, new)


class KVDecoder:
    """Incremental forward of one sequence through a Qwen2 / Llama base model.

    Call it with the input embeddings of the new positions, (1, n, hidden); it returns the final
    (normed) hidden states of those positions, as `model(inputs_embeds=..., cache=...)
    .last_hidden_state` would after the same earlier calls.

    Args:
        model: the base model (its parameters are read at every call, never copied).
        capacity: positions the cache holds before it first doubles.
    """

    def __init__(self, model: nn.Module, capacity: int = 256):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"KVDecoder cannot run this model: {reason}")
        cfg = model.config
        self.model = model
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        weight = model.norm.weight
        self.cache = _GrowingCache(
            len(model.layers), self.kv_heads, self.head_dim, weight.device, weight.dtype, capacity
        )
        self.length = 0
        self._rope_cos = self._rope_sin = None  # (capacity, head_dim), the sine signed for the half swap

    def _rope(self, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rope_cos is None or self._rope_cos.shape[0] < start + n:
            capacity = max(self.cache.capacity, start + n)
            inv_freq = self.model.rotary_emb.inv_freq
            pos = torch.arange(capacity, device=inv_freq.device, dtype=torch.float)
            freqs = pos[:, None] * inv_freq.float()[None, :]
            dtype = self.model.norm.weight.dtype
            self._rope_cos = torch.cat((freqs, freqs), dim=-1).cos().to(dtype)
            # rotate_half(x) * sin == roll(x, half) * cat(-sin, sin) for sin = cat(s, s)
            self._rope_sin = torch.cat((-freqs, freqs), dim=-1).sin().to(dtype)
        return self._rope_cos[start : start + n], self._rope_sin[start : start + n]

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # as transformers' RMSNorm (fp32 statistics); F.rms_norm is several times slower at this size
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    @torch.inference_mode()
    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds: (1, n, hidden) for the next n positions -> (1, n, hidden) final hidden states."""
        if embeds.dim() != 3 or embeds.shape[0] != 1:
            raise ValueError(f"KVDecoder takes one sequence shaped (1, n, hidden), got {tuple(embeds.shape)}")
        n, start = embeds.shape[1], self.length
        end = start + n
        self.cache.reserve(end)
        cos, sin = self._rope(start, n)  # (n, head_dim)
        half = self.head_dim // 2
        mask = None
        if n > 1 and start > 0:  # new positions see the whole past and themselves causally
            key_pos = torch.arange(end, device=embeds.device)
            mask = key_pos[None, :] <= (start + torch.arange(n, device=embeds.device))[:, None]
        gqa = self.kv_heads != self.heads
        x = embeds
        for i, layer in enumerate(self.model.layers):
            attn = layer.self_attn
            h = self._norm(x, layer.input_layernorm.weight)
            q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(1, n, self.heads, self.head_dim)
            k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(1, n, self.kv_heads, self.head_dim)
            v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(1, n, self.kv_heads, self.head_dim)
            q = (q.transpose(1, 2) * cos) + (q.transpose(1, 2).roll(half, dims=-1) * sin)
            k = (k.transpose(1, 2) * cos) + (k.transpose(1, 2).roll(half, dims=-1) * sin)
            keys, values = self.cache.keys[i], self.cache.values[i]
            keys[:, :, start:end] = k
            values[:, :, start:end] = v.transpose(1, 2)
            out = F.scaled_dot_product_attention(
                q,
                keys[:, :, :end],
                values[:, :, :end],
                attn_mask=mask,
                is_causal=mask is None and n > 1,
                enable_gqa=gqa,
            )
            out = out.transpose(1, 2).reshape(1, n, self.heads * self.head_dim)
            x = x + F.linear(out, attn.o_proj.weight, attn.o_proj.bias)
            mlp = layer.mlp
            h = self._norm(x, layer.post_attention_layernorm.weight)
            gate = F.linear(h, mlp.gate_proj.weight, mlp.gate_proj.bias)
            up = F.linear(h, mlp.up_proj.weight, mlp.up_proj.bias)
            x = x + F.linear(F.silu(gate) * up, mlp.down_proj.weight, mlp.down_proj.bias)
        self.length = end
        return self._norm(x, self.model.norm.weight)
