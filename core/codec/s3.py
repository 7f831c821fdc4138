"""S3Tokenizer (CosyVoice's supervised semantic speech tokenizer) through the `s3tokenizer` package.

Versions (DESIGN.md §5; the model classes, front end and long-audio handling are the package's):

| version   | package class    | codes        | rate  | official file (hub repo)                                          |
|-----------|------------------|--------------|-------|-------------------------------------------------------------------|
| `v1`      | S3Tokenizer      | 4096 (VQ)    | 50 Hz | speech_tokenizer_v1.onnx (FunAudioLLM/CosyVoice-300M)              |
| `v1_25hz` | S3Tokenizer      | 4096 (VQ)    | 25 Hz | speech_tokenizer_v1.onnx (FunAudioLLM/CosyVoice-300M-25Hz)         |
| `v2`      | S3TokenizerV2    | 6561 (3^8 FSQ) | 25 Hz | speech_tokenizer_v2.onnx (FunAudioLLM/CosyVoice2-0.5B)           |
| `v3`      | S3TokenizerV3    | 6561 (3^8 FSQ) | 25 Hz | speech_tokenizer_v3.onnx (FunAudioLLM/Fun-CosyVoice3-0.5B-2512)  |

Pipeline: audio at any rate -> 16 kHz (torchaudio) -> `s3tokenizer.log_mel_spectrogram` (128 bins,
100 frames/s, normalised per utterance) -> batch (`s3tokenizer.padding`) -> `model.quantize`. The
package's `quantize` handles audio longer than 30 s itself: 30 s windows with a 4 s overlap
(26 s stride), each window tokenised, then `merge_tokenized_segments` keeps the middle of every
overlap (drops 2 s of tokens on each side of a join).

Weights: the official ONNX file is converted to a state dict by the package's `onnx2torch`
(`onnx2torch_v3` for v3) — ONNX is protobuf, no code runs — or a converted state dict is read
from `.pt` (`weights_only=True`) or `.safetensors`. `s3tokenizer.load_model(path)` is not used
for local files: it chooses the model class and the v1 stride from the file *name*.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.hub import MissingFilesError, load_torch_weights, resolve_file
from core.types import Waveform

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz of the tokenizer's front end
N_MELS = 128  # mel bins of every S3Tokenizer version
MIN_SAMPLES = 201  # torch.stft(center=True) needs more than n_fft // 2 = 200 samples


@dataclass(frozen=True)
class S3Version:
    """Facts of one S3Tokenizer release."""

    package_name: str  # model name inside the s3tokenizer package (selects class and v1 stride)
    codebook_size: int  # N codes
    token_rate: float  # tokens per second
    hub_repo: str  # Hugging Face repo that ships the official ONNX file
    filename: str  # the ONNX file's name there


S3_VERSIONS: dict[str, S3Version] = {
    "v1": S3Version(
        "speech_tokenizer_v1", 4096, 50.0, "FunAudioLLM/CosyVoice-300M", "speech_tokenizer_v1.onnx"
    ),
    "v1_25hz": S3Version(
        "speech_tokenizer_v1_25hz", 4096, 25.0, "FunAudioLLM/CosyVoice-300M-25Hz", "speech_tokenizer_v1.onnx"
    ),
    "v2": S3Version(
        "speech_tokenizer_v2_25hz", 6561, 25.0, "FunAudioLLM/CosyVoice2-0.5B", "speech_tokenizer_v2.onnx"
    ),
    "v3": S3Version(
        "speech_tokenizer_v3_25hz",
        6561,
        25.0,
        "FunAudioLLM/Fun-CosyVoice3-0.5B-2512",
        "speech_tokenizer_v3.onnx",
    ),
}


def s3_version(version: str) -> S3Version:
    if version not in S3_VERSIONS:
        raise ValueError(f"unknown S3Tokenizer version {version!r}; expected one of {', '.join(S3_VERSIONS)}")
    return S3_VERSIONS[version]


def build_s3_model(version: str, **model_config) -> torch.nn.Module:
    """The package's model class for `version`, randomly initialised.

    Args:
        version: "v1", "v1_25hz", "v2" or "v3".
        **model_config: fields of the package's `ModelConfig` (tests pass tiny `n_audio_state`,
            `n_audio_head`, `n_audio_layer`; v2/v3 need `n_audio_state / n_audio_head == 64`, the
            width of their rotary embedding). Defaults are the official sizes.
    """
    import s3tokenizer
    from s3tokenizer.model import ModelConfig
    from s3tokenizer.model_v2 import ModelConfig as ModelConfigV2
    from s3tokenizer.model_v3 import ModelConfigV3

    info = s3_version(version)
    # A fresh config each time: the package's classes share (and V2 mutates) a default instance.
    if version == "v3":
        return s3tokenizer.S3TokenizerV3(info.package_name, ModelConfigV3(**model_config))
    if version == "v2":
        return s3tokenizer.S3TokenizerV2(info.package_name, ModelConfigV2(**model_config))
    return s3tokenizer.S3Tokenizer(
        info.package_name, ModelConfig(n_codebook_size=info.codebook_size, **model_config)
    )


def read_s3_state_dict(path: str | Path, version: str) -> dict[str, torch.Tensor]:
    """State dict of an official ONNX file (package converter) or of a converted .pt / .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise MissingFilesError(f"S3Tokenizer {version}: {path} is missing")
    if path.suffix == ".onnx":
        from s3tokenizer.utils import onnx2torch, onnx2torch_v3

        convert = onnx2torch_v3 if version == "v3" else onnx2torch
        return convert(str(path), None, False)
    return load_torch_weights(path, f"S3Tokenizer {version}")


