"""Loaders of the pretrained parts of a real DrVoice model (paper §3.3, DESIGN.md §6).

- `load_whisper_encoder`: Whisper's audio encoder (large-v3 in the paper) from the openai-whisper
  checkpoint format (`{"dims", "model_state_dict"}` .pt, read with `weights_only=True`), from an
  openai model name ("large-v3", downloaded by openai-whisper when online), or from the Hugging
  Face layout (`openai/whisper-large-v3`: config.json + safetensors, names mapped to openai's).
  Returns the encoder weights only, named as `core.encoder.SpeechEncoder.whisper` expects.
- `load_llm_for_drvoice`: a Qwen2.5 causal LM + tokenizer (directory or hub id) with the DrVoice
  special tokens added and the new embedding rows set to the mean embedding.
- `srh_config_from_qwen` / `srh_init_from_qwen`: the SRH's architecture and decoder layers from a
  Qwen2.5-0.5B checkpoint (the speech embedding and head stay random).

Only safetensors (HF layouts) and `torch.load(weights_only=True)` (openai .pt) are read.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from core.hub import MissingFilesError, hub_offline, resolve_directory, safe_torch_load
from core.text_tokenizer import CHAT_TOKENS, DRVOICE_TOKENS, add_drvoice_tokens

logger = logging.getLogger(__name__)

WHISPER_DIM_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")
HF_WEIGHT_PATTERNS = ["*.json", "*.safetensors"]
LLM_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
_VOLATILE_CONFIG_KEYS = ("transformers_version", "architectures", "dtype", "torch_dtype", "_name_or_path")

# Hugging Face WhisperEncoder parameter names -> openai-whisper AudioEncoder names.
_HF_WHISPER_RULES = [
    (re.compile(r"^conv([12])\.(weight|bias)$"), r"conv\1.\2"),
    (re.compile(r"^embed_positions\.weight$"), "positional_embedding"),
    (re.compile(r"^layer_norm\.(weight|bias)$"), r"ln_post.\1"),
    (re.compile(r"^layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$"), r"blocks.\1.attn.query.\2"),
    (re.compile(r"^layers\.(\d+)\.self_attn\.k_proj\.weight$"), r"blocks.\1.attn.key.weight"),  # no bias
    (re.compile(r"^layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)$"), r"blocks.\1.attn.value.\2"),
    (re.compile(r"^layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$"), r"blocks.\1.attn.out.\2"),
    (re.compile(r"^layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$"), r"blocks.\1.attn_ln.\2"),
    (re.compile(r"^layers\.(\d+)\.fc1\.(weight|bias)$"), r"blocks.\1.mlp.0.\2"),
    (re.compile(r"^layers\.(\d+)\.fc2\.(weight|bias)$"), r"blocks.\1.mlp.2.\2"),
    (re.compile(r"^layers\.(\d+)\.final_layer_norm\.(weight|bias)$"), r"blocks.\1.mlp_ln.\2"),
]


# ---------------------------------------------------------------------------------------------
# Whisper encoder


def hf_whisper_key_to_openai(name: str) -> str | None:
    """'model.encoder.layers.3.self_attn.q_proj.weight' -> 'blocks.3.attn.query.weight' (None: not encoder)."""
    for prefix in ("model.encoder.", "encoder."):
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            break
    else:
        return None
    for pattern, replacement in _HF_WHISPER_RULES:
        if pattern.match(rest):
            return pattern.sub(replacement, rest)
    raise ValueError(f"unknown Whisper encoder parameter {name!r}")


def _whisper_from_openai_file(path: Path) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    data = safe_torch_load(path, "Whisper checkpoint")
    if not isinstance(data, dict) or "dims" not in data or "model_state_dict" not in data:
        raise ValueError(f"{path} is not an openai-whisper checkpoint (no 'dims' / 'model_state_dict')")
    weights = {
        k[len("encoder.") :]: v.float()
        for k, v in data["model_state_dict"].items()
        if k.startswith("encoder.")
    }
    if not weights:
        raise ValueError(f"{path} holds no encoder.* weights")
    return {k: int(data["dims"][k]) for k in WHISPER_DIM_KEYS}, weights


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / n for n in names]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise MissingFilesError(f"{directory}: no *.safetensors weights")
    return files


def _whisper_from_hf_dir(directory: Path) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    config = json.loads((directory / "config.json").read_text())
    dims = {
        "n_mels": int(config["num_mel_bins"]),
        "n_audio_ctx": int(config["max_source_positions"]),
        "n_audio_state": int(config["d_model"]),
        "n_audio_head": int(config["encoder_attention_heads"]),
        "n_audio_layer": int(config["encoder_layers"]),
    }
    weights: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(directory):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                target = hf_whisper_key_to_openai(name)
                if target is not None:
                    weights[target] = f.get_tensor(name).float()
    if not weights:
        raise ValueError(f"{directory} holds no Whisper encoder weights (model.encoder.* / encoder.*)")
    return dims, weights


def load_whisper_encoder(
    path_or_id: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Whisper encoder dims and weights (float32) named as `whisper.model.AudioEncoder`'s.

    Args:
        path_or_id: an openai-whisper .pt file; an openai model name ("large-v3"); a Hugging Face
            directory (config.json + *.safetensors) or hub id ("openai/whisper-large-v3").

    Returns:
        dims {n_mels, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer} (plug into
        `core.encoder.EncoderConfig(llm_hidden_size=..., **dims)`), and the encoder state dict
        ("conv1.weight", "blocks.0.attn.query.weight", ..., "ln_post.bias").

    Raises:
        MissingFilesError: naming what is missing (offline: not in the cache).
        UnsafeWeightsError: a .pt that needs arbitrary classes to unpickle.
    """
    local = Path(path_or_id).expanduser()
    if local.is_file():
        return _whisper_from_openai_file(local)
    import whisper

    name = str(path_or_id)
    if name in whisper.available_models():
        root = Path.home() / ".cache" / "whisper"
        file = root / Path(whisper._MODELS[name]).name
        if not file.is_file():
            if hub_offline():
                raise MissingFilesError(f"Whisper {name}: {file} is missing and HF_HUB_OFFLINE is set")
            file = Path(whisper._download(whisper._MODELS[name], str(root), in_memory=False))
        return _whisper_from_openai_file(file)
    directory = resolve_directory(
        path_or_id,
        required=["config.json"],
        allow_patterns=HF_WEIGHT_PATTERNS,
        revision=revision,
        cache_dir=cache_dir,
    )
    return _whisper_from_hf_dir(directory)


