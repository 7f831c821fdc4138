"""Tests of the embedded units codec and the generic chunked streaming decoder.

Speech comes from flite's `slt` voice (the codec's one assistant voice); the tests that need it are
skipped, with the reason shown, when the `flite` binary is missing (CI installs it).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from core.codec.base import DetokenizerStream, SpeechDetokenizer, SpeechTokenizer
from core.codec.features import FeatureConfig, MelFeatures, kmeans
from core.codec.streaming import ChunkedStreamDecoder, ChunkSchedule, decode_chunked
from core.codec.units import UnitsCodec
from core.codec.units_cli import main
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


@pytest.mark.parametrize(
    "first, hop, left, lookahead, crossfade",
    [(4, 5, 2, 2, 30), (1, 1, 1, 1, 40), (3, 2, 0, 0, 0), (10, 25, 8, 8, 1)],
)
def test_chunked_decoder_matches_reference_signal(first, hop, left, lookahead, crossfade):
    """Windows of a position-exact decoder joined by the scheduler give the reference back exactly.

    Token t decodes to sin(0.01 * (t * spt + j)) for j in [0, spt): any window agrees with the
    reference, so crossfades must be identity and every sample must land at its absolute index,
    whether tokens come all at once or one by one.
    """
    spt = 40

    def decode_window(tokens: np.ndarray) -> np.ndarray:
        positions = tokens[:, None] * spt + np.arange(spt)  # (W, spt) absolute sample indices
        return np.sin(0.01 * positions).reshape(-1).astype(np.float32)

    schedule = ChunkSchedule(first, hop, left, lookahead, crossfade)
    for num_tokens in (0, 1, 2, 3, 5, 17, 40):
        tokens = np.arange(num_tokens)
        reference = decode_window(tokens)
        audio = decode_chunked(decode_window, tokens, spt, schedule)
        assert audio.shape == reference.shape
        np.testing.assert_allclose(audio, reference, atol=1e-6)
        stream = ChunkedStreamDecoder(decode_window, spt, schedule)
        chunks = [c for t in tokens for c in stream.push([t])] + stream.flush()
        np.testing.assert_array_equal(np.concatenate(chunks) if chunks else np.zeros(0, np.float32), audio)


@pytest.mark.parametrize(
    "first, hop, left, lookahead, crossfade",
    [(4, 5, 2, 2, 30), (1, 1, 1, 1, 40), (3, 2, 0, 0, 0), (10, 25, 13, 13, 40)],
)
def test_exact_span_is_all_the_stream_keeps(first, hop, left, lookahead, crossfade):
    """With exact_span the window decoder may return garbage outside `exact`: the joined audio is
    still the reference, so the span covers every sample the stream keeps or crossfades."""
    spt = 40
    spans, window_lengths = [], []

    def decode_window(tokens: np.ndarray, exact: tuple[int, int]) -> np.ndarray:
        a, b = exact
        assert 0 <= a < b <= len(tokens)
        spans.append(exact)
        window_lengths.append(len(tokens))
        positions = tokens[:, None] * spt + np.arange(spt)
        audio = np.sin(0.01 * positions).astype(np.float32)
        audio[:a] = 1e6
        audio[b:] = -1e6
        return audio.reshape(-1)

    schedule = ChunkSchedule(first, hop, left, lookahead, crossfade)
    for num_tokens in (1, 2, 5, 17, 61):
        tokens = np.arange(num_tokens)
        reference = np.sin(0.01 * np.arange(num_tokens * spt)).astype(np.float32)
        audio = decode_chunked(decode_window, tokens, spt, schedule, exact_span=True)
        np.testing.assert_allclose(audio, reference, atol=1e-6)
    if lookahead > 1:  # the span leaves context out of some windows
        assert any(b - a < len_ for (a, b), len_ in zip(spans, window_lengths, strict=True))


def test_chunk_schedule_first_chunk_then_fixed_hops():
    """First chunk after first_chunk_tokens + lookahead tokens, then one per hop_tokens tokens."""
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
    assert ready_at == [15, 40, 65]
    # chunks cover tokens [0, 10), [10, 35), [35, 60), the flush the rest; joins move 2 samples later
    assert lengths == [10 * spt - 2, 25 * spt, 25 * spt]
    assert sum(lengths) + sum(len(c) for c in stream.flush()) == 70 * spt


def test_growing_hops_double_up_to_the_limit_and_stream_equals_offline():
    """hop_growth 2, max 40: chunks of 10 (first), 10, 20, 40, 40 tokens; a stream fed token by token
    gives the samples of the offline decode, and the windows re-decode less than constant hops do."""
    spt = 8
    grow = ChunkSchedule(
        first_chunk_tokens=10,
        hop_tokens=10,
        hop_growth=2.0,
        max_hop_tokens=40,
        left_context_tokens=3,
        lookahead_tokens=3,
        crossfade_samples=4,
    )
    windows: list[int] = []

    def decode_window(tokens):
        windows.append(len(tokens))
        return np.sin(0.3 * np.asarray(tokens, np.float32).repeat(spt) + np.arange(len(tokens) * spt) * 0.01)

    tokens = np.arange(130) % 7
    stream = ChunkedStreamDecoder(decode_window, spt, grow)
    chunks, ready_at = [], []
    for n, token in enumerate(tokens):
        new = stream.push([token])
        chunks += new
        ready_at += [n + 1] * len(new)
    assert ready_at == [13, 23, 43, 83, 123]  # each chunk's end + 3 tokens of lookahead
    chunks += stream.flush()
    windows.clear()
    offline = decode_chunked(decode_window, tokens, spt, grow)
    np.testing.assert_array_equal(np.concatenate(chunks), offline)
    grown_work = sum(windows)
    windows.clear()
    constant = decode_chunked(decode_window, tokens, spt, replace(grow, hop_growth=1.0, max_hop_tokens=0))
    assert len(offline) == len(constant) == 130 * spt
    assert grown_work < sum(windows)
    assert grow.next_hop(10) == 20 and grow.next_hop(30) == 40 and grow.next_hop(40) == 40
    assert ChunkSchedule().next_hop(25) == 25  # the default: a constant hop


def test_schedule_validation():
    with pytest.raises(ValueError, match="first_chunk_tokens"):
        ChunkSchedule(first_chunk_tokens=0)
    with pytest.raises(ValueError, match="hop_growth"):
        ChunkSchedule(hop_growth=0.5)
    with pytest.raises(ValueError, match="max_hop_tokens"):
        ChunkSchedule(hop_tokens=25, max_hop_tokens=10)
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
def test_chunked_decode_equals_single_pass(codec, speech):
    """Windows with 8 tokens of context each side reproduce a single Griffin-Lim pass over the
    whole sequence (zero initial phase is the same at every position), so joins are seamless."""
    tokens = torch.cat([codec.encode(w) for w in speech])  # ~11 s: 10 joins
    chunked, single = codec.decode(tokens), codec.decode_window(tokens)
    assert chunked.shape == single.shape
    np.testing.assert_allclose(chunked, single, atol=1e-3)


@needs_flite
def test_griffin_lim_on_the_kept_span_only(codec, speech):
    """Griffin-Lim on each window's kept span plus 5 tokens (not the whole window) gives the same
    audio: a wide decoder's context need not widen Griffin-Lim's."""
    tokens = torch.cat([codec.encode(w) for w in speech])
    wide = replace(
        codec.config, schedule=replace(codec.config.schedule, left_context_tokens=13, lookahead_tokens=13)
    )
    whole = UnitsCodec(wide, codec.centroids, codec.unit_log_mel, codec.decoder).decode(tokens)
    span = UnitsCodec(
        replace(wide, griffin_lim_context_tokens=5), codec.centroids, codec.unit_log_mel, codec.decoder
    )
    np.testing.assert_allclose(span.decode(tokens), whole, atol=1e-3)
    window = span.decode_window(tokens[:60], exact=(20, 30))  # outside span +- 5 tokens: silence
    assert not window[: 15 * 640].any() and not window[35 * 640 :].any() and window[15 * 640 : 35 * 640].any()
    with pytest.raises(ValueError, match="griffin_lim_context_tokens"):
        replace(wide, griffin_lim_context_tokens=-1)


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
    offline = codec.decode(tokens)
    np.testing.assert_array_equal(loaded.decode(tokens), offline)
    stream = codec.stream()  # the decoder sees the same windows when streaming, too
    streamed = [c for i in range(0, len(tokens), 5) for c in stream.push(tokens[i : i + 5])] + stream.flush()
    np.testing.assert_allclose(np.concatenate(streamed), offline, atol=1e-5)


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


def reference_griffin_lim(mel: MelFeatures, magnitude: torch.Tensor, num_iters: int) -> torch.Tensor:
    """Textbook fast Griffin-Lim with torch.istft / torch.stft (momentum 0.99, zero phase)."""
    c = mel.config
    kwargs = dict(n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=mel.window)
    target = torch.nn.functional.pad(magnitude.T, (0, 1))  # (n_freqs, F + 1)
    angles, previous, length = (
        torch.ones_like(target, dtype=torch.complex64),
        0.0,
        magnitude.shape[0] * c.hop_length,
    )
    for _ in range(num_iters):
        signal = torch.istft(target * angles, length=length, **kwargs)
        rebuilt = torch.stft(signal, pad_mode="constant", return_complex=True, **kwargs)
        angles = rebuilt - 0.99 / 1.99 * previous
        angles, previous = angles / angles.abs().clamp_min(1e-30), rebuilt
    return torch.istft(target * angles, length=length, **kwargs)


@pytest.mark.parametrize("win_length", [512, 400])
def test_griffin_lim_matches_torch_stft_reference(win_length):
    mel = MelFeatures(FeatureConfig(win_length=win_length))
    generator = torch.Generator().manual_seed(0)
    samples = torch.sin(torch.arange(6400) * 0.05) * 0.5 + 0.01 * torch.randn(6400, generator=generator)
    magnitude = mel.log_mel_to_magnitude(mel.log_mel(samples))  # (40, n_freqs)
    for num_iters in (0, 1, 5):
        expected = reference_griffin_lim(mel, magnitude, num_iters)
        torch.testing.assert_close(mel.griffin_lim(magnitude, num_iters), expected, atol=1e-3, rtol=0)


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


def test_dilated_decoder_reach_and_validation():
    from core.codec.units import UnitsCodecConfig, build_decoder

    config = UnitsCodecConfig(
        num_units=8, decoder_channels=8, decoder_blocks=3, decoder_kernel=3, decoder_dilations=[1, 2, 4]
    )
    assert config.decoder_dilations == (1, 2, 4)  # lists from JSON become tuples
    assert config.decoder_reach_frames == 1 * (2 + 7)
    assert UnitsCodecConfig(num_units=8, decoder_channels=8).decoder_reach_frames == 2 * (2 + 4)
    assert UnitsCodecConfig(num_units=8).decoder_reach_frames == 0
    decoder = build_decoder(config)
    torch.nn.init.normal_(decoder.output.weight)  # make the residual branch non-zero
    x = torch.zeros(1, 41, 80)
    with torch.no_grad():
        base = decoder(x)
        x[0, 20] = 1.0  # a change at frame 20 reaches exactly 9 frames to each side
        changed = (decoder(x) - base).abs().sum(-1)[0]
    assert changed[11:30].min() > 0 and changed[:11].max() == 0 and changed[30:].max() == 0
    with pytest.raises(ValueError, match="decoder_dilations"):
        UnitsCodecConfig(num_units=8, decoder_blocks=2, decoder_dilations=(1, 2, 4))
    with pytest.raises(ValueError, match="decoder_dilations"):
        UnitsCodecConfig(num_units=8, decoder_blocks=2, decoder_dilations=(1, 0))


@needs_flite
def test_refit_decoder_keeps_units_and_widens_streaming_context(speech, tmp_path):
    codec = UnitsCodec.fit(speech[:2], NUM_UNITS, seed=0, kmeans_iters=5)
    centroids, tokens = codec.centroids.clone(), codec.encode(speech[2])
    before = log_mel_l1(codec, speech[2].samples, codec.decode(tokens))
    losses = codec.refit_decoder(
        speech,
        80,
        channels=32,
        blocks=2,
        kernel=3,
        dilations=(1, 4),
        crop_units=32,
        lr=3e-3,
        val_fraction=0.0,
    )
    assert torch.equal(codec.centroids, centroids) and torch.equal(codec.encode(speech[2]), tokens)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])  # single crops are noisy: compare tens
    assert codec.config.decoder_dilations == (1, 4)
    reach_tokens = math.ceil(codec.config.decoder_reach_frames / 4)
    assert codec.config.schedule.lookahead_tokens >= reach_tokens + 5
    assert codec.config.schedule.left_context_tokens >= reach_tokens + 5
    assert codec.config.griffin_lim_context_tokens == 5  # Griffin-Lim keeps its own, smaller span
    # the sentence it now trained on comes back closer to the recording
    assert log_mel_l1(codec, speech[2].samples, codec.decode(tokens)) < before
    codec.save(tmp_path)
    loaded = UnitsCodec.load(tmp_path)
    assert loaded.config == codec.config
    np.testing.assert_array_equal(loaded.decode(tokens), codec.decode(tokens))
    stream = loaded.stream()
    streamed = [c for i in range(0, len(tokens), 7) for c in stream.push(tokens[i : i + 7])] + stream.flush()
    np.testing.assert_allclose(np.concatenate(streamed), codec.decode(tokens), atol=1e-5)


@needs_flite
def test_cli_refit_decoder(speech, tmp_path):
    import json

    wav_dir = tmp_path / "wavs"
    wav_dir.mkdir()
    lines = []
    for i, waveform in enumerate(speech):
        sf.write(str(wav_dir / f"{i}.wav"), waveform.samples, waveform.sample_rate)
        lines.append(json.dumps({"id": str(i), "reply_audio": f"wavs/{i}.wav"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines[:2]) + "\n")
    UnitsCodec.fit(speech, 16, seed=0, kmeans_iters=3).save(tmp_path / "codec")
    args = ["refit-decoder", "--codec", str(tmp_path / "codec"), "--out", str(tmp_path / "refit")]
    args += ["--manifest", str(tmp_path / "m.jsonl"), "--decoder-steps", "3", "--channels", "16"]
    main(args + ["--blocks", "2", "--dilations", "1", "2", "--crop-units", "16"])
    refit = UnitsCodec.load(tmp_path / "refit")
    assert refit.decoder is not None and refit.config.decoder_dilations == (1, 2)
    assert torch.equal(refit.centroids, UnitsCodec.load(tmp_path / "codec").centroids)
    with pytest.raises(SystemExit):
        main(["refit-decoder", "--codec", str(tmp_path / "codec"), "--out", str(tmp_path / "x")])
