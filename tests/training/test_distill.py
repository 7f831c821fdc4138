"""Speech-to-text behaviour distillation (training/recipes/distill.py)."""

import json
import shutil

import pytest
import torch

from core.checkpoint import from_pretrained, save_pretrained
from core.generate import DrVoiceGenerator
from core.sampling import SamplingConfig
from core.sequence import Sample, SequenceBuilder, UserInput
from training.cli import parse_config
from training.data import ExampleCollator, MelCache
from training.metrics import read_metrics
from training.recipes import distill
from training.recipes.distill import distillation_loss


def test_the_loss_is_the_kl_divergence_from_teacher_to_student():
    torch.manual_seed(0)
    teacher, student = torch.randn(5, 7), torch.randn(5, 7)
    assert distillation_loss(teacher, teacher, 1.0).abs() < 1e-6
    p, q = teacher.softmax(-1), student.softmax(-1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(distillation_loss(teacher, student, 1.0), expected)
    t, s = (teacher / 2).softmax(-1), (student / 2).softmax(-1)
    torch.testing.assert_close(
        distillation_loss(teacher, student, 2.0), 4 * (t * (t.log() - s.log())).sum(-1).mean()
    )


def _manifest_with_a_replyless_recording(assets, tmp_path):
    """The tiny manifest plus one recording with a transcript and no reply (as general speech is)."""
    lines = [json.loads(line) for line in assets.manifest.read_text().splitlines()]
    audio = tmp_path / "words-0.wav"  # another recording (of question 1's words; only its path matters)
    shutil.copy(assets.root / lines[1]["audio"], audio)
    extra = {"id": "words-0", "text": "what is the capital of monday?", "audio": str(audio), "reply_text": ""}
    for line in lines:
        line["audio"] = str(assets.root / line["audio"])
        line["reply_audio"] = str(assets.root / line["reply_audio"])
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in [*lines, extra]))
    return path


def _text_trained(assets, tmp_path):
    """The tiny checkpoint taught to answer the four typed questions (T2T) and nothing by speech: a
    random model's next-token distributions hardly depend on what it reads, text or speech."""
    ckpt = from_pretrained(assets.init)
    model = ckpt.model.train()
    builder = SequenceBuilder(model.config, ckpt.tokenizer)
    items = [json.loads(line) for line in assets.manifest.read_text().splitlines()]
    samples = [Sample("T2T", UserInput(text=x["text"]), x["reply_text"]) for x in items]
    batch = ExampleCollator.for_builder(builder)([builder.example(s) for s in samples])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(200):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    return save_pretrained(tmp_path / "init", model.eval(), ckpt.tokenizer, codec=ckpt.codec)


def _divergence(checkpoint, manifest, out_dir) -> float:
    """Mean KL from T2T to S2T over the manifest's recordings, on the replies the run used."""
    ckpt = from_pretrained(checkpoint)
    builder = SequenceBuilder(ckpt.model.config, ckpt.tokenizer)
    collate = ExampleCollator.for_builder(builder)
    generated = [json.loads(line) for line in (out_dir / "teacher_replies.jsonl").read_text().splitlines()]
    replies = {g["text"]: g["reply_ids"] for g in generated}
    cache, total = MelCache(None, 80), []
    for item in distill.recordings([str(manifest)]):
        ids = replies.get(item.text) or builder.encode_text(item.reply_text)
        t = collate([builder.example(Sample("T2T", UserInput(text=item.text), "", reply_ids=ids))])
        s = collate([builder.example(Sample("S2T", UserInput(mels=cache(item.audio)), "", reply_ids=ids))])
        with torch.no_grad():
            total.append(distillation_loss(ckpt.model.text_logits(t)[0], ckpt.model.text_logits(s)[0], 1.0))
    return float(torch.stack(total).mean())