def load_whisper_into(encoder: torch.nn.Module, path_or_id: str | Path, **kwargs: Any) -> None:
    """Loads Whisper weights into `SpeechEncoder.whisper` (strict; the dims must agree)."""
    dims, weights = load_whisper_encoder(path_or_id, **kwargs)
    expected = {k: getattr(encoder.cfg, k) for k in WHISPER_DIM_KEYS}
    if dims != expected:
        raise ValueError(f"{path_or_id} has encoder dims {dims}, the model expects {expected}")
    encoder.whisper.load_state_dict(weights, strict=True)


# ---------------------------------------------------------------------------------------------
# Shared LLM


def hf_config_dict(hf_config, **overrides: Any) -> dict[str, Any]:
    """A transformers config as the plain architecture dict `DrVoiceConfig` stores (llm / srh)."""
    data = hf_config.to_diff_dict()
    for key in _VOLATILE_CONFIG_KEYS:
        data.pop(key, None)
    data["model_type"] = hf_config.model_type
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        if hasattr(hf_config, key):  # a diff dict omits values equal to the class defaults
            data.setdefault(key, getattr(hf_config, key))
    data.update(overrides)
    return data


@torch.no_grad()
def init_new_token_rows(model, new_ids: list[int], old_rows: int, noise: float = 0.0, seed: int = 0) -> None:
    """Sets the embedding (and untied LM-head) rows of new tokens to the mean of rows [0, old_rows).

    Args:
        model: a transformers causal LM.
        new_ids: rows of the added tokens.
        old_rows: rows of real tokens before the addition (the tokenizer's former size).
        noise: optional Gaussian noise in units of the per-dimension std of the old rows.
    """
    generator = torch.Generator().manual_seed(seed)
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(out.weight)
    for weight in matrices:
        old = weight[:old_rows].float()  # (V_old, D)
        mean, std = old.mean(dim=0), old.std(dim=0)
        for i in new_ids:
            z = torch.randn(weight.shape[1], generator=generator)
            weight[i] = (mean + noise * std * z).to(weight.dtype)


