"""Teacher-forced losses (training/eval/teacher_forced.py) on a tiny checkpoint and manifest."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from core.checkpoint import from_pretrained
from core.sequence import SequenceBuilder, collate
from training.data import read_manifest
from training.data.com_mixing import make_sample
from training.eval.teacher_forced import main, mel_features, teacher_forced_losses


def test_losses_per_token_match_one_batched_forward(tiny_assets):
    """The per-item sums give the mean loss per token that one forward of all items gives; T2T has
    no speech, and an item whose text is an input only adds speech tokens alone."""
    ckpt = from_pretrained(tiny_assets.init)
    model, tokenizer = ckpt.model.float().eval(), ckpt.tokenizer
    items = read_manifest(tiny_assets.manifest)
    features = mel_features(model.config.encoder["n_mels"])
    report = teacher_forced_losses(model, tokenizer, items, ["T2M", "T2T", "S2M"], features)
    builder = SequenceBuilder(model.config, tokenizer)
    for mode in ("T2M", "S2M"):
        batch = collate(
            [builder.example(make_sample(i, mode, features)) for i in items],
            tokenizer.pad_token_id,
            model.config.speech_pad,
        )
        with torch.no_grad():
            out = model(batch)
        r = report[mode]
        assert r["samples"] == len(items) and (r["text_tokens"], r["speech_tokens"]) == (
            out.text_tokens,
            out.speech_tokens,
        )
        assert r["text_loss"] == pytest.approx(float(out.text_loss), rel=1e-4)
        assert r["speech_loss"] == pytest.approx(float(out.speech_loss), rel=1e-4)
    t2t = report["T2T"]
    assert t2t["speech_loss"] is None and t2t["speech_tokens"] == 0
    reply_tokens = sum(len(tokenizer.encode(i.reply_text, add_special_tokens=False)) + 1 for i in items)
    assert t2t["text_tokens"] == reply_tokens  # every reply token and its <|im_end|>
    assert set(t2t["by_category"]) == {"test"} and t2t["by_category"]["test"]["samples"] == len(items)

    speech_only = [replace(i, extra={**i.extra, "text_target": False}) for i in items]
    alone = teacher_forced_losses(model, tokenizer, speech_only, ["T2M", "T2T"], features)
    assert alone["T2M"]["text_tokens"] == 0 and alone["T2M"]["text_loss"] is None
    assert alone["T2M"]["speech_loss"] == pytest.approx(report["T2M"]["speech_loss"], rel=1e-4)
    assert alone["T2T"]["samples"] == 0 and sum(alone["T2T"]["skipped"].values()) == len(items)


def test_cli_prints_json_and_refuses_bad_modes(tiny_assets, capsys):
    main(
        [
            "--checkpoint",
            str(tiny_assets.init),
            "--manifest",
            str(tiny_assets.manifest),
            "--modes",
            "t2m",
            "--json",
            "--threads",
            "1",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert list(report["modes"]) == ["T2M"] and report["modes"]["T2M"]["speech_loss"] > 0
    with pytest.raises(SystemExit) as done:
        main(
            ["--checkpoint", str(tiny_assets.init), "--manifest", str(tiny_assets.manifest), "--modes", "X2Y"]
        )
    assert done.value.code == 2 and "expected one of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
