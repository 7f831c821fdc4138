"""CTC of the adapter output against the LLM's token embeddings (training/recipes/adapter_ctc.py)."""

import json

import pytest
import torch

from core.checkpoint import from_pretrained
from training.metrics import read_metrics
from training.recipes import adapter_ctc
from training.recipes.adapter_ctc import EmbeddingCTCHead, feasible


def test_feasible_counts_a_blank_between_repeated_tokens():
    assert feasible([1, 2, 3], 3)
    assert not feasible([1, 2, 3], 2)
    assert not feasible([4, 4], 2)  # 4 _ 4 needs three frames
    assert feasible([4, 4], 3)


def test_the_head_scores_a_feature_highest_against_its_own_token_embedding():
    torch.manual_seed(0)
    table = torch.randn(6, 8) * 0.05
    head = EmbeddingCTCHead(table, temperature=20.0)
    features = torch.stack([table[4] * 3.0, table[1], head.blank.detach()])[None]  # (1, 3, 8): scale-free
    log_probs = head(features)
    assert log_probs.shape == (1, 3, 7)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(1, 3))
    assert log_probs[0].argmax(-1).tolist() == [5, 2, 0]  # token v is class v + 1, the blank class 0
    assert head.log_temperature.exp().item() == torch.tensor(20.0).item()
    assert not any(p is head.table for p in head.parameters())  # the LLM's table is not trained


def _cfg(assets, out, **kw):
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
    return adapter_ctc.AdapterCTCConfig(**base)


def test_adapter_ctc_reads_its_training_utterances_and_leaves_the_llm_alone(tiny_assets, tmp_path):
    out = adapter_ctc.run(_cfg(tiny_assets, tmp_path / "a", max_steps=40, eval_every=4, log_every=4))
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    losses = [r["loss"] for r in records]
    ters = [r["token_error_rate"] for r in records if "token_error_rate" in r]
    assert losses[-1] < 0.5 * losses[0], losses
    assert ters[0] > 0.3 and ters[-1] < 0.1, ters  # from guessing to reading its four utterances
    by_voice = json.loads((tmp_path / "a" / "ter_by_voice.json").read_text())
    assert sum(r["utterances"] for r in by_voice.values()) == 4
    assert (tmp_path / "a" / "loss.png").is_file()

    before, after = from_pretrained(tiny_assets.init).model, from_pretrained(out).model
    changed = {n for n, p in after.named_parameters() if not torch.equal(p, before.get_parameter(n))}
    assert any(n.startswith("encoder.adapter.") for n in changed)
    assert changed and all(n.startswith("encoder.") for n in changed)  # LLM, SRH, grouping untouched
    assert from_pretrained(out).extra["recipe"] == "adapter_ctc"


def test_with_whisper_frozen_only_the_adapter_changes(tiny_assets, tmp_path):
    out = adapter_ctc.run(
        _cfg(
            tiny_assets,
            tmp_path / "a",
            validation_manifest=None,
            max_steps=5,
            train_whisper=False,
            augment=True,
        )
    )
    before, after = from_pretrained(tiny_assets.init).model, from_pretrained(out).model
    changed = {n for n, p in after.named_parameters() if not torch.equal(p, before.get_parameter(n))}
    assert changed and all(n.startswith(("encoder.adapter.", "encoder.output_norm.")) for n in changed)


def test_cli_help_names_the_stage_and_its_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        adapter_ctc.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "token embeddings" in text and "--train_whisper" in text and "--max_steps" in text


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_both_ctc_stages_run_on_the_device_asked_for(tiny_assets, tmp_path, device):
    """encoder_ctc then adapter_ctc with --device (the demo passes its own on): the checkpoints load
    on a CPU afterwards, and the stages really trained (the adapter moved)."""
    from training.recipes import encoder_ctc

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    heard = encoder_ctc.run(
        encoder_ctc.EncoderCTCConfig(
            init=str(tiny_assets.init),
            train_manifest=str(tiny_assets.manifest),
            validation_manifest=str(tiny_assets.manifest),
            output_dir=str(tmp_path / "e"),
            batch_size=4,
            max_steps=2,
            augment=True,
            device=device,
        )
    )
    out = adapter_ctc.run(_cfg(tiny_assets, tmp_path / "a", init=str(heard), max_steps=2, device=device))
    before, after = from_pretrained(heard).model, from_pretrained(out, device="cpu").model
    assert next(after.parameters()).device.type == "cpu"
    moved = [n for n, p in after.named_parameters() if not torch.equal(p, before.get_parameter(n))]
    assert any(n.startswith("encoder.adapter.") for n in moved), moved
