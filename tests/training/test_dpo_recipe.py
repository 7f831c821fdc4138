import json
import shutil

import pytest
import torch

from core.checkpoint import from_pretrained
from training.metrics import read_metrics
from training.recipes import dpo

WRONG = "i am not sure, maybe monday."


def _side(mode, text, tokens):
    return {
        "turn_id": None,
        "mode": mode,
        "system_prompt": None,
        "text": text,
        "transcript": None,
        "draft_text": None,
        "speech_tokens": tokens,
        "audio": None,
    }


def write_pairs(assets, path, missing_audio=False):
    """The app's export format: chosen = the item's real reply, rejected = a wrong reply.

    Speech-output pairs (S2M): the rejected speech is the real reply codes reversed (other tokens);
    two text pairs (T2T) use typed input. No reply is both chosen and rejected (consistent votes).
    """
    items = [json.loads(line) for line in assets.manifest.read_text().splitlines()]
    lines = []
    for i, item in enumerate(items):
        audio = str(assets.root / item["audio"]) if not missing_audio else str(assets.root / "gone.wav")
        lines.append(
            {
                "id": f"pair-{i}",
                "prompt": {"user_text": item["text"], "user_audio": audio, "history": []},
                "chosen": _side("S2M", item["reply_text"], item["reply_tokens"]),
                "rejected": _side("S2M", WRONG, item["reply_tokens"][::-1]),
                "provenance": {"source": "test"},
            }
        )
    for i, item in enumerate(items[:2]):
        lines.append(
            {
                "id": f"text-{i}",
                "prompt": {"user_text": item["text"], "user_audio": None, "history": []},
                "chosen": _side("T2T", item["reply_text"], None),
                "rejected": _side("T2T", WRONG, None),
            }
        )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture
def pairs_file(tiny_assets, tmp_path):
    return write_pairs(tiny_assets, tmp_path / "pairs.jsonl")


def _cfg(assets, pairs, out, **kw):
    base = dict(
        init=str(assets.init),
        pairs=str(pairs),
        output_dir=str(out),
        beta=0.1,
        max_steps=16,
        max_tokens=100_000,
        batch_pairs=3,
        peak_lr=3e-4,
        final_lr=3e-5,
        log_every=1,
        save_every=8,
        precision="fp32",
        device="cpu",
    )
    base.update(kw)
    return dpo.DPOConfig(**base)


def test_dpo_learns_the_preferences(tiny_assets, pairs_file, tmp_path):
    out = tmp_path / "run"
    final = dpo.run(_cfg(tiny_assets, pairs_file, out, freeze=["encoder"]))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 17))
    # step 1: policy == reference, every reward is 0 and the loss is log 2
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3) and rows[0]["reward_accuracy"] == 0.0
    first, last = sum(r["loss"] for r in rows[:4]) / 4, sum(r["loss"] for r in rows[-4:]) / 4
    assert last < 0.7 * first
    assert sum(r["reward_accuracy"] for r in rows[-4:]) / 4 > 0.5
    assert rows[-1]["reward_margin"] > 0 and rows[-1]["chosen_reward"] > rows[-1]["rejected_reward"]
    assert (out / "loss.png").stat().st_size > 1000 and (out / "rewards.png").stat().st_size > 1000
    init = from_pretrained(tiny_assets.init).model.state_dict()
    trained = from_pretrained(final).model.state_dict()
    for prefix in ("llm.", "srh.", "speech_grouping.", "ungrouping."):
        assert any(not torch.equal(init[k], trained[k]) for k in init if k.startswith(prefix)), prefix
    assert all(torch.equal(init[k], trained[k]) for k in init if k.startswith("encoder."))
    assert (final / "codec").is_dir()


def test_resume_after_interruption_gives_the_same_curve(tiny_assets, pairs_file, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    dpo.run(_cfg(tiny_assets, pairs_file, full, max_steps=10, save_every=5))
    dpo.run(_cfg(tiny_assets, pairs_file, part, max_steps=10, save_every=5))
    for p in (part / "state").glob("step-*"):  # simulate a kill after step 7
        if p.name != "step-0000005":
            shutil.rmtree(p)
    lines = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    (part / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines if r["step"] <= 7))
    dpo.run(_cfg(tiny_assets, pairs_file, part, max_steps=10, save_every=5))
    a = [(r["step"], r["loss"], r["reward_margin"]) for r in read_metrics(full / "metrics.jsonl")]
    b = [(r["step"], r["loss"], r["reward_margin"]) for r in read_metrics(part / "metrics.jsonl")]
    assert [s for s, _, _ in b] == list(range(1, 11))
    for (sa, la, ma), (sb, lb, mb) in zip(a, b, strict=True):
        assert sa == sb and abs(la - lb) < 1e-6 and abs(ma - mb) < 1e-6, (sa, la, lb)


def test_missing_user_audio_names_the_pair_and_file(tiny_assets, tmp_path):
    pairs = write_pairs(tiny_assets, tmp_path / "pairs.jsonl", missing_audio=True)
    with pytest.raises(FileNotFoundError, match=r"pair 'pair-0', chosen side \(S2M\).*gone\.wav"):
        dpo.run(_cfg(tiny_assets, pairs, tmp_path / "run"))


def test_config_errors_name_the_flag(tiny_assets, pairs_file):
    with pytest.raises(ValueError, match="--beta"):
        _cfg(tiny_assets, pairs_file, "x", beta=0.0)
    with pytest.raises(ValueError, match="--pairs"):
        _cfg(tiny_assets, "", "x")


def test_speech_tokens_of_another_codec_are_a_clear_error(tiny_assets, pairs_file, tmp_path):
    lines = [json.loads(x) for x in pairs_file.read_text().splitlines()]
    lines[1]["rejected"]["speech_tokens"] = [3, 6560]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(
        ValueError, match=r"pair 'pair-1', rejected side: speech_tokens reach 6560 .* 32 codes"
    ):
        dpo.run(_cfg(tiny_assets, bad, tmp_path / "run"))


def test_tiny_yaml_config_parses():
    from pathlib import Path

    from training.cli import parse_config

    path = Path(__file__).parents[2] / "training/configs/dpo_tiny.yaml"
    cfg = parse_config(dpo.DPOConfig, ["--config", str(path), "--beta", "0.2"])
    assert cfg.beta == 0.2 and cfg.audio_root == "data" and cfg.reference is None
