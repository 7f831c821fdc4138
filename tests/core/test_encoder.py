"""core.encoder: frame arithmetic, any-length windows, batch independence, Whisper weight compatibility."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import whisper.model

from core.encoder import (
    EncoderConfig,
    SpeechEncoder,
    encoder_frames,
    log_mel,
    max_mel_frames_for,
    num_output_frames,
    pad_mels,
    tiny_encoder_config,
    whisper_large_v3_encoder_config,
    whisper_padding_value,
)
from core.types import Waveform

LLM_HIDDEN = 32


def small_config(**overrides) -> EncoderConfig:
    """Tiny dims and a short window (n_audio_ctx 50 = 1 s) so that window crossings are cheap to test."""
    fields = {
        "llm_hidden_size": LLM_HIDDEN,
        "n_mels": 80,
        "n_audio_ctx": 50,
        "n_audio_state": 16,
        "n_audio_head": 2,
        "n_audio_layer": 2,
        "downsample": 10,
        "adapter_hidden": 24,
        "pad_to_window": False,
    }
    fields.update(overrides)
    return EncoderConfig(**fields)


def make_encoder(cfg: EncoderConfig, seed: int = 0) -> SpeechEncoder:
    torch.manual_seed(seed)
    return SpeechEncoder(cfg).eval()


def random_mels(frames: int, n_mels: int = 80, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_mels, frames, generator=generator) * 0.5  # (n_mels, frames)


# ---------------------------------------------------------------------------------------------
# Config


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="n_mels"):
        small_config(n_mels=64)
    with pytest.raises(ValueError, match="downsample"):
        small_config(downsample=0)
    with pytest.raises(ValueError, match="n_audio_state"):
        small_config(n_audio_state=18, n_audio_head=4)
    with pytest.raises(ValueError, match="pad_to_window"):
        small_config(pad_to_window="yes")
    with pytest.raises(ValueError, match="llm_hidden_size"):
        small_config(llm_hidden_size=-1)
    with pytest.raises(ValueError, match="positional_scale"):
        small_config(positional_scale=float("nan"))
    with pytest.raises(ValueError, match="positional_scale"):
        small_config(positional_scale=-0.5)
    with pytest.raises(ValueError, match="output_norm"):
        small_config(output_norm=1)


def test_old_configs_without_the_scale_fields_load_with_whisper_behaviour():
    old = {k: v for k, v in small_config().to_dict().items() if k not in ("positional_scale", "output_norm")}
    cfg = EncoderConfig.from_dict(old)
    assert cfg.positional_scale == 1.0 and cfg.output_norm is False
    assert "output_norm.weight" not in SpeechEncoder(cfg).state_dict()


def test_config_dict_round_trip_and_presets():
    cfg = tiny_encoder_config(LLM_HIDDEN)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        EncoderConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    large = whisper_large_v3_encoder_config(3584)
    assert (
        large.n_mels,
        large.n_audio_ctx,
        large.n_audio_state,
        large.n_audio_head,
        large.n_audio_layer,
    ) == (
        128,
        1500,
        1280,
        20,
        32,
    )
    assert large.pad_to_window and large.llm_hidden_size == 3584 and large.window_mel_frames == 3000
    assert (cfg.n_mels, cfg.n_audio_ctx, cfg.n_audio_state, cfg.n_audio_head, cfg.n_audio_layer) == (
        80,
        1500,
        64,
        2,
        2,
    )


# ---------------------------------------------------------------------------------------------
# Frame arithmetic


def test_frame_counts_hand_computed():
    """Real Whisper windows (3000 mel frames -> 1500 encoder frames), downsample 10:
    0.5 s = 50 mel -> 25 enc -> 3; 3 s = 300 -> 150 -> 15; 31 s = 3100 -> 1500 + 50 = 1550 -> 155;
    70 s = 7000 -> 1500 + 1500 + 500 = 3500 -> 350; 301 mel -> 151 enc -> 16 (ceil)."""
    cfg = tiny_encoder_config(LLM_HIDDEN)
    assert [encoder_frames(n, cfg) for n in (0, 1, 2, 3, 50, 3000, 3001)] == [0, 1, 1, 2, 25, 1500, 1501]
    assert [num_output_frames(n, cfg) for n in (0, 50, 300, 301, 3100, 7000)] == [0, 3, 15, 16, 155, 350]


def test_max_mel_frames_for_is_the_inverse():
    cfg = small_config()
    for positions in range(0, 40):
        frames = max_mel_frames_for(positions, cfg)
        assert num_output_frames(frames, cfg) <= positions
        assert num_output_frames(frames + 1, cfg) > positions
    large = whisper_large_v3_encoder_config(8)
    assert max_mel_frames_for(2048, large) / 100 == pytest.approx(409.6)  # 2K positions: 6.8 min


# ---------------------------------------------------------------------------------------------
# Front end


def test_log_mel_shape_and_matches_whisper():
    import whisper.audio

    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(16000 * 2 + 37) * 0.1).astype(np.float32)
    mel = log_mel(Waveform(samples=samples, sample_rate=16000), n_mels=80)
    assert mel.shape == (80, 200)
    reference = whisper.audio.log_mel_spectrogram(torch.from_numpy(samples), n_mels=80)
    torch.testing.assert_close(mel, reference[:, :200])
    assert log_mel(Waveform(samples=samples[:100], sample_rate=16000), n_mels=128).shape == (128, 0)
    assert log_mel(Waveform(samples=samples[:170], sample_rate=16000), n_mels=80).shape == (80, 1)
    with pytest.raises(ValueError, match="16000"):
        log_mel(Waveform(samples=samples, sample_rate=8000), n_mels=80)


def test_whisper_padding_value_equals_whisper_zero_padding():
    import whisper.audio

    rng = np.random.default_rng(1)
    samples = np.concatenate([(rng.standard_normal(8000) * 0.3), np.zeros(16000)]).astype(np.float32)
    mel = whisper.audio.log_mel_spectrogram(torch.from_numpy(samples), n_mels=80)
    expected = mel[:, -50:]  # frames of pure zero audio
    torch.testing.assert_close(expected, whisper_padding_value(mel[:, :50]).expand_as(expected))


# ---------------------------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("pad_to_window", [False, True])
@pytest.mark.parametrize("seconds", [0.5, 3.0, 31.0, 70.0])
def test_output_shapes_real_window(seconds, pad_to_window):
    cfg = dataclasses.replace(tiny_encoder_config(LLM_HIDDEN), pad_to_window=pad_to_window)
    encoder = make_encoder(cfg)
    frames = int(seconds * 100)
    mels, lengths = pad_mels([random_mels(frames)])
    with torch.no_grad():
        features, out_lengths = encoder(mels, lengths)
    expected = {0.5: 3, 3.0: 15, 31.0: 155, 70.0: 350}[seconds]
    assert features.shape == (1, expected, LLM_HIDDEN)
    assert out_lengths.tolist() == [expected] == [num_output_frames(frames, cfg)]
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("pad_to_window", [False, True])
def test_num_output_frames_matches_forward(pad_to_window):
    cfg = small_config(pad_to_window=pad_to_window)  # 100-mel-frame windows
    encoder = make_encoder(cfg)
    lengths = [0, 1, 2, 3, 19, 20, 21, 99, 100, 101, 150, 199, 200, 201, 257, 399]
    mels, mel_lengths = pad_mels([random_mels(n, seed=n) for n in lengths])
    with torch.no_grad():
        features, out_lengths = encoder(mels, mel_lengths)
    expected = [num_output_frames(n, cfg) for n in lengths]
    assert out_lengths.tolist() == expected
    assert features.shape == (len(lengths), max(expected), LLM_HIDDEN)
    for i, n_out in enumerate(expected):
        assert torch.all(features[i, n_out:] == 0)


@pytest.mark.parametrize("pad_to_window", [False, True])
def test_batched_equals_per_item(pad_to_window):
    cfg = small_config(pad_to_window=pad_to_window)
    encoder = make_encoder(cfg, seed=3)
    lengths = [37, 100, 250, 5, 100, 163]  # one and several windows, equal and different tails
    items = [random_mels(n, seed=10 + i) for i, n in enumerate(lengths)]
    mels, mel_lengths = pad_mels(items)
    mels[0, :, 37:] = 123.0  # padding values must never be read
    with torch.no_grad():
        batched, out_lengths = encoder(mels, mel_lengths)
        for i, item in enumerate(items):
            alone, alone_length = encoder(item[None], torch.tensor([item.shape[1]]))
            assert alone_length.item() == out_lengths[i].item()
            torch.testing.assert_close(batched[i, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-5)


def test_long_input_windows_are_independent():
    """With exact-length windows, the features of the first window do not depend on what follows."""
    cfg = small_config()
    encoder = make_encoder(cfg)
    item = random_mels(300)
    with torch.no_grad():
        whole, _ = encoder(item[None], torch.tensor([300]))
        first, _ = encoder(item[None, :, :100], torch.tensor([100]))
    torch.testing.assert_close(whole[0, :5], first[0], atol=1e-5, rtol=1e-5)


def test_whisper_state_dict_loads_and_matches_audio_encoder():
    """A real 30 s window (3000 mel frames of real audio, n_audio_ctx 1500) through both encoders."""
    cfg = dataclasses.replace(tiny_encoder_config(LLM_HIDDEN), pad_to_window=True)
    torch.manual_seed(7)
    reference = whisper.model.AudioEncoder(
        cfg.n_mels, cfg.n_audio_ctx, cfg.n_audio_state, cfg.n_audio_head, cfg.n_audio_layer
    ).eval()
    encoder = make_encoder(cfg, seed=99)
    result = encoder.whisper.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    rng = np.random.default_rng(3)
    samples = (rng.standard_normal(30 * 16000) * 0.1).astype(np.float32)
    full = log_mel(Waveform(samples=samples, sample_rate=16000), n_mels=cfg.n_mels)[None]  # (1, 80, 3000)
    assert full.shape[-1] == cfg.window_mel_frames
    with torch.no_grad():
        expected = reference(full)  # (1, 1500, n_state); asserts the exact 30 s shape itself
        windows = encoder._encode_windows(full)
        features, out_lengths = encoder(full, torch.tensor([cfg.window_mel_frames]))
        # the adapter applied by hand to the reference encoder output: 1500 frames -> 150 at 5 Hz
        stacked = expected.reshape(1, cfg.n_audio_ctx // cfg.downsample, cfg.downsample * cfg.n_audio_state)
        adapted = encoder.adapter(stacked)
    assert out_lengths.tolist() == [150]
    torch.testing.assert_close(windows, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features, adapted, atol=1e-5, rtol=1e-5)


def test_positional_scale_and_output_norm_match_a_hand_computation():
    """positional_scale multiplies Whisper's sinusoids (a scaled reference buffer gives the same output);
    output_norm is a LayerNorm on the adapter output with the gain `match_output_scale` sets."""
    plain = make_encoder(small_config(), seed=5)
    scaled = make_encoder(small_config(positional_scale=0.25, output_norm=True), seed=5)
    assert scaled.load_state_dict(plain.state_dict(), strict=False).missing_keys == [
        "output_norm.weight",
        "output_norm.bias",
    ]
    embeddings = torch.randn(100, LLM_HIDDEN) * 0.3
    gain = scaled.match_output_scale(embeddings)
    assert gain == pytest.approx(float(embeddings.pow(2).mean().sqrt()))
    item = random_mels(40, seed=3)
    with torch.no_grad():
        plain.whisper.positional_embedding.mul_(0.25)  # the reference: the buffer itself scaled
        expected = F.layer_norm(plain(item[None], torch.tensor([40]))[0], (LLM_HIDDEN,)) * gain
        features, _ = scaled(item[None], torch.tensor([40]))
        unscaled, _ = make_encoder(small_config(output_norm=True), seed=5)(item[None], torch.tensor([40]))
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    assert features.pow(2).mean().sqrt() == pytest.approx(gain, rel=1e-3)
    assert not torch.allclose(F.layer_norm(unscaled, (LLM_HIDDEN,)) * gain, features, atol=1e-3)
    with pytest.raises(ValueError, match="output_norm"):
        plain.match_output_scale(embeddings)


def test_pad_to_window_matches_whisper_on_padded_audio():
    """pad_to_window=True runs a short item like Whisper runs it padded to 30 s, keeping the real frames."""
    cfg = small_config(pad_to_window=True)
    encoder = make_encoder(cfg, seed=4)
    item = random_mels(37, seed=2)
    padded = torch.cat([item, whisper_padding_value(item).expand(cfg.n_mels, 63)], dim=1)[None]
    with torch.no_grad():
        full = encoder.whisper(padded)[:, :19]  # ceil(37 / 2) real encoder frames
        stacked = torch.cat([full, full.new_zeros(1, 1, cfg.n_audio_state)], dim=1).reshape(1, 2, -1)
        expected = encoder.adapter(stacked)
        features, _ = encoder(item[None], torch.tensor([37]))
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_gradients_reach_whisper_and_adapter():
    cfg = small_config()
    encoder = make_encoder(cfg).train()
    mels, lengths = pad_mels([random_mels(130), random_mels(40, seed=1)])
    features, _ = encoder(mels, lengths)
    features.sum().backward()
    assert encoder.whisper.conv1.weight.grad is not None and encoder.whisper.conv1.weight.grad.abs().sum() > 0
    assert encoder.adapter[0].weight.grad.abs().sum() > 0


def test_low_precision_module_runs_and_tracks_fp32():
    """bf16 training casts the whole module; Whisper's own LayerNorm would fail on bf16 parameters."""
    cfg = small_config()
    encoder = make_encoder(cfg)
    mels, lengths = pad_mels([random_mels(130), random_mels(40, seed=1)])
    with torch.no_grad():
        reference, _ = encoder(mels, lengths)
        encoder.to(torch.bfloat16)
        features, out_lengths = encoder(mels, lengths)  # fp32 mels are cast to the module dtype
    assert features.dtype == torch.bfloat16 and out_lengths.tolist() == [7, 2]
    torch.testing.assert_close(features.float(), reference, atol=0.1, rtol=0.1)
    double = SpeechEncoder(cfg, dtype=torch.float64)
    assert double(mels, lengths)[0].dtype == torch.float64


def test_input_checks():
    encoder = make_encoder(small_config())
    with pytest.raises(ValueError, match="mels must be"):
        encoder(torch.zeros(1, 128, 10), torch.tensor([10]))
    with pytest.raises(ValueError, match="mel_lengths"):
        encoder(torch.zeros(1, 80, 10), torch.tensor([11]))
    features, out_lengths = encoder(torch.zeros(2, 80, 0), torch.tensor([0, 0]))
    assert features.shape == (2, 0, LLM_HIDDEN) and out_lengths.tolist() == [0, 0]
