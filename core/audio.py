"""User audio in: load any source, validate it, convert it to mono float32 at the model's rate.

`load_audio` is the one entry point the app and the engine use for user speech. It accepts

- a path (`str` / `os.PathLike`) to an audio file, decoded with soundfile (libsndfile: WAV, FLAC,
  OGG/Vorbis/Opus, MP3, AIFF, ...);
- the raw bytes of such a file, or a binary file object;
- a `(sample_rate, samples)` tuple exactly as Gradio's `gr.Audio(type="numpy")` returns it;
- a `Waveform`.

Any sample rate (1 kHz .. 384 kHz) and channel count (1 .. 32) is accepted; the result is always
mono float32 in [-1, 1] at `target_rate`. Everything that can go wrong with user input raises a
subclass of `AudioInputError` whose message is written for the end user (what was wrong and what
to do), so the UI can show `str(error)` as is. Technical details (e.g. libsndfile's message) go to
`error.detail`, for logs only.

Conventions decided here:

- Multi-channel arrays are (samples, channels), as soundfile and Gradio give them. A
  channels-first (channels, samples) array is recognised without ambiguity because more than
  `MAX_CHANNELS` channels are rejected: a 2-D array whose second axis is longer than
  `MAX_CHANNELS` but whose first axis is not is transposed. Channels are averaged to mono.
- Integer samples are scaled by their type's full range (int16 / 32768, uint8 (x - 128) / 128,
  ...). Float samples are kept; if their peak exceeds 1 (e.g. int-range floats) the signal is
  scaled down to a peak of 1 instead of being clipped.
- Silence: a recording is silent when no 20 ms frame has an RMS level above
  `silence_threshold_dbfs` (default -60 dBFS, i.e. RMS 0.001). Using the loudest frame instead of
  the whole-clip RMS keeps a short quiet utterance inside a long recording from being rejected,
  while digital silence, dither and a muted microphone (typically below -70 dBFS) are caught.
- Resampling uses `torchaudio.functional.resample` (windowed-sinc, anti-aliased). When the
  reduced ratio target/source has a term above 1000 (an odd rate such as 44 099 Hz) the nearest
  ratio with terms <= 1000 is used to keep the filter bank small; the timing error is < 0.06 %.
"""

from __future__ import annotations

import io
import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from core.audio_errors import (  # noqa: F401 - re-exported: callers import the errors from core.audio
    AudioFileNotFoundError,
    AudioInputError,
    AudioTooLargeError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidAudioShapeError,
    InvalidSampleRateError,
    NonFiniteAudioError,
    SilentAudioError,
    TooShortAudioError,
    UnsupportedAudioError,
)
from core.types import Waveform

logger = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 1_000  # Hz; below this nothing intelligible survives
MAX_SAMPLE_RATE = 384_000  # Hz; the highest rate of common audio interfaces
MAX_CHANNELS = 32  # more than this is almost surely a mis-shaped array, not audio
SILENCE_FRAME_SECONDS = 0.02  # 20 ms frames for the loudest-frame silence test
MAX_RESAMPLE_TERM = 1000  # largest numerator/denominator handed to the sinc resampler
SUPPORTED_FORMATS_HINT = "WAV, FLAC, OGG or MP3"

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | tuple | Waveform


# ---------------------------------------------------------------------------------------------
# Public API


