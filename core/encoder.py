"""Continuous speech encoder (paper section 3.1): Whisper encoder + adapter down to 5 Hz.

User speech -> 16 kHz log-mel (100 frames/s) -> Whisper's audio encoder (stride-2 conv: 50 Hz)
-> adapter: stack `downsample` consecutive encoder frames (50 Hz -> 5 Hz) -> MLP to the LLM width.
The 5 Hz features replace the `<|AUDIO|>` placeholders of the prompt.

Whisper's encoder sees at most one 30 s window (`2 * n_audio_ctx` mel frames) and has no attention
padding mask. Longer audio is split into consecutive windows whose outputs are concatenated. A
batch never mixes real frames with padding inside a window, so every item gives exactly the result
it gives alone:

- `pad_to_window=False`: each window runs at its exact length with the positional embedding
  sliced (windows of equal length are batched together);
- `pad_to_window=True`: each window is padded to the full 30 s as real Whisper expects (the
  padding value is what Whisper's own zero-padded audio turns into, see `whisper_padding_value`),
  and only the outputs of real frames are kept. Use this with pretrained Whisper weights.

`num_output_frames` gives the exact number of 5 Hz features for a number of mel frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.types import Waveform

SAMPLE_RATE = 16000  # Hz expected by Whisper's front end
HOP_LENGTH = 160  # samples between mel frames
MEL_FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
SUPPORTED_N_MELS = (80, 128)  # the mel filter banks whisper.audio ships


@dataclass(frozen=True)
class EncoderConfig:
    """Continuous speech encoder: Whisper audio encoder dims + 5 Hz adapter."""

    llm_hidden_size: int  # width of the adapter output (the shared LLM's hidden size)
    n_mels: int = 128  # mel bins of the front end: 128 for large-v3, 80 for older/tiny Whisper
    n_audio_ctx: int = 1500  # encoder positions of one 30 s window (3000 mel frames / conv stride 2)
    n_audio_state: int = 1280  # encoder width
    n_audio_head: int = 20  # attention heads per encoder block
    n_audio_layer: int = 32  # encoder blocks
    downsample: int = 10  # encoder frames stacked per adapter output: 50 Hz -> 5 Hz
    adapter_hidden: int = 2048  # hidden width of the adapter MLP
    pad_to_window: bool = True  # pad each window to the full 30 s (pretrained Whisper) or run exact lengths
    # Multiplier of Whisper's sinusoidal positional embedding. 1.0 for pretrained Whisper. A randomly
    # initialised conv stem outputs features ~6x smaller than the sinusoids (norm ~1.7 vs ~10 at width
    # 192), so every utterance starts out looking alike (cosine 0.98) and training collapses; 0.1 fixes it.
    positional_scale: float = 1.0
    # LayerNorm on the adapter output, its gain set to the text embeddings' RMS by `match_output_scale`:
    # keeps speech features at the scale of the token embeddings they sit between.
    output_norm: bool = False

    def __post_init__(self) -> None:
        for name in (
            "llm_hidden_size",
            "n_mels",
            "n_audio_ctx",
            "n_audio_state",
            "n_audio_head",
            "n_audio_layer",
            "downsample",
            "adapter_hidden",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")
        if self.n_mels not in SUPPORTED_N_MELS:
            raise ValueError(f"EncoderConfig.n_mels must be one of {SUPPORTED_N_MELS}, got {self.n_mels}")
        if self.n_audio_state % self.n_audio_head:
            raise ValueError(
                f"EncoderConfig.n_audio_state ({self.n_audio_state}) must be divisible by "
                f"n_audio_head ({self.n_audio_head})"
            )
        if self.n_audio_state % 2 or self.n_audio_state < 4:
            # whisper.model.sinusoids splits the width into sin/cos halves of >= 2 channels
            raise ValueError(f"EncoderConfig.n_audio_state must be even and >= 4, got {self.n_audio_state}")
        for name in ("pad_to_window", "output_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EncoderConfig.{name} must be a bool, got {getattr(self, name)!r}")
        scale = self.positional_scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not math.isfinite(scale)
            or scale < 0
        ):
            raise ValueError(f"EncoderConfig.positional_scale must be a finite number >= 0, got {scale!r}")

    @property
    def window_mel_frames(self) -> int:
        """Mel frames of one encoder window (3000 = 30 s for real Whisper)."""
        return 2 * self.n_audio_ctx

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"EncoderConfig: unknown field(s) {unknown}")
        return cls(**data)


def tiny_encoder_config(llm_hidden_size: int) -> EncoderConfig:
    """A fast encoder for tests and the demo (80 mels, width 64, 2 heads, 2 layers)."""
    return EncoderConfig(
        llm_hidden_size=llm_hidden_size,
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=2,
        downsample=10,
        adapter_hidden=128,
        pad_to_window=False,
    )


def whisper_large_v3_encoder_config(llm_hidden_size: int) -> EncoderConfig:
    """Whisper large-v3's encoder (the paper's CSE) with a 5 Hz adapter to `llm_hidden_size`."""
    return EncoderConfig(
        llm_hidden_size=llm_hidden_size,
        n_mels=128,
        n_audio_ctx=1500,
        n_audio_state=1280,
        n_audio_head=20,
        n_audio_layer=32,
        downsample=10,
        adapter_hidden=2048,
        pad_to_window=True,
    )


# ---------------------------------------------------------------------------------------------
# Front end and frame arithmetic


def log_mel(waveform: Waveform, n_mels: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Whisper's log-mel spectrogram of a 16 kHz waveform, not padded to 30 s.

    Args:
        waveform: mono audio at 16 kHz (use `core.audio.load_audio(..., target_rate=16000)`).
        n_mels: 80 or 128.
        device: where to compute (None: CPU).

    Returns:
        (n_mels, num_samples // 160) float32 tensor (100 frames per second).
    """
    import whisper.audio

    if waveform.sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"log_mel needs {SAMPLE_RATE} Hz audio, got {waveform.sample_rate} Hz; resample it first "
            "(core.audio.load_audio(source, target_rate=16000))"
        )
    samples = np.ascontiguousarray(waveform.samples, dtype=np.float32)
    num_frames = len(samples) // HOP_LENGTH  # whisper drops the STFT's last (centred) frame
    if num_frames == 0:
        return torch.zeros(n_mels, 0, device=device)
    audio = torch.from_numpy(samples)
    min_samples = 400 // 2 + 1  # the STFT's reflect padding needs more samples than n_fft // 2
    padding = max(0, min_samples - len(samples))
    mel = whisper.audio.log_mel_spectrogram(audio, n_mels=n_mels, padding=padding, device=device)
    return mel[:, :num_frames]


