"""The lean decode path (core/kv_decoder.py) against transformers' own cached forward."""

import pytest
import torch
from transformers import AutoModel, DynamicCache

from core.kv_decoder import KVDecoder, matmul_dtype, unsupported_reason
from core.srh import build_transformers_config


def _model(model_type="qwen2", **overrides):
    cfg = dict(
        model_type=model_type,
        vocab_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    cfg.update(overrides)
    torch.manual_seed(0)
    model = AutoModel.from_config(build_transformers_config(cfg)).eval()
    with torch.no_grad():  # transformers initialises biases and norms to constants: make them matter
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def _chunks(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, n, 32, generator=g) for n in lengths]


# a prompt, single steps, several positions at once after a prefix (the explicit causal mask),
# and more positions than the initial capacity (the cache doubles twice)
LENGTHS = [7, 1, 1, 3, 1, 2, 1, 1, 5, 1]


@pytest.mark.parametrize("stack", [True, False])
@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
def test_same_hidden_states_as_transformers_cached_forward(model_type, stack):
    model = _model(model_type)
    cache = DynamicCache(config=model.config)
    lean = KVDecoder(model, capacity=4, stack_limit_bytes=2**30 if stack else 0)
    assert all((w is not None) == stack for w in lean.weights)
    with torch.inference_mode():
        for x in _chunks(LENGTHS):
            ref = model(inputs_embeds=x, cache=cache, use_cache=True).last_hidden_state
            out = lean(x)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    assert lean.length == sum(LENGTHS)
    assert lean.cache.capacity == 32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_products_stay_within_their_rounding(dtype):
    """With `matmul_dtype` every projection of a one-position step multiplies a half-precision copy:
    the hidden states differ from fp32 by that rounding only, and the copies really are used. A
    prompt (several positions, matrix-matrix products) multiplies in fp32."""
    model = _model()
    cache = DynamicCache(config=model.config)
    lean = KVDecoder(model, capacity=4, matmul_dtype=dtype)
    assert lean.matmul_dtype == dtype
    assert all(t.dtype == dtype for w in lean.weights for t in w if t is not None)
    assert all(t.dtype == torch.float32 for w in lean.prefill_weights for t in w if t is not None)
    tol = 2e-2 if dtype == torch.float16 else 8e-2  # 11 and 8 significant bits
    worst = 0.0
    with torch.inference_mode():
        for i, x in enumerate(_chunks(LENGTHS)):
            ref = model(inputs_embeds=x, cache=cache, use_cache=True).last_hidden_state
            out = lean(x)
            assert out.dtype == torch.float32
            if i == 0:  # the prompt: fp32 products, as exact as the fp32 path
                torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
            if x.shape[1] == 1:
                worst = max(worst, (out - ref).abs().max().item())
    assert worst > 1e-6  # one-position steps do not take the fp32 path


def test_half_precision_head_projection():
    model = _model()
    head = torch.nn.Linear(32, 16, bias=True)
    x = torch.randn(3, 32)
    lean = KVDecoder(model, matmul_dtype=torch.float16)
    with torch.inference_mode():
        ref, out = head(x), lean.project(x, head)
        torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)
        assert not torch.equal(out, ref) and out.dtype == torch.float32
        assert torch.equal(KVDecoder(model).project(x, head), ref)  # fp32: the module itself
    with torch.no_grad():
        head.weight.mul_(-1.0)  # the copy is remade after a change
    with torch.inference_mode():
        torch.testing.assert_close(lean.project(x, head), head(x), atol=1e-2, rtol=1e-2)


def test_matmul_dtype_names():
    model = _model()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert matmul_dtype("auto", model) == torch.float16  # fp32 weights on a CPU, several threads
        torch.set_num_threads(1)
        assert matmul_dtype("auto", model) is None  # one thread: the casts cost more than they save
    finally:
        torch.set_num_threads(threads)
    assert matmul_dtype("auto", model.to(torch.bfloat16)) is None
    assert matmul_dtype("fp32", model) == torch.float32
    assert matmul_dtype("bf16", model) == torch.bfloat16
    with pytest.raises(ValueError, match="matmul precision"):
        matmul_dtype("int8", model)
    # a model too large to stack keeps its own dtype
    assert KVDecoder(_model(), stack_limit_bytes=0, matmul_dtype=torch.float16).matmul_dtype == torch.float32


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_a_trained_model_is_seen_as_it_is_now(dtype):
    """Stacked weights are remade after a parameter changed (a training step between two replies)."""
    model = _model()
    x = _chunks([6])[0]
    tol = 2e-5 if dtype is None else 2e-2
    with torch.inference_mode():
        before = KVDecoder(model, matmul_dtype=dtype)(x)
    with torch.no_grad():
        model.layers[1].mlp.down_proj.weight.mul_(-2.0)
        model.layers[0].self_attn.k_proj.bias.add_(1.0)
        model.layers[0].self_attn.o_proj.weight.mul_(4.0)
        model.layers[0].mlp.up_proj.weight.mul_(-3.0)
    with torch.inference_mode():
        ref = model(inputs_embeds=x).last_hidden_state
        after = KVDecoder(model, matmul_dtype=dtype)(x)
    torch.testing.assert_close(after, ref, atol=tol, rtol=tol * 5)
    assert (after - before).abs().max() > 0.3  # far beyond the half-precision rounding