def load_audio(
    source: AudioSource | None,
    *,
    target_rate: int = 16000,
    max_seconds: float = 120.0,
    max_bytes: int = 50 * 2**20,
    min_seconds: float = 0.1,
    silence_threshold_dbfs: float | None = -60.0,
) -> Waveform:
    """Loads, validates and converts user audio to mono float32 at `target_rate`.

    Args:
        source: a file path, the bytes of a file, a binary file object, a Gradio
            `(sample_rate, samples)` tuple (int or float samples, shape (n,) or (n, channels)),
            or a `Waveform`.
        target_rate: sample rate of the result in Hz (16000 for the Whisper encoder).
        max_seconds: longer audio raises `AudioTooLongError`.
        max_bytes: a file (or bytes) larger than this raises `AudioTooLargeError`; the size is
            checked before the file is read.
        min_seconds: shorter audio raises `TooShortAudioError`.
        silence_threshold_dbfs: audio whose loudest 20 ms frame is below this RMS level raises
            `SilentAudioError`; None disables the check.

    Returns:
        Waveform with samples (num_samples,) float32 in [-1, 1] and `sample_rate == target_rate`.

    Raises:
        AudioInputError: one of its subclasses, with a message meant for the end user.
    """
    _check_int_arg("target_rate", target_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    if not max_bytes > 0:
        raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
    if not 0 <= min_seconds < max_seconds:
        raise ValueError(f"min_seconds must be in [0, max_seconds), got {min_seconds}")

    samples, sample_rate = _read_source(source, max_seconds=max_seconds, max_bytes=max_bytes)
    samples = _to_mono_float(samples, sample_rate, max_seconds=max_seconds)
    duration = len(samples) / sample_rate
    if duration < min_seconds:
        raise TooShortAudioError(
            f"The recording is too short ({duration:.2f} s). Please record at least "
            f"{min_seconds:g} s of speech.",
        )
    if silence_threshold_dbfs is not None:
        level = loudest_frame_dbfs(samples, sample_rate)
        if level < silence_threshold_dbfs:
            raise SilentAudioError(
                "The recording is silent — check your microphone (is it muted?) and try again.",
                detail=f"loudest 20 ms frame {level:.1f} dBFS < {silence_threshold_dbfs} dBFS",
            )
    if sample_rate != target_rate:
        samples = resample(samples, sample_rate, target_rate)
    return Waveform(samples=samples, sample_rate=target_rate)


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Anti-aliased windowed-sinc resampling of a mono float signal.

    Args:
        samples: (num_samples,) float32.
        orig_rate, new_rate: sample rates in Hz.

    Returns:
        (ceil(num_samples * new_rate / orig_rate),) float32 clipped to [-1, 1] (sinc filters
        overshoot slightly on full-scale transients).
    """
    import torch
    import torchaudio.functional as AF

    if orig_rate == new_rate:
        return samples.astype(np.float32, copy=False)
    ratio = _resample_ratio(orig_rate, new_rate)
    if ratio != Fraction(new_rate, orig_rate):
        logger.debug("resampling %d -> %d Hz through the approximate ratio %s", orig_rate, new_rate, ratio)
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    y = AF.resample(x, orig_freq=ratio.denominator, new_freq=ratio.numerator)
    return np.clip(y.numpy(), -1.0, 1.0).astype(np.float32, copy=False)


def loudest_frame_dbfs(samples: np.ndarray, sample_rate: int) -> float:
    """RMS level in dBFS of the loudest 20 ms frame (the whole clip if shorter); -inf for zeros."""
    frame = max(1, int(round(sample_rate * SILENCE_FRAME_SECONDS)))
    x = samples.astype(np.float64, copy=False)
    n_frames = len(x) // frame
    if n_frames == 0:
        mean_square = float(np.mean(x * x)) if len(x) else 0.0
    else:
        frames = x[: n_frames * frame].reshape(n_frames, frame)  # (n_frames, frame)
        mean_square = float(np.max(np.mean(frames * frames, axis=1)))
        tail = x[n_frames * frame :]
        if len(tail):
            mean_square = max(mean_square, float(np.mean(tail * tail)))
    return 10.0 * math.log10(mean_square) if mean_square > 0 else -math.inf


def audio_to_wav_bytes(waveform: Waveform) -> bytes:
    """Encodes a waveform as a 16-bit PCM WAV file (samples are clipped to [-1, 1])."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, _clipped(waveform), waveform.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def save_wav(path: str | os.PathLike, waveform: Waveform) -> Path:
    """Writes a waveform to `path` as 16-bit PCM WAV (parent folders are created); returns the path."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _clipped(waveform), waveform.sample_rate, format="WAV", subtype="PCM_16")
    return path


# ---------------------------------------------------------------------------------------------
# Reading the source


def _read_source(source: Any, *, max_seconds: float, max_bytes: int) -> tuple[np.ndarray, int]:
    """Returns (samples as given: (n,) or (n, channels) of any numeric dtype, sample rate)."""
    if source is None:
        raise EmptyAudioError("No audio was received. Please record or upload a clip and try again.")
    if isinstance(source, Waveform):
        return source.samples, _check_sample_rate(source.sample_rate)
    if isinstance(source, tuple):
        if len(source) != 2:
            raise UnsupportedAudioError(
                "Audio data must be a (sample_rate, samples) pair.",
                detail=f"tuple of length {len(source)}",
            )
        sample_rate, samples = source
        if isinstance(sample_rate, np.ndarray) and not isinstance(samples, np.ndarray):
            sample_rate, samples = samples, sample_rate  # (samples, rate): tolerate the swap
        if samples is None:
            raise EmptyAudioError("No audio was received. Please record or upload a clip and try again.")
        return samples, _check_sample_rate(sample_rate)
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source), max_seconds=max_seconds, max_bytes=max_bytes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), max_bytes)
        return _decode_bytes(data, name=None, max_seconds=max_seconds)
    if hasattr(source, "read"):
        data = source.read(max_bytes + 1)  # never more than the limit + 1 byte
        if isinstance(data, str):
            raise UnsupportedAudioError(_not_audio_message(), detail="text-mode file object")
        _check_size(len(data), max_bytes, at_least=len(data) > max_bytes)
        return _decode_bytes(data, name=getattr(source, "name", None), max_seconds=max_seconds)
    if isinstance(source, (np.ndarray, list)):
        raise InvalidSampleRateError(
            "The audio has no sample rate. Pass it as (sample_rate, samples).",
            detail=f"bare {type(source).__name__}",
        )
    raise UnsupportedAudioError(
        f"Unsupported audio input ({type(source).__name__}). Please upload an audio file "
        f"({SUPPORTED_FORMATS_HINT}) or record with the microphone."
    )


def _read_path(path: Path, *, max_seconds: float, max_bytes: int) -> tuple[np.ndarray, int]:
    try:
        stat = path.stat()
    except OSError as error:
        raise AudioFileNotFoundError(
            "The audio file could not be found. Please upload it again.", detail=str(error)
        ) from error
    if not path.is_file():
        raise AudioFileNotFoundError("The audio path is not a file. Please upload an audio file.")
    _check_size(stat.st_size, max_bytes)  # before reading a single byte
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    _check_size(len(data), max_bytes, at_least=len(data) > max_bytes)  # file grew meanwhile
    return _decode_bytes(data, name=path.name, max_seconds=max_seconds)


def _decode_bytes(data: bytes, *, name: str | None, max_seconds: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if len(data) == 0:
        raise EmptyAudioError("The audio file is empty. Please record or upload the clip again.")
    kind = _sniff(data)
    if kind in _NOT_AUDIO:
        raise UnsupportedAudioError(_not_audio_message(_NOT_AUDIO[kind]), detail=f"magic: {kind}")
    if kind in _UNSUPPORTED_AUDIO:
        raise UnsupportedAudioError(
            f"{_UNSUPPORTED_AUDIO[kind]} audio is not supported. Please convert it to "
            f"{SUPPORTED_FORMATS_HINT} and upload it again.",
            detail=f"magic: {kind}",
        )
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            sample_rate = _check_sample_rate(handle.samplerate)
            frames = handle.frames
            if frames > 0 and frames / sample_rate > max_seconds:
                raise _too_long(frames / sample_rate, max_seconds)  # before decoding the samples
            samples = handle.read(dtype="float32", always_2d=True)  # (n, channels)
    except AudioInputError:
        raise
    except Exception as error:  # libsndfile raises LibsndfileError / RuntimeError / ValueError
        if kind is None and _looks_like_text(data):
            raise UnsupportedAudioError(_not_audio_message("a text file"), detail=str(error)) from error
        suffix = Path(name).suffix.lower() if name else ""
        if kind in _DECODABLE_AUDIO or suffix in _AUDIO_SUFFIXES:
            raise CorruptAudioError(
                "The audio file is damaged or incomplete and cannot be decoded. Please record or "
                "export it again.",
                detail=str(error),
            ) from error
        raise UnsupportedAudioError(_not_audio_message(), detail=str(error)) from error
    if samples.size == 0:
        raise EmptyAudioError("The audio file contains no sound samples. Please record it again.")
    return samples, sample_rate


# File signatures, checked in order. Audio kinds that libsndfile reads turn a decoding failure into
# CorruptAudioError; the other kinds name what the file is in UnsupportedAudioError's message.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"RIFF", "riff"),  # refined by the form type at bytes 8..12 (WAVE, AVI , WEBP)
    (b"RF64", "wav"),
    (b"riff", "wav"),  # Sony Wave64
    (b"fLaC", "flac"),
    (b"OggS", "ogg"),
    (b"ID3", "mp3"),
    (b"FORM", "aiff"),
    (b".snd", "au"),
    (b"caff", "caf"),
    (b"\x89PNG", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"%PDF", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"\x7fELF", "program"),
    (b"\x1aE\xdf\xa3", "webm"),
    (b"0&\xb2u", "wma"),
)
_RIFF_FORMS = {b"WAVE": "wav", b"AVI ": "avi", b"WEBP": "webp"}
_DECODABLE_AUDIO = {"wav", "flac", "ogg", "mp3", "aiff", "au", "caf"}
_NOT_AUDIO = {
    "png": "an image (PNG)",
    "jpeg": "an image (JPEG)",
    "gif": "an image (GIF)",
    "webp": "an image (WebP)",
    "avi": "a video (AVI)",
    "pdf": "a PDF document",
    "zip": "an archive (ZIP or Office document)",
    "gzip": "a compressed archive",
    "program": "a program",
}
_UNSUPPORTED_AUDIO = {"webm": "WebM/Matroska", "mp4": "MP4/M4A", "aac": "AAC", "wma": "WMA"}
_AUDIO_SUFFIXES = {
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64",
}  # fmt: skip


def _sniff(data: bytes) -> str | None:
    """The file kind from its first bytes, or None if unknown."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            if kind == "riff":
                return _RIFF_FORMS.get(data[8:12], "wav")  # a truncated header is still a WAV
            return kind
    if data[4:8] == b"ftyp":
        return "mp4"
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0:
        # 11-bit frame sync: MPEG audio (mp3 without ID3 tag), or AAC ADTS when the layer bits are 00
        return "aac" if (data[1] & 0x06) == 0 else "mp3"
    return None


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a multi-byte character cut at the end
            return False
    return True


def _not_audio_message(what: str | None = None) -> str:
    is_what = f"is {what}, not an audio recording" if what else "is not an audio file"
    return (
        f"This file {is_what}. Please upload an audio file ({SUPPORTED_FORMATS_HINT}) or record "
        "with the microphone."
    )


# ---------------------------------------------------------------------------------------------
# Validation and conversion


def _to_mono_float(samples: Any, sample_rate: int, *, max_seconds: float) -> np.ndarray:
    """Validates shape, dtype and values; returns (n,) float32 with peak <= 1."""
    if isinstance(samples, (list, tuple)):
        samples = np.asarray(samples)
    if not isinstance(samples, np.ndarray):
        try:  # torch tensors and other array-likes
            samples = np.asarray(samples)
        except Exception as error:
            raise UnsupportedAudioError(
                "The audio data is not a numeric array.", detail=str(error)
            ) from error
    if samples.dtype.kind not in "iuf":
        raise UnsupportedAudioError("The audio data is not a numeric array.", detail=f"dtype {samples.dtype}")
    if samples.ndim == 0 or samples.ndim > 2:
        raise InvalidAudioShapeError(
            "The audio data has an unexpected shape. Expected (samples,) or (samples, channels).",
            detail=f"shape {samples.shape}",
        )
    if samples.ndim == 2:
        samples = _channels_last(samples)
    if samples.size == 0:
        raise EmptyAudioError("The recording is empty. Please record or upload a clip and try again.")
    num_samples = samples.shape[0]
    if num_samples / sample_rate > max_seconds:
        raise _too_long(num_samples / sample_rate, max_seconds)

    if samples.dtype.kind == "f":
        if not np.isfinite(samples).all():
            raise NonFiniteAudioError(
                "The audio contains invalid values (NaN or infinity). Please record or upload it again.",
            )
        x = samples.astype(np.float32, copy=False)
    else:
        info = np.iinfo(samples.dtype)
        half_range = 2.0 ** (info.bits - 1)
        offset = half_range if info.min == 0 else 0.0  # unsigned PCM is centred on half range
        x = ((samples.astype(np.float64) - offset) / half_range).astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)  # (n, channels) -> (n,): down-mix by averaging
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:  # e.g. int-range floats: scale instead of clipping
        x = x / peak
    return np.ascontiguousarray(x, dtype=np.float32)


