"""CTC pretraining of the speech encoder (training/recipes/encoder_ctc.py)."""

import json

import pytest
import torch

from core.checkpoint import from_pretrained
from training.metrics import read_metrics
from training.recipes import encoder_ctc
from training.recipes.encoder_ctc import ALPHABET, characters, greedy_decode


def _cfg(assets, out, **kw):
    """The recipe on the tiny assets' four utterances (train = validation: do they get spelled?)."""
    base = dict(
        init=str(assets.init),
        train_manifest=str(assets.manifest),
        validation_manifest=str(assets.manifest),
        output_dir=str(out),
        batch_size=4,
        peak_lr=3e-3,
        final_lr=1e-3,
    )
    base.update(kw)
    return encoder_ctc.EncoderCTCConfig(**base)


def test_characters_and_greedy_decoding_by_hand():
    assert characters("What's 2-3?") == [ALPHABET.index(c) + 1 for c in "what's"]  # digits dropped
    assert characters("Day  after\nMonday.") == [ALPHABET.index(c) + 1 for c in "day after monday"]
    assert characters("?!") == []
    # best path a a _ b b _ b -> a b b (repeats merged, blanks separate the two b's)
    path = [1, 1, 0, 2, 2, 0, 2]
    log_probs = torch.full((len(path), 4), -10.0)
    log_probs[torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_decode(log_probs) == [1, 2, 2]


def test_ctc_teaches_the_encoder_to_spell_its_training_utterances(tiny_assets, tmp_path):
    out = encoder_ctc.run(_cfg(tiny_assets, tmp_path / "ctc", max_steps=150, eval_every=25, log_every=5))
    records = read_metrics(tmp_path / "ctc" / "metrics.jsonl")
    losses = [r["loss"] for r in records]
    cers = [r["cer"] for r in records if "cer" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert cers[-1] < 0.2 and cers[-1] < cers[0] / 3, cers  # spells its training utterances
    assert (tmp_path / "ctc" / "loss.png").is_file()
    by_voice = json.loads((tmp_path / "ctc" / "cer_by_voice.json").read_text())
    assert sum(r["utterances"] for r in by_voice.values()) == 4  # every validation utterance
    assert all(0 <= r["cer"] < 0.2 for r in by_voice.values())

    before, after = from_pretrained(tiny_assets.init).model, from_pretrained(out).model
    changed = {n for n, p in after.named_parameters() if not torch.equal(p, before.get_parameter(n))}
    assert changed and all(n.startswith("encoder.whisper.") for n in changed)  # adapter, LLM, SRH untouched
    assert from_pretrained(out).extra["recipe"] == "encoder_ctc"


def test_a_checkpoint_without_a_continuous_encoder_is_refused(tiny_assets, tmp_path):
    from core.checkpoint import save_pretrained
    from tests.core.conftest import make_model

    ckpt = from_pretrained(tiny_assets.init)
    model = make_model(ckpt.tokenizer, seed=1, speech_vocab=32, user_audio="discrete")
    path = save_pretrained(tmp_path / "discrete", model, ckpt.tokenizer, codec=ckpt.codec)
    with pytest.raises(ValueError, match="no continuous speech encoder"):
        encoder_ctc.run(
            encoder_ctc.EncoderCTCConfig(
                init=str(path), train_manifest=str(tiny_assets.manifest), output_dir=str(tmp_path / "x")
            )
        )


def test_augmented_ctc_still_learns_and_keeps_its_classifier(tiny_assets, tmp_path):
    out = encoder_ctc.run(_cfg(tiny_assets, tmp_path / "ctc", max_steps=200, eval_every=50, augment=True))
    cers = [r["cer"] for r in read_metrics(tmp_path / "ctc" / "metrics.jsonl") if "cer" in r]
    assert cers[-1] < 0.5 and cers[-1] < cers[0], cers
    assert from_pretrained(out).extra["ctc_augment"] is True
    from safetensors.torch import load_file

    head = load_file(str(tmp_path / "ctc" / "ctc_head.safetensors"))
    assert head["weight"].shape[0] == len(ALPHABET) + 1


def test_a_rerun_starts_a_fresh_curve(tiny_assets, tmp_path):
    cfg = _cfg(tiny_assets, tmp_path / "ctc", validation_manifest=None, max_steps=20, log_every=5)
    encoder_ctc.run(cfg)
    encoder_ctc.run(cfg)
    assert [r["step"] for r in read_metrics(tmp_path / "ctc" / "metrics.jsonl")] == [5, 10, 15, 20]


def test_recordings_longer_than_one_encoder_window_are_left_out_with_a_warning(tiny_assets, caplog):
    from training.data import MelCache, read_manifest
    from training.recipes.encoder_ctc import _utterances

    cache = MelCache(None, 80)
    items = [i for i in read_manifest(tiny_assets.manifest) if i.audio]
    frames = sorted({cache.frames(i.audio) for i in items})
    assert len(frames) > 1  # the fixture's recordings differ in length
    everything = _utterances(str(tiny_assets.manifest), cache, max_frames=frames[-1])
    with caplog.at_level("WARNING"):
        short = _utterances(str(tiny_assets.manifest), cache, max_frames=frames[-1] - 1)
    assert 0 < len(short) < len(everything)
    assert all(u.mel.shape[-1] < frames[-1] for u in short)
    assert f"{len(everything) - len(short)} recordings over {frames[-1] - 1} mel frames" in caplog.text


def test_cer_by_voice_by_hand():
    from training.recipes.encoder_ctc import Utterance, cer_by_voice

    mel = torch.zeros(80, 10)
    utts = [Utterance(mel, [1, 2, 3, 4], "b"), Utterance(mel, [1, 2], "a"), Utterance(mel, [5] * 6, "b")]
    table = cer_by_voice(utts, [1, 0, 2])
    assert list(table) == ["a", "b"]
    assert table["a"] == {"cer": 0.0, "characters": 2, "utterances": 1}
    assert table["b"] == {"cer": 0.3, "characters": 10, "utterances": 2}  # (1 + 2) / (4 + 6)