def test_input_shapes_and_rows_are_checked():
    lean = KVDecoder(_model())
    with pytest.raises(ValueError, match=r"1 sequence\(s\)"):
        lean(torch.zeros(2, 3, 32))
    rows = KVDecoder(_model(), rows=2)
    with pytest.raises(ValueError, match="row 2"):
        rows(torch.zeros(1, 3, 32), row=2)
    with pytest.raises(ValueError, match="counts"):
        rows(torch.zeros(2, 3, 32), counts=[3, 4])
    with pytest.raises(ValueError, match="rows"):
        _ = rows.length


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_rows_of_different_lengths_advance_like_separate_decoders(dtype):
    """Three prompts of different lengths filled in one call (padded to the longest, `counts`), two
    positions more for each, then steps together one position at a time past the first capacity
    (the cache doubles); a row dropped midway leaves the others as they were. Several rows multiply
    in `matmul_dtype` when each advances by one position, as a single row does."""
    model = _model()
    prompts = _chunks([5, 3, 7], seed=2)
    separate = [KVDecoder(model, capacity=4, matmul_dtype=dtype) for _ in prompts]
    exact = KVDecoder(model, capacity=4)  # fp32 products throughout, for row 0
    rows = KVDecoder(model, capacity=4, matmul_dtype=dtype, rows=3)
    tol = dict(atol=2e-5, rtol=1e-4) if dtype is None else dict(atol=2e-3, rtol=2e-3)
    padded = torch.zeros(3, 7, 32)
    for r, x in enumerate(prompts):
        padded[r, : x.shape[1]] = x[0]
    with torch.inference_mode():
        out = rows(padded, counts=[5, 3, 7])
        exact(prompts[0])
        for r, (one, x) in enumerate(zip(separate, prompts, strict=True)):
            torch.testing.assert_close(out[r : r + 1, : x.shape[1]], one(x), atol=2e-5, rtol=1e-4)
        pair = _chunks([2, 2, 2], seed=7)
        out = rows(torch.cat(pair))
        exact(pair[0])
        for r, (one, x) in enumerate(zip(separate, pair, strict=True)):
            torch.testing.assert_close(out[r : r + 1], one(x), atol=2e-5, rtol=1e-4)
        worst = 0.0
        steps = _chunks([1] * 12, seed=3)
        for t, step in enumerate(steps):
            if t == 6:
                rows.keep([0, 2])
                separate = [separate[0], separate[2]]
            x = torch.cat([step + i for i in range(len(separate))])  # each row its own input
            ref = torch.cat([one(x[i : i + 1]) for i, one in enumerate(separate)])
            out = rows(x)
            torch.testing.assert_close(out, ref, **tol)
            worst = max(worst, float((out[0] - exact(x[:1])[0]).abs().max()))
    assert (worst > 1e-6) == (dtype is not None)  # the rows' steps multiply in `matmul_dtype`
    assert rows.lengths == [5 + 2 + 12, 7 + 2 + 12]
    assert rows.cache.keys.shape[1] == 2


def test_rows_of_the_same_length_step_together_too():
    model = _model()
    x = _chunks([4], seed=4)[0]
    rows, one = KVDecoder(model, rows=2), KVDecoder(model)
    with torch.inference_mode():
        one(x)
        rows(x, row=0)
        rows(x, row=1)
        for step in _chunks([1, 1, 1], seed=5):
            out = rows(torch.cat([step, step]))
            ref = one(step)
            torch.testing.assert_close(out, torch.cat([ref, ref]), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "rope type"),
        ({"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 0}, "sliding"),
        ({"hidden_act": "gelu"}, "activation"),
    ],
)
def test_unsupported_configurations_are_named(overrides, reason):
    model = _model(**overrides)
    assert reason in unsupported_reason(model)
    with pytest.raises(ValueError, match=reason):
        KVDecoder(model)


def test_other_architectures_are_named():
    model = _model("qwen3", head_dim=8)
    assert "architecture" in unsupported_reason(model)
    assert unsupported_reason(_model()) is None


def test_a_shared_leading_text_gives_the_same_hidden_states():
    """Two prompts with the same first positions: the second row copies them from the first decoder
    and computes only the rest, as a decoder that computed all of it would."""
    model = _model()
    head, tail_a, tail_b = _chunks([6, 3, 4], seed=6)
    first, whole, rows = KVDecoder(model), KVDecoder(model), KVDecoder(model, rows=2)
    with torch.inference_mode():
        first(torch.cat([head, tail_a], dim=1))
        ref = whole(torch.cat([head, tail_b], dim=1))[:, -4:]
        rows.share(1, first, 0, 6)
        with pytest.raises(ValueError, match="holds 6"):
            rows.share(1, first, 0, 6)
        torch.testing.assert_close(rows(tail_b, row=1), ref, atol=2e-5, rtol=1e-4)
    assert rows.lengths == [0, 10]
