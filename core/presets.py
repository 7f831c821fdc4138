"""Real-size presets: the pretrained parts of DrVoice (paper) and DrVoice-Small, with their sizes.

| preset          | shared LLM                 | CSE              | SRH init        | codec                          |
|-----------------|----------------------------|------------------|-----------------|--------------------------------|
| `drvoice-7b`    | Qwen/Qwen2.5-7B-Instruct   | Whisper large-v3 | Qwen/Qwen2.5-0.5B | S3Tokenizer v2 + CosyVoice2-0.5B |
| `drvoice-small` | Qwen/Qwen2.5-1.5B-Instruct | Whisper large-v3 | Qwen/Qwen2.5-0.5B | S3Tokenizer v2 + CosyVoice2-0.5B |

The architectures are written down here (from the public config.json files of those repos) so
that sizes and memory can be computed offline: `parameter_counts(preset)` builds every module on
PyTorch's "meta" device (no memory, no download) and counts its parameters; `memory_estimate`
turns the counts into GPU memory. `python -m core.presets` prints the table documented in
core/README_REAL.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import torch

from core.config import DrVoiceConfig, qwen2_config_dict
from core.encoder import whisper_large_v3_encoder_config

GIB = 1024**3
QWEN25_TEXT_VOCAB = 151665  # len(tokenizer) of every Qwen2.5 model (151643 BPE tokens + 22 specials)
# Qwen2.5 ids of the ChatML tokens, the 4 DrVoice tokens appended after them, and "\n".
QWEN25_SPECIAL_IDS = {
    "im_start": 151644,
    "im_end": 151645,
    "end_of_text": 151643,
    "sil": 151665,
    "audio_bos": 151666,
    "audio_eos": 151667,
    "audio": 151668,
    "newline": 198,
}
S3_V2_CODES = 6561


def _qwen(vocab, hidden, layers, heads, kv_heads, intermediate, tie, max_positions=32768) -> dict[str, Any]:
    cfg = qwen2_config_dict(
        vocab,
        hidden,
        layers,
        heads,
        kv_heads,
        intermediate,
        max_positions,
        rope_theta=1_000_000.0,
        tie_word_embeddings=tie,
    )
    cfg["rms_norm_eps"] = 1e-6
    return cfg


# Architectures of the hub checkpoints (their config.json).
QWEN25_7B_INSTRUCT = _qwen(152064, 3584, 28, 28, 4, 18944, tie=False)
QWEN25_1P5B_INSTRUCT = _qwen(151936, 1536, 28, 12, 2, 8960, tie=True)
QWEN25_0P5B = _qwen(151936, 896, 24, 14, 2, 4864, tie=True)


@dataclass(frozen=True)
class Preset:
    """Hub ids of the parts of a real DrVoice model and its architecture."""

    name: str
    description: str
    llm: str  # hub id of the shared LLM (Instruct model)
    llm_config: dict[str, Any]  # its architecture
    srh_init: str  # hub id of the SRH initialisation (a T2M-trained copy of it in the paper)
    srh_config: dict[str, Any]  # its architecture (vocab replaced by the speech vocab)
    whisper: str  # hub id of the continuous speech encoder
    codec: dict[str, Any] = field(
        default_factory=lambda: {
            "type": "s3+cosyvoice2",
            "detokenizer": "FunAudioLLM/CosyVoice2-0.5B",  # flow.pt, hift.pt, campplus.onnx
            "tokenizer": "FunAudioLLM/CosyVoice2-0.5B",  # speech_tokenizer_v2.onnx
            "tokenizer_version": "v2",
            "speaker": None,
            "flow_full_context": False,
        }
    )
    speech_vocab_size: int = S3_V2_CODES
    group_size: int = 5
    max_positions: int = 2048  # LLM positions of one conversation (appendix A)

    def drvoice_config(self) -> DrVoiceConfig:
        """The assembled model's config (what `training.recipes.build` produces from these parts)."""
        srh = {**self.srh_config, "vocab_size": self.speech_vocab_size + 3, "tie_word_embeddings": False}
        srh["max_position_embeddings"] = max(16384, self.max_positions * self.group_size)
        return DrVoiceConfig(
            llm=dict(self.llm_config),
            srh=srh,
            special_token_ids=dict(QWEN25_SPECIAL_IDS),
            speech_vocab_size=self.speech_vocab_size,
            group_size=self.group_size,
            encoder=whisper_large_v3_encoder_config(int(self.llm_config["hidden_size"])).to_dict(),
            max_positions=self.max_positions,
            codec=dict(self.codec),
            name=self.name,
        )


