"""core.audio: every bad input raises its typed, readable error; conversions keep duration and content."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf

from core import audio
from core.audio import (
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
    audio_to_wav_bytes,
    load_audio,
    save_wav,
)
from core.types import Waveform


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Typed errors


def _bad_inputs(tmp_path):
    good = tone(1.0, 16000)
    big = tmp_path / "big.wav"
    big.write_bytes(wav_bytes(tone(1.0, 16000), 16000))
    text = tmp_path / "notes.txt"
    text.write_text("Hello, this is not a recording at all.\n" * 10)
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    truncated = wav_bytes(good, 16000)[:30]  # RIFF/WAVE header cut inside the fmt chunk
    garbage_wav = tmp_path / "broken.wav"
    garbage_wav.write_bytes(np.random.default_rng(0).integers(1, 255, 500, dtype=np.uint8).tobytes())
    return [
        ("none", None, {}, EmptyAudioError),
        ("empty array", (16000, np.zeros(0, np.int16)), {}, EmptyAudioError),
        ("no channels", (16000, np.zeros((16000, 0), np.float32)), {}, EmptyAudioError),
        ("empty bytes", b"", {}, EmptyAudioError),
        ("gradio (rate, None)", (16000, None), {}, EmptyAudioError),
        ("too short", (16000, good[:800]), {}, TooShortAudioError),
        ("digital silence", (16000, np.zeros(16000, np.int16)), {}, SilentAudioError),
        (
            "dither",
            (16000, np.random.default_rng(0).integers(-1, 2, 16000).astype(np.int16)),
            {},
            SilentAudioError,
        ),
        (
            "nan",
            (16000, np.where(np.arange(16000) == 5, np.nan, good).astype(np.float32)),
            {},
            NonFiniteAudioError,
        ),
        ("inf", (16000, np.full(16000, np.inf, np.float64)), {}, NonFiniteAudioError),
        ("truncated wav", truncated, {}, CorruptAudioError),
        ("garbage .wav", garbage_wav, {}, CorruptAudioError),
        ("text file", text, {}, UnsupportedAudioError),
        ("png", png, {}, UnsupportedAudioError),
        ("pdf bytes", pdf.read_bytes(), {}, UnsupportedAudioError),
        ("string dtype", (16000, np.array(["a", "b"] * 8000)), {}, UnsupportedAudioError),
        ("too long", (16000, np.tile(good, 3)), {"max_seconds": 2.0}, AudioTooLongError),
        ("too long file", big, {"max_seconds": 0.5}, AudioTooLongError),
        ("too large file", big, {"max_bytes": 1000}, AudioTooLargeError),
        ("too large bytes", big.read_bytes(), {"max_bytes": 1000}, AudioTooLargeError),
        ("rate 0", (0, good), {}, InvalidSampleRateError),
        ("rate negative", (-16000, good), {}, InvalidSampleRateError),
        ("rate absurd", (10_000_000, good), {}, InvalidSampleRateError),
        ("rate 500", (500, good), {}, InvalidSampleRateError),
        ("rate fractional", (16000.5, good), {}, InvalidSampleRateError),
        ("rate None", (None, good), {}, InvalidSampleRateError),
        ("3-D array", (16000, np.zeros((2, 2, 8000), np.float32)), {}, InvalidAudioShapeError),
        ("scalar", (16000, np.float32(0.5)), {}, InvalidAudioShapeError),
        ("64 channels", (16000, np.zeros((16000, 64), np.float32)), {}, InvalidAudioShapeError),
        ("missing file", tmp_path / "nope.wav", {}, AudioFileNotFoundError),
    ]


def test_every_bad_input_raises_its_typed_readable_error(tmp_path):
    cases = _bad_inputs(tmp_path)
    kinds = set()
    for name, source, kwargs, expected in cases:
        with pytest.raises(expected) as info:
            load_audio(source, **kwargs)
        error = info.value
        assert type(error) is expected, f"{name}: got {type(error).__name__}: {error}"
        assert isinstance(error, AudioInputError) and isinstance(error, ValueError)
        message = error.user_message
        assert message == str(error) and len(message) > 20 and message.endswith("."), (name, message)
        assert "Traceback" not in message and "BytesIO" not in message, (name, message)
        kinds.add(expected)
    assert len(kinds) >= 10


def test_too_large_is_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.wav"
    path.write_bytes(wav_bytes(tone(1.0, 16000), 16000))

    def no_read(*args, **kwargs):
        raise AssertionError("file was opened before its size was checked")

    monkeypatch.setattr("builtins.open", no_read)
    with pytest.raises(AudioTooLargeError, match="too large"):
        load_audio(path, max_bytes=100)


def test_too_long_file_is_rejected_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(tone(3.0, 16000), 16000))

    def no_read(self, *args, **kwargs):
        raise AssertionError("samples were decoded before the duration was checked")

    monkeypatch.setattr(sf.SoundFile, "read", no_read)
    with pytest.raises(AudioTooLongError, match="too long"):
        load_audio(path, max_seconds=2.0)


def test_silent_message_points_to_microphone():
    with pytest.raises(SilentAudioError) as info:
        load_audio((16000, np.zeros(16000, np.float32)))
    assert "microphone" in str(info.value)
    assert info.value.code == "silent"


def test_short_quiet_speech_in_long_recording_is_not_silent():
    """Loudest-frame criterion: 0.5 s at -34 dBFS RMS inside 60 s of near-silence passes
    (whole-clip RMS would be -34 - 10*log10(120) = -54.8 dBFS, close to the threshold)."""
    quiet = np.zeros(60 * 8000, np.float32)
    quiet[8000:12000] = tone(0.5, 8000, amplitude=0.028)
    out = load_audio((8000, quiet))
    assert out.sample_rate == 16000 and out.duration == pytest.approx(60.0)
    with pytest.raises(SilentAudioError):
        load_audio((8000, quiet), silence_threshold_dbfs=-20.0)
    assert load_audio((8000, np.zeros(8000, np.float32)), silence_threshold_dbfs=None).duration == 1.0


# ---------------------------------------------------------------------------------------------
# Conversions


def test_stereo_int16_44k_becomes_16k_mono_float():
    rate, seconds = 44100, 1.5
    left = tone(seconds, rate, 440.0, 0.5)
    stereo = (np.stack([left, 0.5 * left], axis=1) * 32767).astype(np.int16)  # (n, 2) as Gradio gives
    out = load_audio((rate, stereo))
    assert out.sample_rate == 16000 and out.samples.dtype == np.float32 and out.samples.ndim == 1
    assert abs(len(out.samples) - seconds * 16000) <= 1
    expected = load_audio((16000, tone(seconds, 16000, 440.0, 0.75 * 0.5)))  # average of the channels
    core = slice(200, -200)  # ignore filter edges
    np.testing.assert_allclose(out.samples[core], expected.samples[core], atol=2e-3)


def test_8k_float_mono_is_upsampled():
    out = load_audio((8000, tone(2.0, 8000, 300.0)))
    assert out.sample_rate == 16000 and out.samples.dtype == np.float32
    assert abs(len(out.samples) - 32000) <= 2
    np.testing.assert_allclose(out.samples[400:-400], tone(2.0, 16000, 300.0)[400:-400], atol=5e-3)


@pytest.mark.parametrize("rate", [11025, 22050, 24000, 32000, 48000, 96000, 12345, 44099])
def test_any_rate_keeps_duration(rate):
    out = load_audio((rate, tone(1.0, rate, 200.0)))
    ratio = 16000 / rate
    assert abs(len(out.samples) - 16000) <= max(1, math.ceil(ratio)) + 16000 * 6e-4


def test_no_aliasing_when_downsampling():
    """A 12 kHz tone at 48 kHz is above the 8 kHz Nyquist of 16 kHz: it must be filtered out, not folded to 4 kHz."""
    out = load_audio((48000, tone(1.0, 48000, 12000.0, 0.5)), silence_threshold_dbfs=None)
    assert np.sqrt(np.mean(out.samples[500:-500] ** 2)) < 0.01


def test_channels_first_is_transposed():
    """Policy: (channels, samples) is unambiguous because > 32 channels are rejected, so it is accepted."""
    left = tone(1.0, 16000, 440.0, 0.4)
    first = np.stack([left, left])  # (2, n)
    last = first.T.copy()  # (n, 2)
    np.testing.assert_array_equal(load_audio((16000, first)).samples, load_audio((16000, last)).samples)


@pytest.mark.parametrize(
    ("dtype", "scale", "offset"),
    [(np.int16, 32768, 0), (np.int32, 2**31, 0), (np.uint8, 128, 128), (np.int8, 128, 0), (np.float64, 1, 0)],
)
def test_integer_and_float_normalisation(dtype, scale, offset):
    ref = tone(1.0, 16000, 440.0, 0.5)
    raw = (ref * scale + offset).round().astype(dtype) if dtype is not np.float64 else ref.astype(dtype)
    out = load_audio((16000, raw))
    np.testing.assert_allclose(out.samples, ref, atol=1.5 / scale if scale > 1 else 1e-7)


def test_int_range_floats_are_scaled_not_clipped():
    ref = tone(1.0, 16000, 440.0, 0.5)
    out = load_audio((16000, ref * 20000.0))
    assert np.max(np.abs(out.samples)) == pytest.approx(1.0)
    np.testing.assert_allclose(out.samples, ref / np.max(np.abs(ref)), atol=1e-6)


def test_waveform_and_file_sources(tmp_path):
    ref = tone(1.0, 22050)
    waveform = Waveform(samples=ref, sample_rate=22050)
    from_waveform = load_audio(waveform)
    path = tmp_path / "clip.flac"
    sf.write(path, ref, 22050, format="FLAC")
    from_path = load_audio(path)
    from_str = load_audio(str(path))
    from_bytes = load_audio(path.read_bytes())
    with open(path, "rb") as handle:
        from_handle = load_audio(handle)
    for out in (from_path, from_str, from_bytes, from_handle):
        assert out.sample_rate == 16000
        np.testing.assert_allclose(out.samples, from_waveform.samples, atol=1e-4)


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate"),
    [("WAV", "FLOAT", 22050), ("FLAC", "PCM_24", 44100), ("OGG", "VORBIS", 24000), ("OGG", "OPUS", 48000),
     ("MP3", "MPEG_LAYER_III", 24000)],
)  # fmt: skip
def test_common_formats_decode_and_truncation_is_corrupt(fmt, subtype, rate):
    data = wav_bytes(tone(1.0, rate), rate, subtype=subtype, fmt=fmt)
    out = load_audio(data)
    assert out.sample_rate == 16000 and out.duration == pytest.approx(1.0, abs=0.06)  # mp3 adds codec delay
    with pytest.raises(CorruptAudioError):
        load_audio(data[:60])


def test_target_rate_is_respected():
    out = load_audio((16000, tone(1.0, 16000)), target_rate=24000)
    assert out.sample_rate == 24000 and len(out.samples) == 24000
    same = load_audio((16000, tone(1.0, 16000)))
    np.testing.assert_array_equal(same.samples, tone(1.0, 16000))


def test_wav_bytes_round_trip(tmp_path):
    waveform = Waveform(samples=tone(0.7, 16000, 440.0, 0.6), sample_rate=16000)
    data = audio_to_wav_bytes(waveform)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    info = sf.info(io.BytesIO(data))
    assert info.subtype == "PCM_16" and info.samplerate == 16000 and info.channels == 1
    back = load_audio(data)
    np.testing.assert_allclose(back.samples, waveform.samples, atol=1 / 32767)

    path = save_wav(tmp_path / "sub" / "out.wav", waveform)
    assert path.read_bytes() == data
    loud = Waveform(samples=np.array([2.0, -3.0] * 4000, np.float32), sample_rate=16000)
    clipped, _ = sf.read(io.BytesIO(audio_to_wav_bytes(loud)), dtype="float32")
    assert clipped.max() <= 1.0 and clipped.min() >= -1.0


def test_argument_validation():
    with pytest.raises(ValueError, match="target_rate"):
        load_audio((16000, tone(1.0, 16000)), target_rate=0)
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio((16000, tone(1.0, 16000)), max_seconds=0)


def test_resample_ratio_is_exact_for_common_rates_and_small_otherwise():
    assert audio._resample_ratio(44100, 16000) == audio.Fraction(160, 441)
    ratio = audio._resample_ratio(44099, 16000)
    assert max(ratio.numerator, ratio.denominator) <= audio.MAX_RESAMPLE_TERM
    assert abs(float(ratio) / (16000 / 44099) - 1) < 6e-4
