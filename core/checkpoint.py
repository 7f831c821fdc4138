"""DrVoice checkpoints (DESIGN.md §6): a directory or a Hugging Face hub id.

Layout:
    config.json         {"format": "drvoice", "format_version": 1, "model": DrVoiceConfig,
                         "weights_sha256": sha256 of model.safetensors, "extra": {...}}
    model.safetensors   all weights (the only weight format that is loaded)
    tokenizer files     as written by `tokenizer.save_pretrained`
    codec/              the codec's files (embedded units codec), or codec ids in config.json
    generation_config.json   optional: the decoding settings this model answers best with, chosen
                        by evaluating it: `core.sampling.SamplingConfig` fields that differ from its
                        defaults, and under "modes" per mode those that differ for it, e.g.
                        {"modes": {"S2T": {"audio_views": 3}}}; a request's own settings win
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.config import DrVoiceConfig
from core.model import DrVoiceModel
from core.sampling import ModeSampling, SamplingConfig

log = logging.getLogger(__name__)

FORMAT = "drvoice"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
GENERATION_FILE = "generation_config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "codec/*"]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded; the message says why and what to do."""


class CheckpointNotFoundError(CheckpointError):
    pass


class UnsafeCheckpointError(CheckpointError):
    """Pickle-based weights (arbitrary code on load) are refused."""


class TamperedCheckpointError(CheckpointError):
    """The weights do not match the checksum recorded in config.json, or are unreadable."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    model: DrVoiceModel
    tokenizer: Any  # transformers tokenizer with the DrVoice special tokens
    codec: Any  # speech tokenizer + detokenizer (core/codec), or None for a text-only model
    path: Path
    checkpoint_id: str  # directory name or hub id, stored with every generated turn
    extra: dict[str, Any] = field(default_factory=dict)  # training provenance etc.
    sampling: ModeSampling = field(default_factory=ModeSampling)  # its generation_config.json


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_pretrained(
    directory: str | Path, model: DrVoiceModel, tokenizer, codec=None, extra: dict[str, Any] | None = None
) -> Path:
    """Writes a checkpoint directory (weights as safetensors; shared tensors stored once)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # tied weights (embed_tokens / lm_head) are the same tensor; safetensors stores each name once.
    # Compare the tensors' own memory (address + shape), not their storage: DeepSpeed ZeRO flattens
    # all parameters into one buffer, so distinct weights share a storage there.
    seen: dict[tuple, str] = {}
    unique = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if key in seen and model.llm.config.tie_word_embeddings:
            continue
        seen[key] = name
        unique[name] = tensor.clone()
    save_file(unique, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config = model.config
    if codec is not None:
        codec.save(out / "codec")
        # codecs referenced by hub ids / paths (S3 + CosyVoice2) describe themselves in `spec`
        spec = getattr(codec, "spec", None) or {"type": "units", "path": "codec"}
        config = DrVoiceConfig.from_dict({**config.to_dict(), "codec": spec})
    elif config.codec.get("type") == "units":
        config = DrVoiceConfig.from_dict({**config.to_dict(), "codec": {"type": "none"}})
    tokenizer.save_pretrained(str(out))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config.to_dict(),
        "weights_sha256": _sha256(out / WEIGHTS_FILE),
        "extra": extra or {},
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    return out


def resolve_checkpoint(path_or_id: str | Path, revision: str | None = None) -> Path:
    """A local directory, or a hub id fetched (or found in the cache) through `core.hub`."""
    from core.hub import MissingFilesError, hub_offline, is_repo_id, resolve_directory

    local = Path(path_or_id).expanduser()
    if local.is_dir():
        return local
    text = str(path_or_id)
    if not is_repo_id(text):
        raise CheckpointNotFoundError(f"checkpoint directory not found: {text}")
    try:
        return resolve_directory(text, allow_patterns=HUB_PATTERNS, revision=revision)
    except MissingFilesError as exc:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub could not be reached"
        raise CheckpointNotFoundError(
            f"checkpoint {text!r} is not in the local Hugging Face cache and {why}. Fetch it where the hub is "
            f"reachable (`hf download {text} --local-dir DIR`) and pass that directory instead. ({exc})"
        ) from exc


def load_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path} is missing: not a DrVoice checkpoint directory")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TamperedCheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a DrVoice checkpoint config (format={meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {meta['format_version']}; upgrade DrVoice to load it"
        )
    return meta


def save_generation_config(directory: str | Path, sampling: SamplingConfig | ModeSampling) -> Path:
    """Writes the checkpoint's recommended decoding settings (only what differs from the defaults)."""
    if isinstance(sampling, SamplingConfig):
        sampling = ModeSampling(sampling)
    path = Path(directory) / GENERATION_FILE
    path.write_text(json.dumps(sampling.to_dict(), indent=2) + "\n")
    return path


def load_generation_config(directory: Path) -> ModeSampling:
    """The checkpoint's recommended decoding settings (the defaults when it has none).

    Raises:
        CheckpointError: the file is not valid JSON or not valid settings (the message says why).
    """
    path = directory / GENERATION_FILE
    if not path.is_file():
        return ModeSampling()
    try:
        return ModeSampling.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def load_weights(directory: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    """Reads model.safetensors after checking its checksum; pickle files are refused."""
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UnsafeCheckpointError(
                f"{directory} holds pickle-based weights ({', '.join(pickles)}), which can run arbitrary code "
                f"when loaded; only {WEIGHTS_FILE} is accepted. Convert them with safetensors on a trusted machine."
            )
        raise CheckpointNotFoundError(f"{weights} is missing")
    if expected_sha256 is not None and _sha256(weights) != expected_sha256:
        raise TamperedCheckpointError(
            f"{weights} does not match the checksum recorded in {CONFIG_FILE}: the file was modified or corrupted"
        )
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise TamperedCheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc


def from_pretrained(
    path_or_id: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    load_codec: bool = True,
) -> Checkpoint:
    """Loads a checkpoint (local directory or hub id) for inference or further training.

    `dtype` None keeps the stored dtype on accelerators and uses float32 on CPUs.
    """
    from transformers import AutoTokenizer

    from core.codec.registry import load_codec as build_codec

    directory = resolve_checkpoint(path_or_id, revision)
    meta = load_config(directory)
    config = DrVoiceConfig.from_dict(meta["model"])
    state = load_weights(directory, meta.get("weights_sha256"))
    model = DrVoiceModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"llm.lm_head.weight"} if model.llm.config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if tied:
        model.llm.tie_weights()
    if dtype is None and torch.device(device).type == "cpu":
        dtype = torch.float32  # weights may be stored in bf16 (the demo); CPUs compute in fp32
    model.to(device=device, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    codec = build_codec(config.codec, directory, device=device) if load_codec else None
    checkpoint_id = (
        str(path_or_id) if not Path(path_or_id).expanduser().is_dir() else directory.resolve().name
    )
    sampling = load_generation_config(directory)
    return Checkpoint(model, tokenizer, codec, directory, checkpoint_id, meta.get("extra", {}), sampling)
