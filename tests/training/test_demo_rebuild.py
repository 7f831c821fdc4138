"""The one-command rebuild of the demo checkpoint's history (training/recipes/demo_rebuild.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from training.cli import parse_config
from training.recipes import demo_rebuild
from training.recipes.demo import DemoConfig

needs_voices = pytest.mark.skipif(
    any(shutil.which(p) is None for p in ("flite", "espeak-ng", "text2wave")),
    reason="flite, espeak-ng and festival are not installed (apt-get install flite espeak-ng festival "
    "festvox-kdlpc16k festvox-us-slt-hts); CI installs them",
)
TINY = (
    "--text_vocab_size 400 --num_units 16 --codec_decoder_steps 2 --llm_hidden 32 --llm_heads 2 "
    "--llm_layers 1 --srh_hidden 32 --srh_layers 1 --encoder_state 32 --encoder_heads 2 --encoder_layers 1 "
    "--max_tokens 2000"
)


def _value(step, flag):
    return step.argv[step.argv.index(flag) + 1]


def test_plan_chains_each_checkpoint_into_the_next_with_the_model_cards_settings(tmp_path, capsys):
    root = tmp_path / "runs"
    argv = ["--work_root", str(root), "--out", str(tmp_path / "final"), "--dry_run"]
    steps = demo_rebuild.main(argv)
    assert tuple(s.name for s in steps) == demo_rebuild.STEPS
    by = {s.name: s for s in steps}
    assert _value(by["more"], "--continue_from") == _value(by["base"], "--out")
    assert _value(by["ear"], "--continue_from") == _value(by["more"], "--out")
    assert by["decoder"].copy_from == demo_rebuild.result(by["ear"])
    assert _value(by["festival"], "--continue_from") == str(demo_rebuild.result(by["decoder"]))
    assert _value(by["reader"], "--continue_from") == _value(by["festival"], "--out")
    assert _value(by["reader"], "--out") == str(tmp_path / "final")
    configs = {s.name: parse_config(DemoConfig, list(s.argv)) for s in steps if s.module.endswith(".demo")}
    base, ear, festival, reader = configs["base"], configs["ear"], configs["festival"], configs["reader"]
    counts = (base.srh_steps, base.ctc_steps, base.stage1_steps, base.stage2_steps, base.gspo_steps)
    assert counts == (400, 3000, 1000, 250, 20)
    assert base.ctc_augment and base.speech_augment and not base.extra_voices and not base.general_speech
    assert (
        ear.general_speech and not ear.extra_voices and festival.extra_voices and not festival.general_speech
    )
    counts = (festival.continue_ctc_steps, festival.continue_adapter_ctc_steps, festival.continue_steps)
    assert counts == (3000, 1000, 600)
    assert "--extra-voices festival" in " ".join(by["corpus"].argv)
    # the speech taught to read: the swapped items the swaps step writes, two steps behind the text
    assert (reader.speech_delay, reader.text_input_scale, reader.continue_steps) == (2, 30.0, 600)
    assert reader.extra_voices and reader.counterfactual_items == int(_value(by["swaps"], "--items")) == 6000
    assert _value(by["swaps"], "--swap-probability") == "0.5"
    printed = capsys.readouterr().out
    assert printed.count("python -m ") == 10 and "(done)" not in printed

    (root / "done").mkdir(parents=True)
    (root / "done" / "corpus.json").write_text(json.dumps({"command": by["corpus"].command()[1:]}))
    (root / "done" / "general.json").write_text(json.dumps({"command": by["general"].command()[1:]}))
    steps = demo_rebuild.main([*argv, "--until", "base", "--scale", "0.01"])
    assert [s.name for s in steps] == ["corpus", "general", "assistant", "base"]
    assert parse_config(DemoConfig, list(steps[-1].argv)).ctc_steps == 30
    printed = capsys.readouterr().out
    assert "# corpus (done)" in printed  # the same command at any scale
    assert "# general (done with another command)" in printed  # 6000 sentences then, 60 now
    with pytest.raises(SystemExit, match="done with another command"):
        demo_rebuild.run_step(steps[1], root)


def test_a_failing_step_stops_the_rebuild_and_leaves_no_marker(tmp_path):
    step = demo_rebuild.Step("base", "training.recipes.demo", ("--stop_after", "nowhere"))
    with pytest.raises(SystemExit, match="step 'base' failed"):
        demo_rebuild.run_step(step, tmp_path)
    assert not (tmp_path / "done").exists()
    with pytest.raises(SystemExit):
        demo_rebuild.main(["--dry_run", "--scale", "0"])


@needs_voices
def test_the_whole_history_runs_end_to_end_on_a_tiny_corpus_and_resumes(tmp_path):
    from safetensors.torch import load_file

    from core.codec.units import UnitsCodec

    root, out = tmp_path / "runs", tmp_path / "demo"
    argv = ["--corpus", str(tmp_path / "corpus"), "--work_root", str(root), "--out", str(out)]
    argv += ["--threads", "1", "--device", "cpu", "--scale", "0.001", "--demo_args", TINY]
    argv += ["--corpus_args", "--limit 4 --multiturn 2"]
    demo_rebuild.main(argv)

    markers = {p.stem: json.loads(p.read_text()) for p in (root / "done").glob("*.json")}
    assert set(markers) == set(demo_rebuild.STEPS)
    assert (tmp_path / "corpus" / "train_extra.jsonl").is_file()  # festival's copy of the questions
    assert (tmp_path / "corpus" / "general.jsonl").is_file()
    # the decoder refitted after the ear step reaches the final checkpoint, its units unchanged
    base, final = UnitsCodec.load(root / "base" / "demo" / "codec"), UnitsCodec.load(out / "codec")
    assert base.config.decoder_dilations == () and final.config.decoder_dilations == (1, 2, 4, 8) * 2
    assert torch.equal(base.centroids, final.centroids)
    before, after = (
        load_file(root / "base" / "demo" / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("llm."))
    festival = markers["festival"]["command"]
    assert "--extra_voices" in festival and str(root / "decoder" / "demo") in festival
    assert (tmp_path / "corpus" / "counterfactual.jsonl").is_file()  # the swaps step's items
    model = json.loads((out / "config.json").read_text())["model"]
    assert (model["speech_delay"], model["text_input_scale"]) == (2, 30.0)  # the reader's layout

    saved = (out / "model.safetensors").read_bytes()
    demo_rebuild.main(argv)  # every step is marked: nothing runs again
    assert (out / "model.safetensors").read_bytes() == saved
    assert {p.stem: json.loads(p.read_text()) for p in (root / "done").glob("*.json")} == markers
