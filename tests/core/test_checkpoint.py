import json

import pytest
import torch

from core.checkpoint import (
    GENERATION_FILE,
    CheckpointError,
    CheckpointNotFoundError,
    TamperedCheckpointError,
    UnsafeCheckpointError,
    from_pretrained,
    save_generation_config,
    save_pretrained,
)
from core.sampling import ModeSampling, SamplingConfig
from core.sequence import Sample, SequenceBuilder, UserInput, collate
from tests.core.conftest import fake_mels, make_model


def _logprobs(model, tokenizer):
    b = SequenceBuilder(model.config, tokenizer)
    ex = b.example(Sample("S2M", UserInput(mels=fake_mels(1.0)), "hello there", list(range(11))))
    with torch.no_grad():
        return model.sequence_logprobs(collate([ex], tokenizer.pad_token_id, model.config.speech_pad)).total


def test_save_load_gives_identical_outputs(tmp_path, tokenizer):
    model = make_model(tokenizer, seed=11, speech_delay=1)
    save_pretrained(tmp_path / "ckpt", model, tokenizer, extra={"recipe": "test"})
    ckpt = from_pretrained(tmp_path / "ckpt")
    assert ckpt.extra == {"recipe": "test"}
    assert ckpt.model.config.to_dict() == {
        **model.config.to_dict(),
        "codec": {"type": "none"},
    }  # saved without codec
    assert ckpt.tokenizer.encode("hello there") == tokenizer.encode("hello there")
    assert torch.equal(_logprobs(ckpt.model, ckpt.tokenizer), _logprobs(model, tokenizer))
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), ckpt.model.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1
    # tied embeddings stay tied after loading
    assert ckpt.model.llm.lm_head.weight.data_ptr() == ckpt.model.llm.model.embed_tokens.weight.data_ptr()


def test_recommended_decoding_settings_round_trip(tmp_path, tokenizer):
    """generation_config.json holds what differs from SamplingConfig(), then per mode what differs
    for it; none means the defaults in every mode."""
    out = save_pretrained(tmp_path / "ckpt", make_model(tokenizer), tokenizer)
    assert not (out / GENERATION_FILE).exists() and from_pretrained(out).sampling == ModeSampling()
    default = SamplingConfig(text_guide=0.25)
    recommended = ModeSampling(default, {"S2T": SamplingConfig(audio_views=3, text_guide=0.25)})
    save_generation_config(out, recommended)
    assert json.loads((out / GENERATION_FILE).read_text()) == {
        "text_guide": 0.25,
        "modes": {"S2T": {"audio_views": 3}},
    }
    loaded = from_pretrained(out).sampling
    assert loaded == recommended
    assert loaded.for_mode("s2t").audio_views == 3 and loaded.for_mode("S2M") == default
    assert loaded.replace(audio_views=2).for_mode("S2T") == SamplingConfig(audio_views=2, text_guide=0.25)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"audio_views": 3,', "not valid JSON"),
        ("[3]", "JSON object"),
        ('{"audio_views": 3, "beams": 4}', "unknown sampling settings: beams"),
        ('{"audio_views": 99}', "audio_views must be in"),
        ('{"modes": {"S2X": {"audio_views": 3}}}', "must map mode names"),
        ('{"modes": {"S2T": {"audio_views": 0}}}', "mode S2T: audio_views must be in"),
    ],
)
def test_a_broken_generation_config_is_a_clear_error(tmp_path, tokenizer, content, message):
    out = save_pretrained(tmp_path / "ckpt", make_model(tokenizer), tokenizer)
    (out / GENERATION_FILE).write_text(content)
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(out)


def test_tampered_weights_are_refused(tmp_path, tokenizer):
    out = save_pretrained(tmp_path / "ckpt", make_model(tokenizer), tokenizer)
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(TamperedCheckpointError, match="checksum"):
        from_pretrained(out)


def test_unreadable_weights_are_refused(tmp_path, tokenizer):
    out = save_pretrained(tmp_path / "ckpt", make_model(tokenizer), tokenizer)
    (out / "model.safetensors").write_bytes(b"not a safetensors file")
    meta = json.loads((out / "config.json").read_text())
    meta["weights_sha256"] = None  # even without a checksum a broken file is a clear error
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TamperedCheckpointError, match="safetensors"):
        from_pretrained(out)


def test_pickle_checkpoint_is_refused(tmp_path, tokenizer):
    model = make_model(tokenizer)
    out = save_pretrained(tmp_path / "ckpt", model, tokenizer)
    (out / "model.safetensors").unlink()
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        from_pretrained(out)


def test_missing_directory_and_offline_hub_id(tmp_path, monkeypatch):
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        from_pretrained(tmp_path / "nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointNotFoundError, match="HF_HUB_OFFLINE") as err:
        from_pretrained("some-org/drvoice-not-cached")
    assert "--local-dir" in str(err.value)


def test_hub_id_found_in_local_cache(tmp_path, monkeypatch, tokenizer):
    """A hub id resolves through huggingface_hub's cache layout when offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--org--tiny-drvoice"
    commit = "0" * 40
    save_pretrained(repo / "snapshots" / commit, make_model(tokenizer), tokenizer)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    ckpt = from_pretrained("org/tiny-drvoice")
    assert ckpt.checkpoint_id == "org/tiny-drvoice"