def _channels_last(samples: np.ndarray) -> np.ndarray:
    """(n, channels) stays; an unambiguous (channels, n) is transposed; anything else is rejected."""
    rows, cols = samples.shape
    if cols <= MAX_CHANNELS:
        return samples
    if rows <= MAX_CHANNELS:
        return samples.T  # (channels, n) -> (n, channels)
    raise InvalidAudioShapeError(
        f"The audio has too many channels (more than {MAX_CHANNELS}). Please upload mono or stereo audio.",
        detail=f"shape {samples.shape}",
    )


def _check_sample_rate(sample_rate: Any) -> int:
    if isinstance(sample_rate, (bool, np.bool_)) or sample_rate is None:
        rate = None
    else:
        try:
            rate = float(sample_rate)
        except (TypeError, ValueError):
            rate = None
    if rate is None or not math.isfinite(rate) or rate != int(rate):
        raise InvalidSampleRateError(
            "The audio has an invalid sample rate. Please record or export it again.",
            detail=f"sample rate {sample_rate!r}",
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidSampleRateError(
            f"The audio's sample rate ({rate:g} Hz) is not supported; it must be between "
            f"{MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz. Please record or export it again.",
        )
    return int(rate)


def _check_size(num_bytes: int, max_bytes: int, *, at_least: bool = False) -> None:
    if num_bytes > max_bytes:
        size = f"more than {_format_bytes(max_bytes)}" if at_least else _format_bytes(num_bytes)
        raise AudioTooLargeError(
            f"The audio file is too large ({size}; the limit is {_format_bytes(max_bytes)}). "
            "Please upload a shorter or compressed clip.",
        )


def _format_bytes(num_bytes: int) -> str:
    if num_bytes >= 2**20:
        return f"{num_bytes / 2**20:.1f} MB".replace(".0 MB", " MB")
    return f"{num_bytes / 2**10:.1f} KB".replace(".0 KB", " KB")


def _too_long(seconds: float, max_seconds: float) -> AudioTooLongError:
    return AudioTooLongError(
        f"The recording is too long ({seconds:.1f} s; the limit is {max_seconds:g} s). "
        "Please upload a shorter clip.",
    )


def _check_int_arg(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


def _resample_ratio(orig_rate: int, new_rate: int) -> Fraction:
    """new/orig as a fraction whose terms are <= MAX_RESAMPLE_TERM (exact whenever possible)."""
    ratio = Fraction(new_rate, orig_rate)
    if ratio.numerator <= MAX_RESAMPLE_TERM and ratio.denominator <= MAX_RESAMPLE_TERM:
        return ratio
    if ratio <= 1:
        return ratio.limit_denominator(MAX_RESAMPLE_TERM)
    return 1 / (1 / ratio).limit_denominator(MAX_RESAMPLE_TERM)


def _clipped(waveform: Waveform) -> np.ndarray:
    return np.clip(np.asarray(waveform.samples, dtype=np.float32), -1.0, 1.0)
