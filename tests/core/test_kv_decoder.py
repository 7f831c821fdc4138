"""The lean decode path (core/kv_decoder.py) against transformers' own cached forward."""

import pytest
import torch
from transformers import AutoModel, DynamicCache

from core.kv_decoder import KVDecoder, unsupported_reason
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


def test_a_trained_model_is_seen_as_it_is_now():
    """Stacked weights are remade after a parameter changed (a training step between two replies)."""
    model = _model()
    x = _chunks([6])[0]
    with torch.inference_mode():
        before = KVDecoder(model)(x)
    with torch.no_grad():
        model.layers[1].mlp.down_proj.weight.mul_(-2.0)
        model.layers[0].self_attn.k_proj.bias.add_(1.0)
    with torch.inference_mode():
        ref = model(inputs_embeds=x).last_hidden_state
        after = KVDecoder(model)(x)
    torch.testing.assert_close(after, ref, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(after, before, atol=1e-3)


def test_one_sequence_only():
    lean = KVDecoder(_model())
    with pytest.raises(ValueError, match="one sequence"):
        lean(torch.zeros(2, 3, 32))


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
