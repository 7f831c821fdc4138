"""Embedded units codec: 25 Hz k-means units for one fixed voice, no downloaded weights (DESIGN §5).

Tokenizer: 80-bin log-mel at 100 fps -> DCT to 20 cepstra -> 4 frames stacked (one 40 ms unit)
-> nearest of K k-means centroids. Detokenizer: unit -> mean stacked log-mel of its cluster
(a (K, 4, 80) lookup table) -> optional residual conv decoder -> mel pseudo-inverse -> fast
Griffin-Lim. Streaming decodes overlapping windows (`core.codec.streaming`); offline `decode` runs
the very same windows, so streamed and offline audio are identical.

Lengths: `encode` returns T = ceil(duration * 25) units (the signal is zero-padded to whole units);
`decode` returns exactly 640 samples (40 ms at 16 kHz) per unit.

CLI (`core/codec/units_cli.py`): `python -m core.codec.units fit --wav-dir DIR --out DIR --num-units K`;
`python -m core.codec.units refit-decoder --codec DIR --out DIR --manifest M --wav-dir DIR` trains a
wider decoder on more recordings of the voice, the units (and so any model trained on them) unchanged.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.codec.features import FeatureConfig, MelFeatures, cluster_means, kmeans, nearest_centroid
from core.codec.streaming import ChunkedStreamDecoder, ChunkSchedule, as_token_array, decode_chunked
from core.codec.units_decoder import ResidualMelDecoder, train_residual_decoder
from core.types import Waveform

logger = logging.getLogger(__name__)

CONFIG_NAME = "units_codec.json"
WEIGHTS_NAME = "units_codec.safetensors"
# How far 32 fast Griffin-Lim iterations carry a change (tokens): windows overlapping by this much
# agree at the joins (measured: audio within 1e-4 of a whole-window decode)
GRIFFIN_LIM_SPREAD_TOKENS = 5


@dataclass(frozen=True)
class UnitsCodecConfig:
    """Everything needed to rebuild a `UnitsCodec` besides its tensors."""

    num_units: int  # K: codes are 0..K-1
    features: FeatureConfig = field(default_factory=FeatureConfig)
    griffin_lim_iters: int = 32  # fast Griffin-Lim iterations per decoded window
    griffin_lim_momentum: float = 0.99  # fast Griffin-Lim acceleration
    # Tokens of Griffin-Lim context on each side of the span a streaming window keeps (0: the whole
    # window). The window's context must cover the residual decoder's reach plus Griffin-Lim's
    # spread; Griffin-Lim itself needs only its spread (~5 tokens at 32 iterations), so a wide
    # decoder need not widen the (costly) Griffin-Lim span.
    griffin_lim_context_tokens: int = 0
    # Streaming windows. 8 tokens of context on each side of a join cover the residual decoder's
    # reach (3 tokens) and the spread of 32 Griffin-Lim iterations (~5 tokens): the two windows
    # then agree to < 0.1% around the join (measured), so crossfades are inaudible. Hops of 1, 2 then
    # 4 s: each window re-decodes its context, and on the demo's codec a 20 s reply decoded at a
    # real-time factor of ~0.032 with 1 s hops against ~0.019 with these.
    schedule: ChunkSchedule = field(
        default_factory=lambda: ChunkSchedule(
            first_chunk_tokens=10,
            hop_tokens=25,
            left_context_tokens=8,
            lookahead_tokens=8,
            crossfade_samples=320,
            hop_growth=2.0,
            max_hop_tokens=100,
        )
    )
    decoder_channels: int = 0  # width of the residual conv decoder; 0 = lookup only
    decoder_blocks: int = 4  # residual blocks of the decoder
    decoder_kernel: int = 5  # conv kernel (frames)
    # Dilation of each residual block (empty: 1 for all). Receptive field in frames:
    # (kernel - 1) * (2 + sum(dilations)) + 1, e.g. 25 frames (6 units) for 4 undilated blocks.
    decoder_dilations: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.num_units < 2:
            raise ValueError(f"num_units must be >= 2, got {self.num_units}")
        if self.griffin_lim_iters < 0:
            raise ValueError(f"griffin_lim_iters must be >= 0, got {self.griffin_lim_iters}")
        if self.griffin_lim_context_tokens < 0:
            raise ValueError(
                f"griffin_lim_context_tokens must be >= 0, got {self.griffin_lim_context_tokens}"
            )
        if self.decoder_channels < 0 or self.decoder_kernel % 2 == 0:
            raise ValueError("decoder_channels must be >= 0 and decoder_kernel odd")
        object.__setattr__(self, "decoder_dilations", tuple(int(d) for d in self.decoder_dilations))
        if self.decoder_dilations and (
            len(self.decoder_dilations) != self.decoder_blocks or min(self.decoder_dilations) < 1
        ):
            raise ValueError(
                f"decoder_dilations must hold decoder_blocks={self.decoder_blocks} values >= 1, "
                f"got {list(self.decoder_dilations)}"
            )

    @property
    def decoder_reach_frames(self) -> int:
        """Frames on each side of a frame that the residual decoder sees (0 without decoder)."""
        if self.decoder_channels == 0:
            return 0
        dilations = self.decoder_dilations or (1,) * self.decoder_blocks
        return (self.decoder_kernel // 2) * (2 + sum(dilations))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UnitsCodecConfig:
        data = dict(data)
        data["features"] = FeatureConfig(**data.get("features", {}))
        data["schedule"] = ChunkSchedule(**data.get("schedule", {}))
        return cls(**data)


def waveform_tensor(waveform: Waveform, sample_rate: int) -> torch.Tensor:
    """Waveform -> (N,) float32 tensor at `sample_rate` (resampled when needed)."""
    samples = torch.as_tensor(np.asarray(waveform.samples, dtype=np.float32)).reshape(-1)
    if waveform.sample_rate != sample_rate:
        import torchaudio.functional as AF

        samples = AF.resample(samples, waveform.sample_rate, sample_rate)
    return samples


def build_decoder(config: UnitsCodecConfig) -> ResidualMelDecoder:
    """A fresh (identity) residual decoder of the config's shape."""
    return ResidualMelDecoder(
        config.features.n_mels,
        config.decoder_channels,
        config.decoder_blocks,
        config.decoder_kernel,
        config.decoder_dilations,
    )