def pad_mels(mels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads (n_mels, F_i) spectrograms into a batch.

    Returns:
        mels (B, n_mels, max F_i) zero-padded, and mel_lengths (B,) long.
    """
    if not mels:
        raise ValueError("pad_mels needs at least one spectrogram")
    lengths = torch.tensor([m.shape[-1] for m in mels], dtype=torch.long)
    batch = mels[0].new_zeros(len(mels), mels[0].shape[0], int(lengths.max()))
    for i, mel in enumerate(mels):
        batch[i, :, : mel.shape[-1]] = mel
    return batch, lengths


def encoder_frames(mel_frames: int, cfg: EncoderConfig) -> int:
    """Encoder (50 Hz) frames for `mel_frames`: each window of w mel frames gives ceil(w / 2)."""
    full_windows, rest = divmod(int(mel_frames), cfg.window_mel_frames)
    return full_windows * cfg.n_audio_ctx + (rest + 1) // 2


def num_output_frames(mel_frames: int, cfg: EncoderConfig) -> int:
    """Exact number of 5 Hz features `SpeechEncoder` produces for `mel_frames` mel frames.

    = ceil(encoder_frames / downsample), encoder_frames = sum over windows of ceil(w / 2).
    The prompt builder reserves this many `<|AUDIO|>` positions.
    """
    if mel_frames < 0:
        raise ValueError(f"mel_frames must be >= 0, got {mel_frames}")
    return math.ceil(encoder_frames(mel_frames, cfg) / cfg.downsample)


def max_mel_frames_for(positions: int, cfg: EncoderConfig) -> int:
    """The largest number of mel frames whose features fit in `positions` 5 Hz positions."""
    if positions < 0:
        raise ValueError(f"positions must be >= 0, got {positions}")
    full_windows, rest = divmod(positions * cfg.downsample, cfg.n_audio_ctx)  # encoder frames
    return full_windows * cfg.window_mel_frames + 2 * rest


def whisper_padding_value(mel: torch.Tensor) -> torch.Tensor:
    """The log-mel value of the zero audio Whisper pads with, for an utterance's mel (n_mels, F).

    `whisper.audio.log_mel_spectrogram` clamps log10 power at (max - 8) and maps x -> (x + 4) / 4;
    silence (log10 power -10 before the clamp) therefore becomes max(mel.max() - 2, -1.5).
    """
    if mel.numel() == 0:
        return mel.new_tensor(-1.5)
    return torch.clamp(mel.max() - 2.0, min=-1.5)


# ---------------------------------------------------------------------------------------------
# Module


class SpeechEncoder(nn.Module):
    """Whisper audio encoder + adapter: log-mel (100 Hz) -> features at 5 Hz and LLM width."""

    def __init__(
        self, cfg: EncoderConfig, *, device: torch.device | None = None, dtype: torch.dtype | None = None
    ):
        super().__init__()
        import whisper.model

        self.cfg = cfg
        # The real openai-whisper class, so that Whisper checkpoints load by parameter name.
        self.whisper = whisper.model.AudioEncoder(
            cfg.n_mels, cfg.n_audio_ctx, cfg.n_audio_state, cfg.n_audio_head, cfg.n_audio_layer
        )
        self.adapter = nn.Sequential(
            nn.Linear(cfg.downsample * cfg.n_audio_state, cfg.adapter_hidden),
            nn.GELU(),
            nn.Linear(cfg.adapter_hidden, cfg.llm_hidden_size),
        )
        self.output_norm = nn.LayerNorm(cfg.llm_hidden_size) if cfg.output_norm else None
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, mels: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes a batch of log-mel spectrograms of any lengths.

        Args:
            mels: (B, n_mels, F) log-mel, right-padded (padding values are never read).
            mel_lengths: (B,) long, valid mel frames per item (0 allowed).

        Returns:
            features (B, N, llm_hidden_size) with N = max(out_lengths) (zeros past each length),
            out_lengths (B,) long = num_output_frames(mel_lengths).
        """
        cfg = self.cfg
        states, frames = self.encode_frames(mels, mel_lengths, pad_to=cfg.downsample)
        max_out = states.shape[1] // cfg.downsample
        stacked = states.reshape(len(frames), max_out, cfg.downsample * cfg.n_audio_state)  # (B, N, k*d)
        features = self.adapter(stacked)  # (B, N, llm_hidden_size)
        if self.output_norm is not None:
            features = _layer_norm(self.output_norm, features)
        out_lengths = (frames + cfg.downsample - 1) // cfg.downsample  # = num_output_frames(mel_lengths)
        valid = torch.arange(max_out, device=features.device)[None, :] < out_lengths[:, None]  # (B, N)
        return features * valid[..., None].to(features.dtype), out_lengths

    def encode_frames(
        self, mels: torch.Tensor, mel_lengths: torch.Tensor, pad_to: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Whisper encoder's 50 Hz states of every item, windows concatenated (no adapter).

        Args:
            mels: (B, n_mels, F) log-mel, right-padded (padding values are never read).
            mel_lengths: (B,) long, valid mel frames per item (0 allowed).
            pad_to: the time axis is zero-padded to a multiple of this (the adapter's `downsample`).

        Returns:
            states (B, T, n_audio_state) (zeros past each length), lengths (B,) long = encoder_frames.
        """
        cfg = self.cfg
        if mels.dim() != 3 or mels.shape[1] != cfg.n_mels:
            raise ValueError(f"mels must be (B, {cfg.n_mels}, F), got {tuple(mels.shape)}")
        lengths = [int(n) for n in mel_lengths.tolist()]
        if len(lengths) != mels.shape[0] or any(n < 0 or n > mels.shape[2] for n in lengths):
            raise ValueError(f"mel_lengths {lengths} do not fit mels of shape {tuple(mels.shape)}")
        mels = mels.to(self.whisper.conv1.weight.dtype)

        # Split every item into windows: (item, start, length).
        window = cfg.window_mel_frames
        segments = [
            (b, start, min(window, n - start)) for b, n in enumerate(lengths) for start in range(0, n, window)
        ]
        # one (ceil(length / 2), n_state) output per segment
        outputs = self._encode_segments(mels, lengths, segments)
        frames = [encoder_frames(n, cfg) for n in lengths]
        total = math.ceil(max(frames, default=0) / pad_to) * pad_to
        states = mels.new_zeros(len(lengths), total, cfg.n_audio_state)
        fill = [0] * len(lengths)
        for (b, _, _), out in zip(segments, outputs, strict=True):
            states[b, fill[b] : fill[b] + out.shape[0]] = out
            fill[b] += out.shape[0]
        return states, torch.tensor(frames, dtype=torch.long, device=states.device)

    @torch.no_grad()
    def match_output_scale(self, embeddings: torch.Tensor) -> float:
        """Sets the output LayerNorm's gain to the RMS of `embeddings` (the LLM's token embedding table).

        A LayerNorm output has unit RMS per element; text token embeddings of a small LLM have an RMS of
        ~0.02-0.2, so without this the speech features would dominate every attention score at first.

        Returns:
            the gain that was set.
        """
        if self.output_norm is None:
            raise ValueError("match_output_scale needs EncoderConfig.output_norm=True")
        rms = float(embeddings.float().pow(2).mean().sqrt())
        self.output_norm.weight.fill_(rms)
        self.output_norm.bias.zero_()
        return rms

    def _encode_segments(
        self, mels: torch.Tensor, lengths: list[int], segments: list[tuple[int, int, int]]
    ) -> list[torch.Tensor]:
        """Runs the Whisper encoder on every (item, start, length) window; returns (ceil(length/2), n_state) each."""
        outputs: list[torch.Tensor | None] = [None] * len(segments)
        if not segments:
            return []
        window = self.cfg.window_mel_frames
        if self.cfg.pad_to_window:
            pad_values = {b: whisper_padding_value(mels[b, :, : lengths[b]]) for b, _, _ in segments}
            batch = mels.new_empty(len(segments), self.cfg.n_mels, window)  # (S, n_mels, 2 * n_audio_ctx)
            for i, (b, start, length) in enumerate(segments):
                batch[i, :, :length] = mels[b, :, start : start + length]
                batch[i, :, length:] = pad_values[b]
            encoded = self._encode_windows(batch)  # (S, n_audio_ctx, n_state)
            return [encoded[i, : (length + 1) // 2] for i, (_, _, length) in enumerate(segments)]
        by_length: dict[int, list[int]] = {}
        for i, (_, _, length) in enumerate(segments):
            by_length.setdefault(length, []).append(i)
        for length, indices in by_length.items():
            batch = torch.stack(
                [mels[segments[i][0], :, segments[i][1] : segments[i][1] + length] for i in indices]
            )
            encoded = self._encode_windows(batch)  # (S_len, ceil(length / 2), n_state)
            for j, i in enumerate(indices):
                outputs[i] = encoded[j]
        return outputs  # type: ignore[return-value]

    def _encode_windows(self, x: torch.Tensor) -> torch.Tensor:
        """whisper.model.AudioEncoder.forward without its fixed 30 s shape assertion (and bf16-safe).

        Args:
            x: (S, n_mels, w) with 1 <= w <= 2 * n_audio_ctx.

        Returns:
            (S, ceil(w / 2), n_audio_state).
        """
        encoder = self.whisper
        x = F.gelu(encoder.conv1(x))  # (S, n_state, w)
        x = F.gelu(encoder.conv2(x))  # (S, n_state, ceil(w / 2)): stride 2
        x = x.permute(0, 2, 1)  # (S, n, n_state)
        x = (x + self.cfg.positional_scale * encoder.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in encoder.blocks:  # ResidualAttentionBlock.forward without cross-attention
            x = x + block.attn(_layer_norm(block.attn_ln, x))[0]
            x = x + block.mlp(_layer_norm(block.mlp_ln, x))
        return _layer_norm(encoder.ln_post, x)


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """whisper.model.LayerNorm (statistics in fp32, output in x's dtype) for parameters of any dtype.

    Whisper keeps its parameters in fp32 and casts only activations; calling its LayerNorm after
    the module was cast to bf16 fails ("mixed dtype"), so the parameters are upcast here too.
    """
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps).to(x.dtype)
