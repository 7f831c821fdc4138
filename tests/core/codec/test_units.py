"""Tests of the embedded units codec and the generic chunked streaming decoder.

Speech comes from flite's `slt` voice (the codec's one assistant voice); the tests that need it are
skipped, with the reason shown, when the `flite` binary is missing (CI installs it).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from core.codec.base import DetokenizerStream, SpeechDetokenizer, SpeechTokenizer
from core.codec.features import FeatureConfig, MelFeatures, kmeans
from core.codec.streaming import ChunkedStreamDecoder, ChunkSchedule, decode_chunked
from core.codec.units import UnitsCodec, main
from core.types import Waveform

SENTENCES = [
    "Hello, how are you doing today? The weather is lovely.",
    "The capital of France is Paris, and it is a beautiful city.",
    "Water boils at one hundred degrees Celsius at sea level.",
]
NUM_UNITS = 64

needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite is not installed (apt-get install flite); CI installs it"
)


def flite_wav(path, text: str) -> Waveform:
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
    samples, sample_rate = sf.read(str(path), dtype="float32")
    return Waveform(samples, sample_rate)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[Waveform]:
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite); CI installs it")
    folder = tmp_path_factory.mktemp("flite")
    return [flite_wav(folder / f"s{i}.wav", text) for i, text in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def codec(speech) -> UnitsCodec:
    return UnitsCodec.fit(speech, NUM_UNITS, seed=0, kmeans_iters=10)


def log_mel_l1(codec: UnitsCodec, reference: np.ndarray, audio: np.ndarray) -> float:
    """Mean absolute log-mel difference over the reference's frames."""
    a = codec.mel.log_mel(codec.mel.pad_to_units(torch.from_numpy(reference)))
    b = codec.mel.log_mel(torch.from_numpy(audio))
    return float((a - b).abs().mean())


# ---------------------------------------------------------------------------- generic streaming


def test_chunked_decoder_matches_reference_signal():
    """Windows of a position-exact decoder joined by the scheduler give the reference back exactly.

    Token t decodes to sin(0.01 * (t * spt + j)) for j in [0, spt): any window agrees with the
    reference, so crossfades must be identity and every sample must land at its absolute index.
    """
    spt = 40

    def decode_window(tokens: np.ndarray) -> np.ndarray:
        positions = tokens[:, None] * spt + np.arange(spt)  # (W, spt) absolute sample indices
        return np.sin(0.01 * positions).reshape(-1).astype(np.float32)

    schedule = ChunkSchedule(
        first_chunk_tokens=4, hop_tokens=5, left_context_tokens=2, lookahead_tokens=2, crossfade_samples=30
    )
    for num_tokens in (0, 1, 2, 3, 5, 17, 40):
        tokens = np.arange(num_tokens)
        reference = decode_window(tokens)
        audio = decode_chunked(decode_window, tokens, spt, schedule)
        assert audio.shape == reference.shape
        np.testing.assert_allclose(audio, reference, atol=1e-6)


def test_chunk_schedule_first_chunk_then_fixed_hops():
    """First chunk after first_chunk_tokens tokens, then one chunk per hop_tokens tokens."""
    spt = 8
    schedule = ChunkSchedule(
        first_chunk_tokens=10, hop_tokens=25, left_context_tokens=5, lookahead_tokens=5, crossfade_samples=4
    )
    stream = ChunkedStreamDecoder(lambda t: np.zeros(len(t) * spt, np.float32), spt, schedule)
    lengths, ready_at = [], []
    for n in range(70):
        chunks = stream.push([n])
        ready_at += [n + 1] * len(chunks)
        lengths += [len(c) for c in chunks]
    assert ready_at == [10, 35, 60]
    # chunks cover tokens [0, 5), [5, 30), [30, 55), the flush the rest; joins move 2 samples later
    assert lengths == [5 * spt - 2, 25 * spt, 25 * spt]
    assert sum(lengths) + sum(len(c) for c in stream.flush()) == 70 * spt


def test_schedule_validation():
    with pytest.raises(ValueError, match="first_chunk_tokens"):
        ChunkSchedule(first_chunk_tokens=5, lookahead_tokens=5)
    with pytest.raises(ValueError, match="crossfade_samples"):
        ChunkedStreamDecoder(lambda t: t, 100, ChunkSchedule(crossfade_samples=200))


# --------------------------------------------------------------------------------- units codec


@needs_flite
def test_protocols(codec):
    assert isinstance(codec, SpeechTokenizer) and isinstance(codec, SpeechDetokenizer)
    assert isinstance(codec.stream(), DetokenizerStream)
    assert (codec.codebook_size, codec.token_rate, codec.sample_rate) == (NUM_UNITS, 25.0, 16000)


@needs_flite
def test_encode_decode_keeps_duration(codec, speech):
    for waveform in speech:
        tokens = codec.encode(waveform)
        assert tokens.dtype == torch.long and tokens.shape == (math.ceil(waveform.duration * 25),)
        assert int(tokens.min()) >= 0 and int(tokens.max()) < NUM_UNITS
        audio = codec.decode(tokens)
        assert audio.dtype == np.float32 and len(audio) == len(tokens) * 640
        assert abs(len(audio) - len(waveform.samples)) < 640  # within one 40 ms frame
        assert np.abs(audio).max() <= 1.0


@needs_flite
def test_encode_resamples(codec, speech):
    import torchaudio.functional as AF

    waveform = speech[0]
    resampled = AF.resample(torch.from_numpy(waveform.samples), 16000, 22050).numpy()
    tokens = codec.encode(Waveform(resampled, 22050))
    assert len(tokens) == math.ceil(len(resampled) / 22050 * 25)
    # Same voice, same timing: most units agree with the 16 kHz encoding.
    reference = codec.encode(waveform)
    n = min(len(tokens), len(reference))
    assert float((tokens[:n] == reference[:n]).float().mean()) > 0.7


