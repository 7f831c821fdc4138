"""A lean incremental forward for Qwen2 / Llama decoders, for generation one sequence at a time.

At the demo's size (4 × 256 LLM, 2 × 256 SRH) a transformers forward of one new position costs
3–7 ms on a 2-core CPU, a third to a half of it Python (module dispatch, cache objects, mask and
rope bookkeeping) and the rest matrix-vector products bound by memory. Generation makes six such
calls per 200 ms of speech (one LLM step, k = 5 SRH steps). `KVDecoder` computes the same function with
plain tensor ops, one matrix product for q/k/v and one for gate/up (stacked copies of the weights,
remade when a parameter has changed, so a model being trained is seen as it is now) and a
preallocated key/value cache that grows by doubling. Only what it reproduces exactly is taken:
`unsupported_reason(model)` names anything else (rope scaling, sliding windows, q/k norms, other
activations, other architectures), and the generator then keeps the transformers path.

`matmul_dtype` keeps half-precision copies of the projections and multiplies one-position steps
in that precision (norms, rope, attention and the residual stream stay in the model's dtype). Those
matrix-vector products are bound by memory: on the 2-core CPU float16 copies of the demo's weights
halve the bytes read, and a product inside decoding took ~115 µs against ~205 µs in fp32
(`benchmarks/decode_speed.py`: T2M real-time factor 0.156 → 0.120). A prompt's matrix-matrix
products are bound by arithmetic, where half precision is slower on a CPU, so they stay in the
parameters' dtype.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("qwen2", "llama")
STACK_LIMIT_BYTES = 256 * 2**20  # the demo's LLM layers take 17 MB, Qwen2.5-0.5B's ~1.4 GB (fp32)
MATMUL_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def matmul_dtype(name: str, model: nn.Module) -> torch.dtype | None:
    """The precision of the lean path's products for a setting name (None: the parameters' own).

    Args:
        name: "auto" (float16 copies on a CPU with several torch threads when the parameters are
            float32, else none), "fp32", "fp16" or "bf16". With one thread the float16 products,
            whose casts cost arithmetic, gained nothing on the demo (T2M real-time factor 0.147
            against 0.135 for fp32; 0.142 against 0.141 with the audio worker).
        model: the base model (its parameters' device and dtype decide "auto").
    """
    if name == "auto":
        p = next(model.parameters())
        cpu_fp32 = p.device.type == "cpu" and p.dtype == torch.float32
        return torch.float16 if cpu_fp32 and torch.get_num_threads() > 1 else None
    if name not in MATMUL_DTYPES:
        raise ValueError(f"matmul precision must be 'auto' or one of {sorted(MATMUL_DTYPES)}, got {name!r}")
    return MATMUL_DTYPES[name]


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
    """Keys and values of every layer, (layers, rows, kv_heads, capacity, head_dim), doubling when full.

    Zero-filled: a row shorter than the others reads masked positions past its end, and the
    attention's zero weight times an uninitialised NaN would still be NaN.
    """

    def __init__(
        self, layers: int, kv_heads: int, head_dim: int, device, dtype, capacity: int = 256, rows: int = 1
    ):
        self.shape = (layers, rows, kv_heads, capacity, head_dim)
        self.keys = torch.zeros(self.shape, device=device, dtype=dtype)
        self.values = torch.zeros(self.shape, device=device, dtype=dtype)

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
            new = old.new_zeros(*old.shape[:3], capacity, old.shape[4])
            new[:, :, :, : old.shape[3]] = old
            setattr(self, name, new)

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.keys.device)
        self.keys = self.keys.index_select(1, index)
        self.values = self.values.index_select(1, index)


class KVDecoder:
    """Incremental forward of one sequence, or of a few in step, through a Qwen2 / Llama base model.

    Call it with the input embeddings of the new positions, (1, n, hidden); it returns the final
    (normed) hidden states of those positions, as `model(inputs_embeds=..., cache=...)
    .last_hidden_state` would after the same earlier calls.

    With `rows` > 1 it holds that many sequences, each with its own length (a generator's extra
    prompts: other hearings of the user's speech, a text-only twin). `decoder(x, row=r)` advances
    row r alone (its prompt); `decoder(x)` with x (rows, 1, hidden) advances every row by one
    position in one pass (one product per projection for all rows, and the per-call work of norms,
    rope, cache writes and Python shared); `decoder(x, counts=...)` fills padded prompts of
    different lengths in one pass.

    Args:
        model: the base model. The stacked projections are taken when the decoder is made (one
            per reply) and remade from the parameters whenever one of them has changed since.
        capacity: positions the cache holds before it first doubles.
        stack_limit_bytes: stack the projections only when the decoder layers' parameters take at
            most this much memory; larger models run them one by one on the parameters in place.
        matmul_dtype: multiply by copies of the projections in this dtype (activations cast per
            product, results cast back) when one position comes at a time; None or the parameters'
            dtype: the parameters themselves. Needs the stacked path: a model over
            `stack_limit_bytes` keeps its own dtype. Calls with several positions per row (a
            prompt) use the parameters' dtype. Rows stepped together keep `matmul_dtype`: on the
            2-core CPU float16 products of 2-5 rows took 1.7-2.9 ms a step against 4.3-4.4 ms in
            fp32, whose small matrix-matrix products are slow there.
        rows: sequences held (see above).
    """

    def __init__(
        self,
        model: nn.Module,
        capacity: int = 256,
        stack_limit_bytes: int = STACK_LIMIT_BYTES,
        matmul_dtype: torch.dtype | None = None,
        rows: int = 1,
    ):
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
            len(model.layers), self.kv_heads, self.head_dim, weight.device, weight.dtype, capacity, rows
        )
        layer_bytes = sum(p.numel() * p.element_size() for p in model.layers.parameters())
        # one reply's decoder: the parameters do not change meanwhile. A large model's projections
        # are not stacked (the copies would cost memory, and per-call overhead matters less there)
        stacked = layer_bytes <= stack_limit_bytes
        self.matmul_dtype = (matmul_dtype or weight.dtype) if stacked else weight.dtype
        self.weights = _packed(model, self.matmul_dtype) if stacked else [None] * len(model.layers)
        # several positions at once (a prompt) make matrix-matrix products, bound by arithmetic, where
        # half precision is slower on a CPU (demo T2M prompt: 33 ms against 13 ms): they use the
        # parameters' dtype
        self.prefill_weights = (
            _packed(model, weight.dtype) if stacked and self.matmul_dtype != weight.dtype else self.weights
        )
        self.lengths = [0] * rows  # positions each row holds
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
        # RMSNorm with fp32 statistics, as transformers'; the mean square from `vector_norm` takes a
        # third of the time of pow + mean at this size (F.rms_norm is slower still)
        h = x.float()
        inv_rms = torch.linalg.vector_norm(h, dim=-1, keepdim=True).square_().div_(h.shape[-1])
        return weight * (h * inv_rms.add_(self.eps).rsqrt_()).to(x.dtype)

    @property
    def length(self) -> int:
        """Positions held (a single-row decoder)."""
        if len(self.lengths) != 1:
            raise ValueError(f"this decoder holds {len(self.lengths)} rows: read `lengths`")
        return self.lengths[0]

    def keep(self, rows: list[int]) -> None:
        """Drops every row not in `rows`; the kept ones are renumbered in that order."""
        self.cache.keep(rows)
        self.lengths = [self.lengths[r] for r in rows]

    def share(self, row: int, source: KVDecoder, source_row: int, n: int) -> None:
        """Starts the empty `row` with the first n positions of `source`'s `source_row` (a prompt's
        leading text, the same in both: keys and values are copied, not computed again)."""
        if self.lengths[row] != 0 or source.lengths[source_row] < n:
            raise ValueError(f"row {row} holds {self.lengths[row]} positions; the source has fewer than {n}")
        self.cache.reserve(n)
        for mine, theirs in ((self.cache.keys, source.cache.keys), (self.cache.values, source.cache.values)):
            mine[:, row, :, :n] = theirs[:, source_row, :, :n]
        self.lengths[row] = n

    @torch.inference_mode()
    def __call__(
        self, embeds: torch.Tensor, row: int | None = None, counts: list[int] | None = None
    ) -> torch.Tensor:
        """embeds: (rows, n, hidden) for the next n positions of every row, or (1, n, hidden) for `row`
        alone -> the final hidden states of those positions, shaped like `embeds`. `counts`: each
        row's own number of new positions, its first ones (the rest is padding: its outputs mean
        nothing and the row advances by its count only); all n by default."""
        rows = len(self.lengths)
        if row is None:
            targets, sel = list(range(rows)), slice(None)
        elif 0 <= row < rows:
            targets, sel = [row], slice(row, row + 1)
        else:
            raise ValueError(f"row {row} is not one of this decoder's {rows}")
        b = len(targets)
        if embeds.dim() != 3 or embeds.shape[0] != b:
            raise ValueError(
                f"KVDecoder takes {b} sequence(s) shaped ({b}, n, hidden), got {tuple(embeds.shape)}"
            )
        n = embeds.shape[1]
        counts = counts or [n] * b
        if len(counts) != b or not all(0 < c <= n for c in counts):
            raise ValueError(f"counts must give 1 to {n} positions for each of the {b} rows, got {counts}")
        starts = [self.lengths[r] for r in targets]
        ragged = len(set(starts)) > 1 or min(counts) < n
        start, end = starts[0], max(starts) + n
        self.cache.reserve(end)
        mask = None
        if ragged:  # each row at its own positions, seeing its own past only
            pos = torch.tensor(starts, device=embeds.device)[:, None] + torch.arange(n, device=embeds.device)
            cos, sin = (t[pos][:, :, None] for t in self._rope(0, end))  # (b, n, 1, head_dim)
            mask = (torch.arange(end, device=embeds.device) <= pos[:, :, None])[:, None]  # (b, 1, n, end)
            batch = torch.arange(b, device=embeds.device)[:, None]
        else:
            cos, sin = self._rope(start, n)
            cos, sin = cos[:, None], sin[:, None]  # (n, 1, head_dim): broadcast over heads
            if n > 1 and start > 0:  # new positions see the whole past and themselves causally
                key_pos = torch.arange(end, device=embeds.device)
                mask = key_pos[None, :] <= (start + torch.arange(n, device=embeds.device))[:, None]
        heads, kv_heads, hd = self.heads, self.kv_heads, self.head_dim
        half = hd // 2
        gqa = kv_heads != heads
        x = embeds
        packs = self.weights if n == 1 else self.prefill_weights  # one position per row: matrix-vector-like
        for i, (layer, w) in enumerate(zip(self.model.layers, packs, strict=True)):
            h = self._norm(x, layer.input_layernorm.weight)
            qkv = _qkv(h, layer, w).view(b, n, heads + 2 * kv_heads, hd)
            qk = qkv[:, :, : heads + kv_heads]
            qk = qk * cos + qk.roll(half, dims=-1) * sin  # rope on queries and keys at once
            q = qk[:, :, :heads].transpose(1, 2)
            keys, values = self.cache.keys[i][sel], self.cache.values[i][sel]
            if ragged:  # a padded row writes past its end: later positions overwrite that, unread
                keys[batch, :, pos] = qk[:, :, heads:]
                values[batch, :, pos] = qkv[:, :, heads + kv_heads :]
            else:
                keys[:, :, start:end] = qk[:, :, heads:].transpose(1, 2)
                values[:, :, start:end] = qkv[:, :, heads + kv_heads :].transpose(1, 2)
            out = F.scaled_dot_product_attention(
                q,
                keys[:, :, :end],
                values[:, :, :end],
                attn_mask=mask,
                is_causal=mask is None and n > 1,
                enable_gqa=gqa,
            )
            out = out.transpose(1, 2).reshape(b, n, heads * hd)
            mlp = layer.mlp
            if w is None:
                o = layer.self_attn.o_proj
                x = x + F.linear(out, o.weight, o.bias)
                h = self._norm(x, layer.post_attention_layernorm.weight)
                gate, up = (
                    F.linear(h, mlp.gate_proj.weight, mlp.gate_proj.bias),
                    F.linear(h, mlp.up_proj.weight, mlp.up_proj.bias),
                )
                x = x + F.linear(F.silu(gate) * up, mlp.down_proj.weight, mlp.down_proj.bias)
            else:
                x = x + _linear(out, w.o, w.o_bias)
                h = self._norm(x, layer.post_attention_layernorm.weight)
                gate, up = _linear(h, w.gate_up, w.gate_up_bias).chunk(2, dim=-1)
                x = x + _linear(F.silu(gate) * up, w.down, w.down_bias)
        for r, c in zip(targets, counts, strict=True):
            self.lengths[r] += c
        return self._norm(x, self.model.norm.weight)

    def project(self, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """`linear(x)` for a projection outside the base model (an output head), in `matmul_dtype`."""
        if self.matmul_dtype == linear.weight.dtype:
            return linear(x)
        weight, bias = _copy(linear, self.matmul_dtype)
        return _linear(x, weight, bias)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias in the weight's dtype, returned in x's (a no-op cast when they agree)."""
    return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)