def test_distillation_teaches_the_speech_path_only(tiny_assets, tmp_path):
    manifest = _manifest_with_a_replyless_recording(tiny_assets, tmp_path)
    init = _text_trained(tiny_assets, tmp_path)
    out_dir = tmp_path / "d"
    cfg = distill.DistillConfig(
        init=str(init),
        train_manifest=[str(manifest), str(tiny_assets.manifest)],  # repeats: each recording once
        output_dir=str(out_dir),
        max_steps=30,
        max_batch_size=4,
        peak_lr=3e-3,
        final_lr=1e-3,
        log_every=5,
    )
    out = distill.run(cfg)
    records = read_metrics(out_dir / "metrics.jsonl")
    assert {"loss", "agreement"} <= records[-1].keys() and (out_dir / "loss.png").is_file()
    before, after = _divergence(init, manifest, out_dir), _divergence(out, manifest, out_dir)
    assert after < 0.5 * before, (before, after)

    # the recording without a reply got the teacher's own T2T reply, generated once
    generated = [json.loads(line) for line in (out_dir / "teacher_replies.jsonl").read_text().splitlines()]
    assert [g["text"] for g in generated] == ["what is the capital of monday?"]
    ckpt = from_pretrained(init)
    with torch.inference_mode():
        builder = SequenceBuilder(ckpt.model.config, ckpt.tokenizer)
        prompt = builder.prompt("T2T", UserInput(text=generated[0]["text"]))
        steps = DrVoiceGenerator(ckpt.model).stream(prompt, "T2T", SamplingConfig(max_new_steps=41))
        ids = [s.text_token for s in steps]
    assert generated[0]["reply_ids"] == [i for i in ids if i != builder.ids["im_end"]]

    before, after = ckpt.model, from_pretrained(out).model
    changed = {n for n, p in after.named_parameters() if not torch.equal(p, before.get_parameter(n))}
    assert any(n.startswith("encoder.adapter.") for n in changed)
    assert all(n.startswith(("encoder.adapter.", "encoder.output_norm.")) for n in changed), changed
    assert from_pretrained(out).extra["recipe"] == "distill"


def test_anchored_recordings_are_taught_by_the_starting_model_hearing_them(tiny_assets, tmp_path):
    """With --anchor a recording that has a reply is taught by the frozen starting model hearing it:
    before the first update the student equals that teacher exactly (without the anchor it is far
    from its T2T teacher)."""
    init = _text_trained(tiny_assets, tmp_path)
    first = {}
    for anchor in (True, False):
        out_dir = tmp_path / str(anchor)
        cfg = distill.DistillConfig(
            init=str(init),
            train_manifest=[str(tiny_assets.manifest)],
            output_dir=str(out_dir),
            anchor=anchor,
            max_steps=1,
            max_batch_size=4,
            log_every=1,
        )
        distill.run(cfg)
        first[anchor] = read_metrics(out_dir / "metrics.jsonl")[0]
    assert first[True]["loss"] == 0.0 and first[True]["agreement"] == 1.0
    assert first[False]["loss"] > 0.1


def test_configuration_from_the_command_line_and_its_errors(tiny_assets, tmp_path):
    two = parse_config(distill.DistillConfig, ["--init", "x", "--train_manifest", "[a.jsonl, b.jsonl]"])
    assert two.train_manifest == ["a.jsonl", "b.jsonl"]
    one = parse_config(distill.DistillConfig, ["--init", "x", "--train_manifest", "runs/a.jsonl"])
    assert one.train_manifest == ["runs/a.jsonl"]
    with pytest.raises(ValueError, match="required"):
        distill.DistillConfig(init=str(tiny_assets.init))
    with pytest.raises(ValueError, match="temperature"):
        distill.DistillConfig(init="x", train_manifest=["m"], temperature=0.0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "a", "text": "hi", "reply_text": "hello"}) + "\n")
    with pytest.raises(ValueError, match="no single-turn item with user audio"):
        distill.run(
            distill.DistillConfig(
                init=str(tiny_assets.init), train_manifest=[str(empty)], output_dir=str(tmp_path / "o")
            )
        )
