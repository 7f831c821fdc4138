import json

import pytest
import torch

from core.checkpoint import from_pretrained
from training.metrics import read_metrics
from training.recipes import sft


def _cfg(assets, out, **kw):
    base = dict(
        init=str(assets.init),
        train_manifest=str(assets.manifest),
        output_dir=str(out),
        max_steps=30,
        max_tokens=4000,
        peak_lr=3e-3,
        final_lr=3e-4,
        log_every=1,
        save_every=10,
        precision="fp32",
        device="cpu",
    )
    base.update(kw)
    return sft.SFTConfig(**base)


def test_sft_trains_all_modes_and_loss_goes_down(tiny_assets, tmp_path):
    out = tmp_path / "run"
    final = sft.run(_cfg(tiny_assets, out))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 31))
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first
    assert (out / "loss.png").stat().st_size > 1000
    init = from_pretrained(tiny_assets.init).model.state_dict()
    trained = from_pretrained(final).model.state_dict()
    for prefix in ("llm.", "srh.", "encoder.", "speech_grouping.", "ungrouping."):
        assert any(not torch.equal(init[k], trained[k]) for k in init if k.startswith(prefix)), prefix
    assert (final / "codec").is_dir()


def test_frozen_parameters_do_not_change(tiny_assets, tmp_path):
    final = sft.run(_cfg(tiny_assets, tmp_path / "run", max_steps=5, freeze=["llm", "encoder"]))
    init = from_pretrained(tiny_assets.init).model.state_dict()
    trained = from_pretrained(final).model.state_dict()
    for k in init:
        same = torch.equal(init[k], trained[k])
        assert same if k.startswith(("llm.", "encoder.")) else True, k
    assert any(not torch.equal(init[k], trained[k]) for k in init if k.startswith("srh."))


def test_resume_after_interruption_gives_the_same_curve(tiny_assets, tmp_path):
    """A run stopped after its state at step 10 and resumed gives the uninterrupted loss curve."""
    full = tmp_path / "full"
    sft.run(_cfg(tiny_assets, full, max_steps=20))
    part = tmp_path / "part"
    sft.run(_cfg(tiny_assets, part, max_steps=20, save_every=10))
    # simulate a kill right after step 13: drop the final state, the checkpoint and later metric lines
    import shutil

    for p in (part / "state").glob("step-*"):
        if p.name != "step-0000010":
            shutil.rmtree(p)
    lines = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    (part / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines if r["step"] <= 13))
    sft.run(_cfg(tiny_assets, part, max_steps=20, save_every=10))
    a = [(r["step"], r["loss"]) for r in read_metrics(full / "metrics.jsonl")]
    b = [(r["step"], r["loss"]) for r in read_metrics(part / "metrics.jsonl")]
    assert [s for s, _ in b] == list(range(1, 21))
    for (sa, la), (sb, lb) in zip(a, b, strict=True):
        assert sa == sb and abs(la - lb) < 1e-6, (sa, la, lb)


def test_resuming_with_other_frozen_parameters_says_what_changed(tiny_assets, tmp_path):
    out = tmp_path / "run"
    sft.run(_cfg(tiny_assets, out, max_steps=10, modes=["S2T"]))  # leaves a state at step 10
    with pytest.raises(RuntimeError, match="different set of trainable parameters"):
        sft.run(_cfg(tiny_assets, out, max_steps=20, modes=["S2T"], freeze=["encoder.whisper"]))


def test_augment_perturbs_user_speech_on_every_access_and_keeps_the_plan(tiny_assets, tmp_path):
    from training.recipes.common import build_dataset

    ckpt = from_pretrained(tiny_assets.init)
    args = (ckpt, str(tiny_assets.manifest), None, ["S2T"], None, 0)
    plain, augmented = build_dataset(*args), build_dataset(*args, augment=True)
    assert augmented.lengths == plain.lengths  # planned from the unperturbed shapes
    first, second = augmented[0].mels[0], augmented[0].mels[0]
    assert not (first.shape == second.shape and torch.equal(first, second))
    assert torch.equal(plain[0].mels[0], plain[0].mels[0])  # without augment the features are stable
    final = sft.run(_cfg(tiny_assets, tmp_path / "run", max_steps=3, modes=["S2T"], augment=True))
    assert from_pretrained(final).extra["augment"] is True