@needs_flite
@pytest.mark.parametrize("pattern", ["one", "random", "all"])
def test_stream_equals_offline(codec, speech, pattern):
    tokens = torch.cat([codec.encode(w) for w in speech[:2]])  # ~7 s: several chunks
    offline = codec.decode(tokens)
    stream, chunks, position = codec.stream(), [], 0
    rng = np.random.default_rng(0)
    while position < len(tokens):
        size = {"one": 1, "all": len(tokens), "random": int(rng.integers(1, 12))}[pattern]
        chunks += stream.push(tokens[position : position + size].tolist())
        position += size
    chunks += stream.flush()
    streamed = np.concatenate(chunks)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-5)


@needs_flite
def test_windows_agree_near_joins(codec, speech):
    """Overlapping Griffin-Lim windows (zero initial phase) agree, so crossfades are seamless.

    The audio of a window and that of the next one overlap over the next window's left context;
    they are close there (relative error well below that of unrelated signals, which is ~1.4).
    """
    tokens = codec.encode(speech[0]).numpy()
    spt = codec.samples_per_token
    first = codec.decode_window(tokens[:30])  # tokens [0, 30)
    second = codec.decode_window(tokens[20:60])  # tokens [20, 60): overlap [20, 30)
    a, b = first[21 * spt : 29 * spt], second[1 * spt : 9 * spt]  # overlap less one token per side
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.5


@needs_flite
def test_save_load_roundtrip(codec, speech, tmp_path):
    codec.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units_codec.json", "units_codec.safetensors"]
    loaded = UnitsCodec.load(tmp_path)
    assert loaded.config_dict() == codec.config_dict()
    tokens = codec.encode(speech[1])
    assert torch.equal(loaded.encode(speech[1]), tokens)
    np.testing.assert_array_equal(loaded.decode(tokens), codec.decode(tokens))


@needs_flite
def test_resynthesis_beats_shuffled_units(codec, speech):
    """Decoding the units of a sentence is closer to it than decoding the same units shuffled."""
    waveform = speech[2]
    tokens = codec.encode(waveform)
    shuffled = tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))]
    resynth = log_mel_l1(codec, waveform.samples, codec.decode(tokens))
    scrambled = log_mel_l1(codec, waveform.samples, codec.decode(shuffled))
    assert resynth < 0.7 * scrambled, (resynth, scrambled)


@needs_flite
def test_residual_decoder_training_lowers_l1_and_saves(speech, tmp_path):
    codec = UnitsCodec.fit(speech, NUM_UNITS, seed=0, kmeans_iters=5, decoder_channels=32, decoder_blocks=1)
    units = [codec.encode(w) for w in speech]
    targets = [codec.mel.log_mel(codec.mel.pad_to_units(torch.from_numpy(w.samples))) for w in speech]
    losses = codec.train_decoder(units, targets, steps=30, batch_size=4, crop_units=32, lr=3e-3)
    assert np.mean(losses[-5:]) < 0.95 * losses[0]
    tokens = units[0]
    codec.save(tmp_path)
    loaded = UnitsCodec.load(tmp_path)
    assert loaded.decoder is not None
    np.testing.assert_array_equal(loaded.decode(tokens), codec.decode(tokens))


@needs_flite
def test_invalid_and_empty_tokens(codec):
    empty = codec.decode([])
    assert empty.dtype == np.float32 and empty.shape == (0,)
    stream = codec.stream()
    assert stream.push([]) == [] and stream.flush() == []
    for bad in ([0, NUM_UNITS], [-1], torch.tensor([3, 99999])):
        with pytest.raises(ValueError, match=r"\[0, 64\)"):
            codec.decode(bad)
        with pytest.raises(ValueError, match=r"\[0, 64\)"):
            codec.stream().push(bad)


def test_kmeans_separates_blobs():
    """Three well separated blobs -> three clusters, each blob in one cluster."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = (centres[:, None] + 0.1 * torch.randn(3, 50, 2, generator=generator)).reshape(-1, 2)
    centroids, assignment = kmeans(points, 3, num_iters=10, seed=0)
    blobs = assignment.reshape(3, 50)
    assert all(len(set(row.tolist())) == 1 for row in blobs) and len(set(blobs[:, 0].tolist())) == 3
    torch.testing.assert_close(centroids[blobs[:, 0]], points.reshape(3, 50, 2).mean(1))


def test_features_frame_alignment():
    """T units of audio -> 4 T frames -> Griffin-Lim returns exactly T * 640 samples."""
    mel = MelFeatures(FeatureConfig())
    samples = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 0.1
    features, log_mel = mel.unit_features(samples)
    assert features.shape == (2, 80) and log_mel.shape == (8, 80)
    assert mel.griffin_lim(mel.log_mel_to_magnitude(log_mel), num_iters=2).shape == (1280,)


@needs_flite
def test_cli_fit(speech, tmp_path):
    wav_dir = tmp_path / "wavs"
    wav_dir.mkdir()
    for i, waveform in enumerate(speech):
        sf.write(str(wav_dir / f"{i}.wav"), waveform.samples, waveform.sample_rate)
    main(
        [
            "fit",
            "--wav-dir",
            str(wav_dir),
            "--out",
            str(tmp_path / "codec"),
            "--num-units",
            "16",
            "--kmeans-iters",
            "3",
        ]
    )
    assert UnitsCodec.load(tmp_path / "codec").codebook_size == 16


def test_cli_help():
    result = subprocess.run(
        [sys.executable, "-m", "core.codec.units", "fit", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--wav-dir" in result.stdout and "--num-units" in result.stdout