class _LayerWeights(NamedTuple):
    """One layer's projections in the product dtype (o / down: the parameters when it is theirs)."""

    qkv: torch.Tensor  # (q + k + v rows, hidden): one matrix product for the three projections
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor  # (2 * intermediate, hidden)
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


def _qkv(h: torch.Tensor, layer: nn.Module, w: _LayerWeights | None) -> torch.Tensor:
    if w is not None:
        return _linear(h, w.qkv, w.qkv_bias)
    a = layer.self_attn
    return torch.cat([F.linear(h, p.weight, p.bias) for p in (a.q_proj, a.k_proj, a.v_proj)], dim=-1)


_PACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {dtype: (key, packs)}
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # linear -> {dtype: (key, (w, b))}


def _cat(*tensors, dtype: torch.dtype):
    return None if any(t is None for t in tensors) else torch.cat(tensors).to(dtype)


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.detach().to(dtype)


def _version_key(params) -> tuple:
    return tuple((p.data_ptr(), p._version) for p in params)


def _remade(store: weakref.WeakKeyDictionary, owner: nn.Module, dtype: torch.dtype, params, build):
    """`build()` cached per (owner, dtype), made again once any of `params` changed or moved.

    The copies remember the version counters and storage of the parameters they were made from: an
    optimiser step or `.to()` is seen at the next call.
    """
    key = _version_key(params)
    per_dtype = store.setdefault(owner, {})
    cached = per_dtype.get(dtype)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = per_dtype[dtype] = (key, build())
    return cached[1]