class S3SpeechTokenizer:
    """`SpeechTokenizer` over an S3Tokenizer model: waveform -> codes at 25 Hz (50 Hz for v1).

    Build it with `S3SpeechTokenizer.from_pretrained(...)`, or wrap a loaded package model.

    Args:
        model: an `s3tokenizer` model (S3Tokenizer / S3TokenizerV2 / S3TokenizerV3) with weights.
        version: which release it is (see `S3_VERSIONS`).
        device: where the model runs (None: where it is).
    """

    def __init__(self, model: torch.nn.Module, version: str = "v2", device: torch.device | str | None = None):
        self.info = s3_version(version)
        self.version = version
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.codebook_size = self.info.codebook_size
        self.token_rate = self.info.token_rate

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path | None = None,
        version: str = "v2",
        *,
        device: torch.device | str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        **model_config,
    ) -> S3SpeechTokenizer:
        """Loads official weights.

        Args:
            source: an .onnx / .pt / .safetensors file, a directory holding the official file
                (e.g. a CosyVoice2-0.5B download), or a hub repo id; None: the version's hub repo.
            version: "v1", "v1_25hz", "v2" (CosyVoice2, default) or "v3".
            device: where the model runs.
            **model_config: non-official sizes (tests); see `build_s3_model`.

        Raises:
            MissingFilesError: the file is missing (offline: not in the hub cache); names it.
            UnsafeWeightsError: a .pt that needs arbitrary classes to unpickle.
        """
        info = s3_version(version)
        path = resolve_file(source or info.hub_repo, info.filename, revision=revision, cache_dir=cache_dir)
        model = build_s3_model(version, **model_config)
        state = read_s3_state_dict(path, version)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not fit S3Tokenizer {version}: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        logger.info("loaded S3Tokenizer %s from %s", version, path)
        return cls(model, version, device)

    # ------------------------------------------------------------------------------ front end

    @staticmethod
    def samples_16k(waveform: Waveform) -> torch.Tensor:
        """Waveform at any rate -> (N,) float32 tensor at 16 kHz."""
        samples = torch.as_tensor(np.asarray(waveform.samples, dtype=np.float32)).reshape(-1)
        if waveform.sample_rate != SAMPLE_RATE:
            import torchaudio.functional as AF

            samples = AF.resample(samples, int(waveform.sample_rate), SAMPLE_RATE)
        return samples

    def log_mel(self, waveform: Waveform) -> torch.Tensor:
        """The package's log-mel of one utterance: (128, N // 160) at 100 frames/s."""
        import s3tokenizer

        audio = self.samples_16k(waveform)
        if len(audio) == 0:
            return torch.zeros(N_MELS, 0)
        if len(audio) < MIN_SAMPLES:  # too short for the STFT's reflect padding
            audio = torch.nn.functional.pad(audio, (0, MIN_SAMPLES - len(audio)))
        return s3tokenizer.log_mel_spectrogram(audio, n_mels=N_MELS)

    # ------------------------------------------------------------------------------ tokenizer

    @torch.inference_mode()
    def encode_batch(self, waveforms: Sequence[Waveform]) -> list[torch.Tensor]:
        """Tokenises several utterances in one batch (each gives what it gives alone).

        Args:
            waveforms: mono audio at any sample rates and lengths (> 30 s: segmented and merged).

        Returns:
            one (T_i,) int64 CPU tensor per input, T_i ~= duration * token_rate.
        """
        import s3tokenizer

        mels = [self.log_mel(w) for w in waveforms]
        result: list[torch.Tensor] = [torch.zeros(0, dtype=torch.long) for _ in mels]
        keep = [i for i, m in enumerate(mels) if m.shape[1] > 0]
        if not keep:
            return result
        batch, lengths = s3tokenizer.padding([mels[i] for i in keep])  # (B, 128, F_max), (B,)
        codes, code_lengths = self.model.quantize(
            batch.to(self.device), lengths.to(self.device)
        )  # (B, T_max)
        for row, i in enumerate(keep):
            result[i] = codes[row, : int(code_lengths[row])].to("cpu", torch.long).clone()
        return result

    def encode(self, waveform: Waveform) -> torch.Tensor:
        """Audio -> codes.

        Args:
            waveform: mono audio at any sample rate.

        Returns:
            (T,) int64 codes in [0, codebook_size), T ~= duration * token_rate.
        """
        return self.encode_batch([waveform])[0]
