"""Real-size presets: architectures, exact parameter counts (meta device) and memory estimates."""

from __future__ import annotations

import pytest

from core.presets import PRESETS, get_preset, kv_cache_bytes, memory_estimate, parameter_counts


def qwen2_params(cfg: dict) -> int:
    """Hand formula: embeddings (+ untied head) + per layer (q/k/v with bias, o, gated MLP, 2 norms) + norm."""
    d, layers, inter = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * d // cfg["num_attention_heads"]
    attention = d * d + d + 2 * (d * kv + kv) + d * d
    per_layer = attention + 3 * d * inter + 2 * d
    head = 0 if cfg["tie_word_embeddings"] else cfg["vocab_size"] * d
    return cfg["vocab_size"] * d + head + layers * per_layer + d


def test_presets_name_the_official_hub_ids():
    seven, small = get_preset("drvoice-7b"), get_preset("drvoice-small")
    assert (seven.llm, small.llm) == ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct")
    for preset in PRESETS.values():
        assert preset.srh_init == "Qwen/Qwen2.5-0.5B" and preset.whisper == "openai/whisper-large-v3"
        assert (
            preset.codec["detokenizer"] == "FunAudioLLM/CosyVoice2-0.5B"
            and preset.codec["tokenizer_version"] == "v2"
        )
        config = preset.drvoice_config()
        assert config.speech_vocab_size == 6561 and config.srh["vocab_size"] == 6564
        assert config.encoder["n_mels"] == 128 and config.encoder["n_audio_layer"] == 32
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("drvoice-70b")


def test_parameter_counts_and_memory_of_drvoice_7b():
    preset = get_preset("drvoice-7b")
    counts = parameter_counts(preset)
    assert counts["llm"] == qwen2_params(preset.llm_config) == 7_615_616_512  # Qwen2.5-7B's published size
    assert counts["encoder_whisper"] == 635_048_960  # Whisper large-v3's audio encoder
    srh_layers = qwen2_params(preset.srh_config) - 151936 * 896  # Qwen2.5-0.5B without its text embedding
    assert counts["srh"] == srh_layers + 2 * 6564 * 896  # + speech embedding + speech head
    assert (
        counts["speech_grouping"] == 6564 * 3584 + (5 * 3584 + 1) * 3584
    )  # eq. (3): embeddings + Linear(k d -> d)
    parts = ("llm", "encoder_whisper", "adapter", "speech_grouping", "ungrouping", "srh")
    assert counts["drvoice_total"] == sum(counts[k] for k in parts)
    assert (
        100e6 < counts["flow"] < 125e6
        and 15e6 < counts["hift"] < 25e6
        and 100e6 < counts["s3_tokenizer"] < 150e6
    )
    memory = memory_estimate(preset, counts)
    assert 17 < memory["inference_gib"] < 19
    assert memory["kv_cache_gib"] == pytest.approx(
        (kv_cache_bytes(preset.llm_config, 2048) + kv_cache_bytes(preset.srh_config, 10240)) / 1024**3
    )
    assert memory["train_adamw_1gpu_gib"] > 120 and memory["train_zero2_8gpu_gib"] < 32