PRESETS: dict[str, Preset] = {
    "drvoice-7b": Preset(
        "drvoice-7b",
        "DrVoice (paper): Qwen2.5-7B-Instruct + Whisper large-v3 + SRH from Qwen2.5-0.5B + S3 v2 / CosyVoice2",
        "Qwen/Qwen2.5-7B-Instruct",
        QWEN25_7B_INSTRUCT,
        "Qwen/Qwen2.5-0.5B",
        QWEN25_0P5B,
        "openai/whisper-large-v3",
    ),
    "drvoice-small": Preset(
        "drvoice-small",
        "DrVoice-Small: Qwen2.5-1.5B-Instruct + Whisper large-v3 + SRH from Qwen2.5-0.5B + S3 v2 / CosyVoice2",
        "Qwen/Qwen2.5-1.5B-Instruct",
        QWEN25_1P5B_INSTRUCT,
        "Qwen/Qwen2.5-0.5B",
        QWEN25_0P5B,
        "openai/whisper-large-v3",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(preset: Preset | str, include_codec: bool = True) -> dict[str, int]:
    """Exact parameter counts of every part, from modules built on the meta device.

    Returns:
        {"llm", "encoder_whisper", "adapter", "speech_grouping", "ungrouping", "srh",
         "drvoice_total", and with the codec "s3_tokenizer", "flow", "hift"}.
    """
    from core.model import DrVoiceModel

    preset = get_preset(preset) if isinstance(preset, str) else preset
    with torch.device("meta"):
        model = DrVoiceModel(preset.drvoice_config())
        counts = {
            "llm": _count(model.llm),
            "encoder_whisper": _count(model.encoder.whisper),
            "adapter": _count(model.encoder.adapter),
            "speech_grouping": _count(model.speech_grouping),
            "ungrouping": _count(model.ungrouping),
            "srh": _count(model.srh),
            "drvoice_total": _count(model),
        }
        if include_codec:
            from core.codec.cosyvoice_modules import CosyVoice2Config, build_flow, build_hift
            from core.codec.s3 import build_s3_model

            counts["s3_tokenizer"] = _count(build_s3_model("v2"))
            counts["flow"] = _count(build_flow(CosyVoice2Config()))
            counts["hift"] = _count(build_hift(CosyVoice2Config()))
    return counts


def kv_cache_bytes(config: dict[str, Any], positions: int, bytes_per_value: int = 2) -> int:
    """Keys + values of a transformers decoder for `positions` positions (batch 1)."""
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * positions * bytes_per_value


def memory_estimate(
    preset: Preset | str, counts: dict[str, int] | None = None, gpus: int = 8
) -> dict[str, float]:
    """GPU memory in GiB (weights and caches; activations and the CUDA context are extra).

    - inference: DrVoice weights in bf16 (2 B/param), codec in fp32 (4 B/param, as CosyVoice2
      runs it), KV caches in bf16 for a full 2K-position conversation (LLM) and its 10K 25 Hz
      positions (SRH);
    - full fine-tuning with AdamW in mixed precision: 16 B/param on one GPU (bf16 weights and
      gradients, fp32 master weights, two fp32 moments); with DeepSpeed ZeRO-2 over `gpus` GPUs
      the gradients and optimizer states are sharded: 2 + 14 / gpus B/param per GPU.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    counts = counts or parameter_counts(preset)
    model_params = counts["drvoice_total"]
    codec_params = counts.get("s3_tokenizer", 0) + counts.get("flow", 0) + counts.get("hift", 0)
    llm_kv = kv_cache_bytes(preset.llm_config, preset.max_positions)
    srh_kv = kv_cache_bytes(preset.srh_config, preset.max_positions * preset.group_size)
    weights = 2 * model_params + 4 * codec_params
    return {
        "weights_bf16_gib": 2 * model_params / GIB,
        "codec_fp32_gib": 4 * codec_params / GIB,
        "kv_cache_gib": (llm_kv + srh_kv) / GIB,
        "inference_gib": (weights + llm_kv + srh_kv) / GIB,
        "train_adamw_1gpu_gib": 16 * model_params / GIB,
        f"train_zero2_{gpus}gpu_gib": (2 + 14 / gpus) * model_params / GIB,
    }


def describe(name: str) -> str:
    """A text table of a preset's hub ids, parameter counts and memory."""
    preset = get_preset(name)
    counts = parameter_counts(preset)
    memory = memory_estimate(preset, counts)
    lines = [f"{preset.name}: {preset.description}"]
    lines += [f"  {k:<16} {v:>15,d}  ({v / 1e9:.3f} B)" for k, v in counts.items()]
    lines += [f"  {k:<24} {v:8.1f} GiB" for k, v in memory.items()]
    lines += [
        f"  hub ids: llm={preset.llm} srh_init={preset.srh_init} whisper={preset.whisper} codec={preset.codec}"
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Sizes and memory of the real-size DrVoice presets")
    parser.add_argument("presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args(argv)
    for name in args.presets:
        print(describe(name))  # noqa: T201 - CLI output


if __name__ == "__main__":
    main()
