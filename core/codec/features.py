"""Log-mel analysis and Griffin-Lim synthesis for the embedded units codec.

Frames are aligned to units: a unit (25 Hz, 40 ms, `samples_per_unit = 640` samples at 16 kHz) owns
`frames_per_unit = 4` consecutive 100 fps frames. `torch.stft(center=True)` places frame f at sample
`f * hop_length`, so unit t owns the frames centred on samples `640 t + {0, 160, 320, 480}`; a signal
of exactly `T * 640` samples has `4 T + 1` frames and the last one is dropped. The inverse direction
(`log_mel_to_magnitude` + `griffin_lim`) returns exactly `T * 640` samples for `4 T` frames.

Everything is plain torch on CPU (vectorised STFT/ISTFT), float32.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch
import torchaudio.functional as AF
from torch.nn import functional as nn_functional

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureConfig:
    """Analysis/synthesis settings shared by the tokenizer and the detokenizer."""

    sample_rate: int = 16000  # Hz of the analysed and synthesised audio
    n_fft: int = 512  # FFT size (257 linear frequency bins)
    win_length: int = 512  # analysis/synthesis Hann window (32 ms; 69% overlap helps Griffin-Lim)
    hop_length: int = 160  # 10 ms -> 100 frames per second
    n_mels: int = 80  # mel bands of the log-mel spectrogram
    f_min: float = 0.0  # lowest mel band edge (Hz)
    f_max: float = 8000.0  # highest mel band edge (Hz), Nyquist at 16 kHz
    log_floor: float = 1e-5  # log(max(mel, floor)): silence sits at log(1e-5) = -11.5
    n_cepstra: int = 20  # DCT-II coefficients kept per frame for clustering
    frames_per_unit: int = 4  # 100 fps / 4 = 25 Hz units

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if not 0 < self.n_cepstra <= self.n_mels:
            raise ValueError(f"n_cepstra ({self.n_cepstra}) must be in [1, n_mels={self.n_mels}]")
        if self.sample_rate % (self.hop_length * self.frames_per_unit) != 0:
            raise ValueError("sample_rate must be a multiple of hop_length * frames_per_unit")

    @property
    def samples_per_unit(self) -> int:
        """Samples per 25 Hz unit: 160 * 4 = 640 at 16 kHz."""
        return self.hop_length * self.frames_per_unit

    @property
    def unit_rate(self) -> float:
        """Units per second: 16000 / 640 = 25.0."""
        return self.sample_rate / self.samples_per_unit

    def to_dict(self) -> dict:
        return asdict(self)


class MelFeatures:
    """Log-mel / cepstra analysis and mel-inverse + fast Griffin-Lim synthesis.

    Args:
        config: the shared `FeatureConfig`.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        c = self.config
        self.window = torch.hann_window(c.win_length, periodic=True)  # (win_length,)
        left = (c.n_fft - c.win_length) // 2  # torch.stft centres a shorter window in the FFT frame
        self.fft_window = nn_functional.pad(self.window, (left, c.n_fft - c.win_length - left))  # (n_fft,)
        # (n_freqs, n_mels), slaney-normalised triangles so a band's weight is independent of width
        self.mel_fb = AF.melscale_fbanks(
            n_freqs=c.n_fft // 2 + 1,
            f_min=c.f_min,
            f_max=c.f_max,
            n_mels=c.n_mels,
            sample_rate=c.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.mel_fb_pinv = torch.linalg.pinv(self.mel_fb)  # (n_mels, n_freqs)
        self.dct = AF.create_dct(c.n_cepstra, c.n_mels, norm="ortho")  # (n_mels, n_cepstra), orthonormal

    # ----------------------------------------------------------------------------------- analysis

    def log_mel(self, samples: torch.Tensor) -> torch.Tensor:
        """Log-mel spectrogram of a signal whose length is a whole number of units.

        Args:
            samples: (N,) float32 with N = T * samples_per_unit (pad with `pad_to_units` first).

        Returns:
            (4 T, n_mels) float32 log-mel frames (natural log of the mel magnitude).
        """
        c = self.config
        num_frames = samples.shape[-1] // c.hop_length
        if num_frames == 0:
            return torch.zeros(0, c.n_mels)
        spec = torch.stft(
            samples,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (n_freqs, num_frames + 1)
        magnitude = spec.abs()[:, :num_frames].T  # (4T, n_freqs)
        return torch.log(torch.clamp(magnitude @ self.mel_fb, min=c.log_floor))  # (4T, n_mels)

    def pad_to_units(self, samples: torch.Tensor) -> torch.Tensor:
        """Zero-pads (N,) samples to T * samples_per_unit with T = ceil(N / samples_per_unit)."""
        spu = self.config.samples_per_unit
        num_units = math.ceil(samples.shape[-1] / spu)
        return nn_functional.pad(samples, (0, num_units * spu - samples.shape[-1]))

    def cepstra(self, log_mel: torch.Tensor) -> torch.Tensor:
        """DCT-II (orthonormal) of log-mel frames: (F, n_mels) -> (F, n_cepstra)."""
        return log_mel @ self.dct

    def cepstra_to_log_mel(self, cepstra: torch.Tensor) -> torch.Tensor:
        """Least-squares inverse of `cepstra` (the DCT is orthonormal): (F, n_cepstra) -> (F, n_mels)."""
        return cepstra @ self.dct.T

    def stack_units(self, frames: torch.Tensor) -> torch.Tensor:
        """Groups frames into units: (4 T, D) -> (T, 4 D) (frame-major within a unit)."""
        fpu = self.config.frames_per_unit
        num_units = frames.shape[0] // fpu
        return frames[: num_units * fpu].reshape(num_units, fpu * frames.shape[1])

    def unit_features(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clustering features and log-mel of a signal.

        Args:
            samples: (N,) float32 at `sample_rate` (any length; zero-padded to whole units).

        Returns:
            features: (T, 4 * n_cepstra) stacked cepstra, T = ceil(N / samples_per_unit).
            log_mel: (4 T, n_mels) the frames they were computed from.
        """
        log_mel = self.log_mel(self.pad_to_units(samples))
        return self.stack_units(self.cepstra(log_mel)), log_mel

    # ---------------------------------------------------------------------------------- synthesis

    def log_mel_to_magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Mel pseudo-inverse: (F, n_mels) log-mel -> (F, n_freqs) non-negative linear magnitude."""
        return torch.clamp(torch.exp(log_mel) @ self.mel_fb_pinv, min=0.0)

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """Overlap-adds frames hop_length apart: (F', n_fft) -> ((F' - 1) * hop + n_fft,).

        Done as ceil(n_fft / hop) shifted adds of (F', <= hop) slabs, several times faster on CPU
        than `torch.nn.functional.fold` or `index_add_`.
        """
        hop, n_fft = self.config.hop_length, self.config.n_fft
        num_frames = frames.shape[0]
        blocks = -(-n_fft // hop)
        out = torch.zeros(num_frames + blocks - 1, hop)  # row r = samples [r * hop, (r + 1) * hop)
        for b in range(blocks):
            width = min(hop, n_fft - b * hop)
            out[b : b + num_frames, :width] += frames[:, b * hop : b * hop + width]
        return out.reshape(-1)[: (num_frames - 1) * hop + n_fft]

    def griffin_lim(
        self,
        magnitude: torch.Tensor,
        num_iters: int = 32,
        momentum: float = 0.99,
        init_phase: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fast Griffin-Lim (Perraudin et al. 2013) from a magnitude spectrogram.

        Each iteration is an ISTFT and an STFT equal to `torch.istft(center=True, length=...)`
        followed by `torch.stft(center=True, pad_mode="constant")`, written out on the padded
        signal (irfft, shifted adds, unfold, rfft) and with the phase normalisation in real
        arithmetic: about 3x faster than calling torch.istft/torch.stft on one CPU thread.

        Args:
            magnitude: (F, n_freqs) linear magnitude frames, F = 4 T.
            num_iters: projection iterations (0 returns the signal of the initial phase).
            momentum: fast Griffin-Lim acceleration (0 = classic Griffin-Lim).
            init_phase: (F, n_freqs) initial phase in radians; zeros when None.

        Returns:
            (F * hop_length,) float32 waveform (= T * samples_per_unit samples).
        """
        c = self.config
        num_frames = magnitude.shape[0]
        length = num_frames * c.hop_length
        if num_frames == 0:
            return torch.zeros(0)
        pad = c.n_fft // 2  # center=True padding on each side
        # center=True STFT of `length` samples has F + 1 frames; the extra one gets zero magnitude.
        mag = nn_functional.pad(magnitude.float(), (0, 0, 0, 1))  # (F + 1, n_freqs)
        window = self.fft_window  # (n_fft,)
        envelope = self._overlap_add((window * window).expand(num_frames + 1, -1))  # (padded_len,)
        # ISTFT normalisation, zero outside the signal (= crop to `length`, then zero-pad for STFT)
        scale = torch.zeros_like(envelope)
        scale[pad : pad + length] = 1.0 / envelope[pad : pad + length].clamp_min(1e-11)

        def inverse(spectrum: torch.Tensor) -> torch.Tensor:  # (F + 1, n_freqs) complex -> padded signal
            return self._overlap_add(torch.fft.irfft(spectrum, n=c.n_fft) * window) * scale

        if init_phase is None:
            spectrum = mag.to(torch.complex64)  # zero phase
        else:
            spectrum = torch.polar(mag, nn_functional.pad(init_phase.float(), (0, 0, 0, 1)))
        previous = torch.zeros_like(spectrum)
        accel = momentum / (1.0 + momentum)
        for _ in range(num_iters):
            padded = inverse(spectrum)  # (padded_len,)
            rebuilt = torch.fft.rfft(padded.unfold(0, c.n_fft, c.hop_length) * window)  # (F + 1, n_freqs)
            angles = torch.add(rebuilt, previous, alpha=-accel)  # momentum step
            # target magnitude with the new phase: mag * a / |a| (|a|^2 from strided re/im views is
            # much faster than complex abs or a sum over a size-2 last dimension)
            real = torch.view_as_real(angles)
            norm_sq = torch.addcmul(real[..., 0] * real[..., 0], real[..., 1], real[..., 1])
            spectrum = angles * (mag * torch.rsqrt(norm_sq + 1e-16))
            previous = rebuilt
        return inverse(spectrum)[pad : pad + length]


# ------------------------------------------------------------------------------------ clustering


def nearest_centroid(features: torch.Tensor, centroids: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) for each row.

    Args:
        features: (M, D) float32.
        centroids: (K, D) float32.
        batch_size: rows per distance matrix (bounds memory to batch_size * K floats).

    Returns:
        (M,) int64 indices in [0, K).
    """
    centroid_sq = (centroids * centroids).sum(1)  # (K,)
    out = [
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is the same for every c of a row
        torch.argmin(centroid_sq - 2.0 * rows @ centroids.T, dim=1)
        for rows in features.split(batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def kmeans(
    features: torch.Tensor, num_clusters: int, num_iters: int = 30, seed: int = 0, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ initialisation then Lloyd iterations, batched in torch.

    Empty clusters are re-seeded with the points farthest from their centroids.

    Args:
        features: (M, D) float32 points, M >= num_clusters.
        num_clusters: K.
        num_iters: Lloyd iterations (stops early when no assignment changes).
        seed: seeds the k-means++ draws.
        progress: show a tqdm bar.

    Returns:
        centroids: (K, D) float32.
        assignment: (M,) int64 cluster of each point under the returned centroids.
    """
    from tqdm.auto import tqdm

    features = features.float()
    num_points = features.shape[0]
    if num_points < num_clusters:
        raise ValueError(f"k-means needs at least {num_clusters} points, got {num_points}")
    generator = torch.Generator().manual_seed(seed)
    # k-means++: each next centre drawn with probability proportional to squared distance.
    centroids = torch.empty(num_clusters, features.shape[1])
    centroids[0] = features[torch.randint(num_points, (1,), generator=generator)]
    closest_sq = ((features - centroids[0]) ** 2).sum(1)  # (M,)
    for k in tqdm(range(1, num_clusters), desc="k-means++", disable=not progress, leave=False):
        weights = closest_sq.clamp_min(0) + 1e-12
        centroids[k] = features[torch.multinomial(weights, 1, generator=generator)]
        closest_sq = torch.minimum(closest_sq, ((features - centroids[k]) ** 2).sum(1))

    assignment = nearest_centroid(features, centroids)
    for it in tqdm(range(num_iters), desc="k-means", disable=not progress):
        sums = torch.zeros_like(centroids).index_add_(0, assignment, features)
        counts = torch.bincount(assignment, minlength=num_clusters)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None].float(), centroids)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            distance_sq = ((features - centroids[assignment]) ** 2).sum(1)
            centroids[empty] = features[distance_sq.topk(len(empty)).indices]
        new_assignment = nearest_centroid(features, centroids)
        changed = int((new_assignment != assignment).sum())
        assignment = new_assignment
        logger.debug("k-means iteration %d: %d assignments changed", it, changed)
        if changed == 0 and len(empty) == 0:
            break
    return centroids, assignment


def cluster_means(values: torch.Tensor, assignment: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Mean of the rows of each cluster (zeros for empty clusters).

    Args:
        values: (M, D) float32.
        assignment: (M,) int64 in [0, K).
        num_clusters: K.

    Returns:
        (K, D) float32.
    """
    sums = torch.zeros(num_clusters, values.shape[1]).index_add_(0, assignment, values.float())
    counts = torch.bincount(assignment, minlength=num_clusters).clamp_min(1)
    return sums / counts[:, None].float()
