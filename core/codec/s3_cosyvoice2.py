"""The paper's real codec as one object: S3Tokenizer v2 (encode) + CosyVoice2-0.5B (decode, stream).

A checkpoint names it in config.json ("codec") by hub ids or paths, never by copying weights:

    {"type": "s3+cosyvoice2",
     "detokenizer": "FunAudioLLM/CosyVoice2-0.5B",   # directory or hub id with flow.pt, hift.pt (campplus.onnx)
     "tokenizer": "FunAudioLLM/CosyVoice2-0.5B",     # file, directory or hub id with speech_tokenizer_v2.onnx; null: none
     "tokenizer_version": "v2",
     "speaker": null,                                # or "codec/speaker.safetensors" (relative to the checkpoint)
     "flow_full_context": false,
     "config": {}, "tokenizer_config": {}}           # non-official module sizes (tests only)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.types import Waveform

CODEC_TYPE = "s3+cosyvoice2"
SPEAKER_FILE = "speaker.safetensors"


def default_spec() -> dict[str, Any]:
    """The official files of CosyVoice2-0.5B (S3Tokenizer v2 ships in the same repo)."""
    return {
        "type": CODEC_TYPE,
        "detokenizer": "FunAudioLLM/CosyVoice2-0.5B",
        "tokenizer": "FunAudioLLM/CosyVoice2-0.5B",
        "tokenizer_version": "v2",
        "speaker": None,
        "flow_full_context": False,
    }


def _resolve(value: str | None, checkpoint_dir: Path | None) -> str | None:
    """A relative path that exists inside the checkpoint directory is taken from there."""
    if value is None or checkpoint_dir is None:
        return value
    candidate = Path(checkpoint_dir) / value
    return str(candidate) if candidate.exists() else value


class S3CosyVoice2Codec:
    """`SpeechTokenizer` + `SpeechDetokenizer` of the real stack (25 Hz, 6561 codes, 24 kHz audio).

    Args:
        detokenizer: `CosyVoice2Detokenizer`.
        tokenizer: `S3SpeechTokenizer` (None: `encode` is unavailable).
        spec: the config.json entry that rebuilds this codec.
    """

    token_rate = 25.0

    def __init__(self, detokenizer, tokenizer=None, spec: dict[str, Any] | None = None) -> None:
        self.detokenizer = detokenizer
        self.tokenizer = tokenizer
        self._spec = dict(spec or default_spec())
        if tokenizer is not None and tokenizer.codebook_size != detokenizer.codebook_size:
            raise ValueError(
                f"tokenizer codes ({tokenizer.codebook_size}) != detokenizer codes ({detokenizer.codebook_size})"
            )

    @property
    def codebook_size(self) -> int:
        return self.detokenizer.codebook_size

    @property
    def sample_rate(self) -> int:
        return self.detokenizer.sample_rate

    @property
    def spec(self) -> dict[str, Any]:
        """What `core.checkpoint.save_pretrained` writes as the checkpoint's "codec" entry."""
        return dict(self._spec)

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        checkpoint_dir: Path | None = None,
        device: torch.device | str | None = None,
    ) -> S3CosyVoice2Codec:
        """Builds the codec a checkpoint's config names (files resolved against `checkpoint_dir`)."""
        from core.codec.cosyvoice import CosyVoice2Detokenizer, Speaker
        from core.codec.cosyvoice_modules import CosyVoice2Config
        from core.codec.s3 import S3SpeechTokenizer

        spec = {**default_spec(), **spec}
        speaker_path = _resolve(spec.get("speaker"), checkpoint_dir)
        speaker = Speaker.load(speaker_path) if speaker_path else None
        detokenizer = CosyVoice2Detokenizer.from_pretrained(
            _resolve(spec["detokenizer"], checkpoint_dir),
            CosyVoice2Config.from_dict(spec.get("config") or {}),
            device=device,
            speaker=speaker,
            flow_full_context=bool(spec.get("flow_full_context", False)),
            revision=spec.get("revision"),
        )
        tokenizer = None
        if spec.get("tokenizer"):
            tokenizer = S3SpeechTokenizer.from_pretrained(
                _resolve(spec["tokenizer"], checkpoint_dir),
                spec.get("tokenizer_version", "v2"),
                device=device,
                **(spec.get("tokenizer_config") or {}),
            )
        return cls(detokenizer, tokenizer, spec)

    def save(self, directory: str | Path) -> None:
        """Writes the side files of a checkpoint's codec folder (the speaker, when it is not the default)."""
        from core.codec.cosyvoice import Speaker

        speaker = self.detokenizer.speaker
        default = Speaker.default(self.detokenizer.config.spk_embed_dim)
        if len(speaker.prompt_tokens) == 0 and torch.equal(speaker.embedding.cpu(), default.embedding):
            self._spec["speaker"] = None
            return
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        speaker.save(out / SPEAKER_FILE)
        self._spec["speaker"] = f"{out.name}/{SPEAKER_FILE}"

    # --- SpeechTokenizer ---------------------------------------------------------------------
    def encode(self, waveform: Waveform) -> torch.Tensor:
        """Audio (any rate) -> (T,) int64 S3 codes at 25 Hz."""
        if self.tokenizer is None:
            raise RuntimeError('this codec was built without a tokenizer ("tokenizer": null in its spec)')
        return self.tokenizer.encode(waveform)

    # --- SpeechDetokenizer -------------------------------------------------------------------
    def decode(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
        """(T,) codes -> (T * 960,) float32 audio at 24 kHz."""
        return self.detokenizer.decode(tokens)

    def stream(self):
        """A fresh CosyVoice2 streaming decoder."""
        return self.detokenizer.stream()