class UnitsCodec:
    """Speech tokenizer + detokenizer of the embedded units codec (one fixed voice).

    Build it with `UnitsCodec.fit(...)` or `UnitsCodec.load(directory)`.

    Args:
        config: settings.
        centroids: (K, 4 * n_cepstra) k-means centroids of stacked cepstra.
        unit_log_mel: (K, 4, n_mels) mean log-mel of each unit's members.
        decoder: optional residual decoder (`config.decoder_channels > 0`).
    """

    token_rate = 25.0

    def __init__(
        self,
        config: UnitsCodecConfig,
        centroids: torch.Tensor,
        unit_log_mel: torch.Tensor,
        decoder: ResidualMelDecoder | None = None,
    ) -> None:
        fc = config.features
        k, dim = config.num_units, fc.frames_per_unit * fc.n_cepstra
        if centroids.shape != (k, dim) or unit_log_mel.shape != (k, fc.frames_per_unit, fc.n_mels):
            raise ValueError(f"tensor shapes {tuple(centroids.shape)}, {tuple(unit_log_mel.shape)} != config")
        self.config = config
        self.mel = MelFeatures(fc)
        self.centroids = centroids.float()
        self.unit_log_mel = unit_log_mel.float()
        self.decoder = decoder.eval() if decoder is not None else None
        self.token_rate = fc.unit_rate

    @property
    def codebook_size(self) -> int:
        return self.config.num_units

    @property
    def sample_rate(self) -> int:
        return self.config.features.sample_rate

    @property
    def samples_per_token(self) -> int:
        return self.config.features.samples_per_unit

    def config_dict(self) -> dict:
        """All settings as plain JSON-able data (what `save` writes to units_codec.json)."""
        return {"type": "units", **self.config.to_dict()}

    # ------------------------------------------------------------------------------- tokenizer

    def encode(self, waveform: Waveform) -> torch.Tensor:
        """Audio -> units.

        Args:
            waveform: mono audio at any sample rate (resampled to 16 kHz).

        Returns:
            (T,) int64 units in [0, K), T = ceil(duration * 25).
        """
        features, _ = self.mel.unit_features(waveform_tensor(waveform, self.sample_rate))  # (T, 80)
        return nearest_centroid(features, self.centroids)

    # ----------------------------------------------------------------------------- detokenizer

    def check_tokens(self, tokens: np.ndarray) -> None:
        """Raises ValueError unless every token is in [0, K)."""
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.codebook_size):
            bad = tokens[(tokens < 0) | (tokens >= self.codebook_size)]
            raise ValueError(f"speech tokens must be in [0, {self.codebook_size}), got {bad[:8].tolist()}")

    @torch.no_grad()
    def tokens_to_log_mel(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> torch.Tensor:
        """Units -> log-mel frames (lookup + residual decoder).

        Args:
            tokens: (T,) units in [0, K).

        Returns:
            (4 T, n_mels) float32 log-mel.
        """
        array = as_token_array(tokens)
        self.check_tokens(array)
        log_mel = self.unit_log_mel[torch.from_numpy(array)].reshape(-1, self.config.features.n_mels)
        if self.decoder is not None and len(array):
            log_mel = self.decoder(log_mel[None])[0]
        return log_mel

    @torch.no_grad()
    def decode_window(
        self, tokens: Sequence[int] | torch.Tensor | np.ndarray, exact: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Decodes one token sequence in a single Griffin-Lim pass (no chunking).

        Args:
            tokens: (T,) units in [0, K).
            exact: (a, b): only tokens [a, b) must be right (a streaming window's kept span). With
                `griffin_lim_context_tokens` > 0, Griffin-Lim runs on that span plus as many tokens
                on each side, and the samples outside are zero; the residual decoder still sees the
                whole window.

        Returns:
            (T * 640,) float32 waveform in [-1, 1].
        """
        fpu, spt = self.config.features.frames_per_unit, self.samples_per_token
        log_mel = self.tokens_to_log_mel(tokens)  # (4T, n_mels)
        n_tokens = log_mel.shape[0] // fpu
        lo, hi = 0, n_tokens
        context = self.config.griffin_lim_context_tokens
        if exact is not None and context > 0:
            lo, hi = max(0, exact[0] - context), min(n_tokens, exact[1] + context)
        magnitude = self.mel.log_mel_to_magnitude(log_mel[lo * fpu : hi * fpu])  # (frames, n_freqs)
        # Zero initial phase: deterministic and the same at every position, so overlapping
        # streaming windows start alike and agree where they overlap.
        audio = self.mel.griffin_lim(
            magnitude, self.config.griffin_lim_iters, self.config.griffin_lim_momentum, init_phase=None
        )
        audio = audio.clamp(-1.0, 1.0).numpy().astype(np.float32, copy=False)
        if (lo, hi) == (0, n_tokens):
            return audio
        out = np.zeros(n_tokens * spt, dtype=np.float32)
        out[lo * spt : hi * spt] = audio
        return out

    def decode(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
        """Offline decode (the same windows as `stream()`, so both give identical audio).

        Args:
            tokens: (T,) units in [0, K).

        Returns:
            (T * 640,) float32 waveform at 16 kHz.
        """
        array = as_token_array(tokens)
        self.check_tokens(array)
        return decode_chunked(
            self.decode_window, array, self.samples_per_token, self.config.schedule, exact_span=True
        )

    def stream(self) -> ChunkedStreamDecoder:
        """A fresh streaming decoder (`push(tokens)` / `flush()`)."""
        return ChunkedStreamDecoder(
            self.decode_window,
            self.samples_per_token,
            self.config.schedule,
            check_tokens=self.check_tokens,
            exact_span=True,
        )

    # --------------------------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        waveforms: list[Waveform],
        num_units: int,
        *,
        seed: int = 0,
        kmeans_iters: int = 30,
        decoder_steps: int = 0,
        progress: bool = False,
        **config_overrides,
    ) -> UnitsCodec:
        """Learns units (and optionally the residual decoder) from recordings of the target voice.

        Args:
            waveforms: recordings of the one voice (any sample rate).
            num_units: K, the codebook size.
            seed: seeds k-means++ and decoder training.
            kmeans_iters: Lloyd iterations.
            decoder_steps: residual decoder training steps (0 = lookup-only codec).
            progress: show tqdm bars.
            **config_overrides: other `UnitsCodecConfig` fields (e.g. griffin_lim_iters).

        Returns:
            the fitted codec.
        """
        if decoder_steps > 0:
            config_overrides.setdefault("decoder_channels", 256)
        config = UnitsCodecConfig(num_units=num_units, **config_overrides)
        fc = config.features
        mel = MelFeatures(fc)
        per_utt = [mel.unit_features(waveform_tensor(w, fc.sample_rate)) for w in waveforms if len(w.samples)]
        features = torch.cat([f for f, _ in per_utt])  # (M, 4 n_cepstra)
        if len(features) < num_units:
            raise ValueError(f"need at least num_units={num_units} units of audio, got {len(features)}")
        log_mels = [mel.stack_units(m) for _, m in per_utt]  # [(T_i, 4 n_mels)]
        minutes = len(features) / fc.unit_rate / 60
        logger.info("k-means: %d units (%.1f min of audio), K=%d", len(features), minutes, num_units)
        # Raw (unstandardised) cepstra: energy and spectral envelope dominate the distance, which
        # measured better than standardised features (held-out log-mel L1 0.46 vs 0.51, K=1024).
        centroids, assignment = kmeans(features, num_units, kmeans_iters, seed, progress)
        unit_log_mel = cluster_means(torch.cat(log_mels), assignment, num_units)  # (K, 4 n_mels)
        empty = torch.bincount(assignment, minlength=num_units) == 0
        if empty.any():  # never assigned: decode the centroid itself (inverse DCT)
            stacked = centroids[empty].reshape(-1, fc.n_cepstra)
            unit_log_mel[empty] = mel.cepstra_to_log_mel(stacked).reshape(int(empty.sum()), -1)
        unit_log_mel = unit_log_mel.reshape(num_units, fc.frames_per_unit, fc.n_mels)
        codec = cls(config, centroids, unit_log_mel)
        if decoder_steps > 0:
            targets = [m.reshape(-1, fc.n_mels) for m in log_mels]
            units = [a for a in torch.split(assignment, [len(f) for f, _ in per_utt])]
            codec.train_decoder(units, targets, decoder_steps, seed=seed, progress=progress)
        return codec

    def refit_decoder(
        self,
        waveforms: list[Waveform],
        steps: int,
        *,
        channels: int = 256,
        blocks: int = 8,
        kernel: int = 3,
        dilations: Sequence[int] = (1, 2, 4, 8, 1, 2, 4, 8),
        seed: int = 0,
        progress: bool = False,
        **train_options,
    ) -> list[float]:
        """Replaces the residual decoder by a new one trained on more recordings; units unchanged.

        The centroids (the token space a model was trained on) stay as they are: each recording is
        encoded with them and the decoder learns to map those units back to the recording's log-mel.
        The streaming lookahead and left context grow to cover the new decoder's reach plus the
        Griffin-Lim spread (5 tokens), so that overlapping windows still agree at the joins;
        Griffin-Lim itself runs on the kept span plus its spread only (`griffin_lim_context_tokens`).

        Args:
            waveforms: recordings of the codec's voice (any sample rate); shuffled (seeded) before
                training, so the held-out tail mixes every source.
            steps: optimiser steps.
            channels, blocks, kernel, dilations: the new decoder's shape.
            seed: seeds the shuffle, initialisation and crops.
            progress: show tqdm bars.
            **train_options: batch_size, crop_units, lr, val_fraction (see `train_decoder`).

        Returns:
            the training L1 loss of every step.
        """
        from tqdm.auto import tqdm

        fc = self.config.features
        config = replace(
            self.config,
            decoder_channels=channels,
            decoder_blocks=blocks,
            decoder_kernel=kernel,
            decoder_dilations=tuple(dilations),
        )
        reach_tokens = math.ceil(config.decoder_reach_frames / fc.frames_per_unit)
        context = max(config.schedule.lookahead_tokens, reach_tokens + GRIFFIN_LIM_SPREAD_TOKENS)
        self.config = replace(
            config,
            # Griffin-Lim keeps its own spread, not the decoder's wider context
            griffin_lim_context_tokens=config.griffin_lim_context_tokens or GRIFFIN_LIM_SPREAD_TOKENS,
            schedule=replace(
                config.schedule,
                lookahead_tokens=context,
                left_context_tokens=max(config.schedule.left_context_tokens, context),
            ),
        )
        order = torch.randperm(len(waveforms), generator=torch.Generator().manual_seed(seed)).tolist()
        units, targets = [], []
        for i in tqdm(order, desc="encode", disable=not progress):
            features, log_mel = self.mel.unit_features(waveform_tensor(waveforms[i], fc.sample_rate))
            if len(features):
                units.append(nearest_centroid(features, self.centroids))
                targets.append(log_mel.reshape(-1, fc.n_mels))
        self.decoder = None
        return self.train_decoder(units, targets, steps, seed=seed, progress=progress, **train_options)

    def train_decoder(
        self,
        units: list[torch.Tensor],
        targets: list[torch.Tensor],
        steps: int,
        *,
        batch_size: int = 8,
        crop_units: int = 64,
        lr: float = 1e-3,
        val_fraction: float = 0.05,
        seed: int = 0,
        progress: bool = False,
    ) -> list[float]:
        """Trains the residual decoder (created if absent) with L1 on log-mel; AdamW, cosine lr.

        The last `val_fraction` of the audio is held out (when it is at least one crop long) and
        the weights with the lowest held-out L1 are kept (step 0, the lookup table, included):
        on 14 min of speech the decoder starts to overfit after ~1000 steps.

        Args:
            units: per utterance (T_i,) int64 units of the recording.
            targets: per utterance (4 T_i, n_mels) log-mel of the same recording.
            steps: optimiser steps.
            batch_size: random crops per step.
            crop_units: crop length in units (4 frames each).
            lr: peak learning rate.
            val_fraction: share of the units held out for choosing the best weights.
            seed: seeds initialisation and crops.
            progress: show a tqdm bar.

        Returns:
            the training L1 loss of every step (the first equals the lookup table's loss).
        """
        c = self.config
        torch.manual_seed(seed)
        if self.decoder is None:
            if c.decoder_channels == 0:
                self.config = c = replace(c, decoder_channels=256)
            self.decoder = build_decoder(c)
        return train_residual_decoder(
            self.decoder,
            self.unit_log_mel,
            units,
            targets,
            steps,
            frames_per_unit=c.features.frames_per_unit,
            batch_size=batch_size,
            crop_units=crop_units,
            lr=lr,
            val_fraction=val_fraction,
            seed=seed,
            progress=progress,
        )

    # ------------------------------------------------------------------------------ save/load

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor `save` writes (decoder weights prefixed with "decoder.")."""
        tensors = {"centroids": self.centroids, "unit_log_mel": self.unit_log_mel}
        if self.decoder is not None:
            tensors.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def save(self, directory: str | Path) -> None:
        """Writes units_codec.json (settings) and units_codec.safetensors (tensors)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        save_file(self.state_tensors(), str(directory / WEIGHTS_NAME))

    @classmethod
    def load(cls, directory: str | Path) -> UnitsCodec:
        """Reads a codec written by `save` (safetensors only, no pickle)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        data = json.loads((directory / CONFIG_NAME).read_text())
        if data.pop("type", "units") != "units":
            raise ValueError(f"{directory / CONFIG_NAME} is not a units codec config")
        config = UnitsCodecConfig.from_dict(data)
        tensors = load_file(str(directory / WEIGHTS_NAME))
        decoder = None
        if config.decoder_channels > 0:
            decoder = build_decoder(config)
            decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
        return cls(config, tensors["centroids"], tensors["unit_log_mel"], decoder)


if (
    __name__ == "__main__"
):  # the CLI lives in core.codec.units_cli; `python -m core.codec.units` still runs it
    from core.codec.units_cli import main

    main()