def _packed(model: nn.Module, dtype: torch.dtype) -> list[_LayerWeights]:
    """The model's projections stacked per layer in `dtype` (see `_remade`)."""

    def build() -> list[_LayerWeights]:
        packs = []
        for layer in model.layers:
            a, m = layer.self_attn, layer.mlp
            packs.append(
                _LayerWeights(
                    torch.cat((a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)).to(dtype),
                    _cat(a.q_proj.bias, a.k_proj.bias, a.v_proj.bias, dtype=dtype),
                    _as(a.o_proj.weight, dtype),
                    _as(a.o_proj.bias, dtype),
                    torch.cat((m.gate_proj.weight, m.up_proj.weight)).to(dtype),
                    _cat(m.gate_proj.bias, m.up_proj.bias, dtype=dtype),
                    _as(m.down_proj.weight, dtype),
                    _as(m.down_proj.bias, dtype),
                )
            )
        return packs

    params = [p for layer in model.layers for p in layer.parameters()]
    return _remade(_PACKS, model, dtype, params, build)


def _copy(linear: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A `dtype` copy of a linear layer's weight and bias (see `_remade`)."""
    params = [p for p in (linear.weight, linear.bias) if p is not None]
    return _remade(
        _COPIES, linear, dtype, params, lambda: (_as(linear.weight, dtype), _as(linear.bias, dtype))
    )