def load_llm_for_drvoice(
    path_or_id: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    new_token_noise: float = 0.0,
    seed: int = 0,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    return_new_ids: bool = False,
):
    """A Qwen2.5 (any transformers) causal LM and its tokenizer, ready to be DrVoice's shared LLM.

    The ChatML and DrVoice special tokens (`<|sil|>`, `<|audio_bos|>`, `<|audio_eos|>`,
    `<|AUDIO|>`) are added; the embedding matrix grows only when the tokenizer outgrows it
    (Qwen2.5 has spare padded rows); the new tokens' rows (input embeddings, and the LM head when
    untied) become the mean of the existing tokens' rows (+ optional noise), all other rows are
    untouched, so text in gives the LLM's own logits out.

    Args:
        path_or_id: directory or hub id ("Qwen/Qwen2.5-7B-Instruct").
        dtype: parameter dtype.
        new_token_noise: noise of the new rows (0: exactly the mean).

    Returns:
        (model, tokenizer); `model.config.vocab_size` = its embedding rows. With `return_new_ids`,
        (model, tokenizer, ids of the added tokens).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = resolve_directory(
        path_or_id,
        required=["config.json"],
        allow_patterns=LLM_PATTERNS,
        revision=revision,
        cache_dir=cache_dir,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, use_safetensors=True)
    old_len = len(tokenizer)
    missing = [t for t in CHAT_TOKENS + DRVOICE_TOKENS if t not in tokenizer.get_vocab()]
    add_drvoice_tokens(tokenizer)
    new_ids = sorted(int(tokenizer.convert_tokens_to_ids(t)) for t in missing)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    init_new_token_rows(model, new_ids, min(old_len, rows), new_token_noise, seed)
    logger.info(
        "%s: added %s (ids %s); %d embedding rows", path_or_id, missing, new_ids, model.config.vocab_size
    )
    return (model, tokenizer, new_ids) if return_new_ids else (model, tokenizer)


# ---------------------------------------------------------------------------------------------
# Speech Refined Head


def _qwen_directory(path_or_id, revision=None, cache_dir=None) -> Path:
    return resolve_directory(
        path_or_id,
        required=["config.json"],
        allow_patterns=HF_WEIGHT_PATTERNS,
        revision=revision,
        cache_dir=cache_dir,
    )


def srh_config_from_qwen(
    path_or_id: str | Path, speech_vocab_size: int, max_positions: int = 16384, **kwargs: Any
) -> dict[str, Any]:
    """The SRH architecture of a Qwen2 checkpoint (Qwen2.5-0.5B): its decoder sizes, vocab N + 3, untied."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(_qwen_directory(path_or_id, **kwargs)))
    return hf_config_dict(
        config,
        vocab_size=speech_vocab_size + 3,
        tie_word_embeddings=False,
        max_position_embeddings=max(max_positions, int(getattr(config, "max_position_embeddings", 0))),
    )


@torch.no_grad()
def srh_init_from_qwen(path_or_id: str | Path, srh: torch.nn.Module, **kwargs: Any) -> list[str]:
    """Copies the decoder layers and final norm of a Qwen2 checkpoint into `srh.decoder`.

    The token embedding (speech codes, not text) and the output head stay as they are.

    Args:
        path_or_id: directory or hub id of a Qwen2 causal LM (Qwen/Qwen2.5-0.5B).
        srh: `core.srh.SpeechRefinedHead` built with `srh_config_from_qwen`'s config.

    Returns:
        the names of the copied decoder parameters.

    Raises:
        ValueError: the checkpoint's layers do not fit the SRH (names the first mismatches).
    """
    from safetensors import safe_open

    directory = _qwen_directory(path_or_id, **kwargs)
    target = srh.decoder.state_dict()
    copied: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(directory):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                if not name.startswith("model.") or name == "model.embed_tokens.weight":
                    continue
                copied[name[len("model.") :]] = f.get_tensor(name)
    missing = sorted(k for k in target if k not in copied and k != "embed_tokens.weight")
    unexpected = sorted(k for k in copied if k not in target)
    shapes = sorted(k for k in copied if k in target and copied[k].shape != target[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path_or_id} does not fit the SRH: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {shapes[:5]}"
        )
    srh.decoder.load_state_dict(copied, strict=False)
    return sorted(copied)
