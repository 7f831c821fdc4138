"""The real codec named by a checkpoint: config.json spec -> S3 tokenizer + CosyVoice2 detokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.codec.cosyvoice import Speaker
from core.codec.cosyvoice_modules import CosyVoice2Config
from core.codec.registry import load_codec
from core.codec.s3 import build_s3_model
from core.codec.s3_cosyvoice2 import S3CosyVoice2Codec
from core.hub import MissingFilesError
from core.types import Waveform
from tests.core.codec.tiny_cosyvoice import write_tiny_weights

S3_TINY = dict(n_audio_state=128, n_audio_head=2, n_audio_layer=1)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_codec")
    write_tiny_weights(root / "CosyVoice2-0.5B", CosyVoice2Config.tiny())
    torch.manual_seed(0)
    torch.save(
        build_s3_model("v2", **S3_TINY).state_dict(), root / "CosyVoice2-0.5B" / "speech_tokenizer_v2.pt"
    )
    return {
        "type": "s3+cosyvoice2",
        "detokenizer": str(root / "CosyVoice2-0.5B"),
        "tokenizer": str(root / "CosyVoice2-0.5B" / "speech_tokenizer_v2.pt"),
        "tokenizer_version": "v2",
        "config": CosyVoice2Config.tiny().to_dict(),
        "tokenizer_config": S3_TINY,
    }


def test_registry_builds_the_codec_and_it_round_trips_audio(spec, tmp_path):
    codec = load_codec(spec, tmp_path)
    assert isinstance(codec, S3CosyVoice2Codec)
    assert (codec.codebook_size, codec.token_rate, codec.sample_rate) == (6561, 25.0, 24000)
    rng = np.random.RandomState(0)
    tokens = codec.encode(Waveform((0.1 * rng.randn(16000)).astype(np.float32), 16000))
    assert len(tokens) == 25
    audio = codec.decode(tokens)
    stream = codec.stream()
    streamed = np.concatenate(stream.push(tokens) + stream.flush())
    assert audio.shape == streamed.shape == (25 * 960,)


def test_checkpoint_stores_the_spec_and_the_speaker(spec, tmp_path, tiny_model, tokenizer):
    from core.checkpoint import from_pretrained, save_pretrained

    codec = load_codec(spec, tmp_path)
    speaker = Speaker(torch.randn(192), torch.randint(0, 6561, (4,)), torch.randn(8, 80))
    codec.detokenizer.speaker = speaker
    directory = save_pretrained(tmp_path / "ckpt", tiny_model, tokenizer, codec=codec)
    stored = json.loads((directory / "config.json").read_text())["model"]["codec"]
    assert stored["type"] == "s3+cosyvoice2" and stored["speaker"] == "codec/speaker.safetensors"
    assert stored["detokenizer"] == spec["detokenizer"]
    loaded = from_pretrained(directory).codec
    assert isinstance(loaded, S3CosyVoice2Codec)
    assert torch.equal(loaded.detokenizer.speaker.embedding, speaker.embedding)
    assert torch.equal(loaded.detokenizer.speaker.prompt_tokens, speaker.prompt_tokens)


def test_offline_spec_with_hub_ids_names_the_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(MissingFilesError, match="flow.pt, hift.pt"):
        load_codec({"type": "s3+cosyvoice2"}, tmp_path)
    no_tokenizer = {"type": "s3+cosyvoice2", "tokenizer": None, "detokenizer": str(tmp_path)}
    with pytest.raises(MissingFilesError, match="flow.pt, hift.pt"):
        load_codec(no_tokenizer, tmp_path)
