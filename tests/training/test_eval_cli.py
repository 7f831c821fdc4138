"""`python -m training.eval` end to end on a tiny checkpoint: the report, per-item results, the
held-out breakdowns, and the decoding settings a checkpoint recommends."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.training.test_eval import needs_flite, write_manifest
from training.eval.__main__ import main


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite); CI installs it")
    from core.checkpoint import save_pretrained
    from core.codec.units import UnitsCodec
    from core.text_tokenizer import train_bpe_tokenizer
    from tests.core.conftest import CORPUS, SPEECH_VOCAB, make_model
    from training.data.tts import speak_assistant

    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=400)
    speech = [speak_assistant(s) for s in ("The capital of France is Paris.", "Three plus four is seven.")]
    codec = UnitsCodec.fit(speech, SPEECH_VOCAB, seed=0, kmeans_iters=5)
    return save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny", make_model(tokenizer), tokenizer, codec)


@needs_flite
def test_cli_end_to_end_on_a_tiny_checkpoint(tiny_checkpoint, tmp_path, capsys):
    from core.audio import save_wav
    from training.data.tts import synthesize

    questions = ["What is three plus four?", "What is the capital of France?", "Hello!"]
    rows = []
    for i, q in enumerate(questions):
        save_wav(tmp_path / f"q{i}.wav", synthesize(q, "flite-kal16"))
        rows.append({"id": f"q{i}", "audio": f"q{i}.wav", "text": q, "answers": ["7"], "category": "c"})
    modes = ["S2M", "S2T", "T2T"]  # speech in + out, speech in, text in

    def run(manifest, out, *extra):
        # sampled at temperature 1 (seeded): greedy replies of a random model are all special tokens
        argv = ["--checkpoint", str(tiny_checkpoint), "--manifest", str(manifest), "--modes", ",".join(modes)]
        argv += ["--max-new-steps", "8", "--temperature", "1", "--seed", "0", "--json", "--out", str(out)]
        main([*argv, *extra, "--quiet"])
        report = json.loads(capsys.readouterr().out)  # stdout holds exactly one JSON object
        results = [json.loads(line) for line in out.read_text().splitlines()]
        return report, {(r["id"], r["mode"]): r for r in results}

    report, results = run(write_manifest(tmp_path / "m1.jsonl", rows), tmp_path / "r1.jsonl")
    assert report["n"] == 3 and set(report["modes"]) == set(modes) and len(results) == 9
    assert all(
        report["sampling"][m]["max_new_steps"] == 8 and report["sampling"][m]["temperature"] == 1
        for m in modes
    )
    for mode in modes:
        entry, rs = report["modes"][mode], [results[(f"q{i}", mode)] for i in range(3)]
        assert entry["n"] == 3 and entry["text_accuracy"] == pytest.approx(
            sum(r["text_correct"] for r in rs) / 3
        )
        if mode == "S2M":
            assert all(r["transcript"] is not None for r in rs)
            refs = sum(r["reference_words"] for r in rs)
            assert entry["asr_wer"] == (
                pytest.approx(sum(r["word_errors"] for r in rs) / refs) if refs else None
            )
            assert entry["real_time_factor"] > 0 and entry["time_to_first_audio_ms"] > 0
        else:
            assert "speech_accuracy" not in entry and all(r["transcript"] is None for r in rs)

    # Now answers chosen to match or not: q0 and q2 accept every reply and transcript they got above
    # (so they are right exactly when that reply / transcript has a word), q1 accepts nothing it said.
    for i in (0, 2):
        said = [results[(f"q{i}", m)][k] for m in modes for k in ("reply", "transcript")]
        rows[i]["answers"] = [s for s in said if s]
    rows[1]["answers"] = ["qqqq"]
    for row, heldout in zip(rows, (["voice"], [], ["voice"]), strict=True):  # as the synth corpus says
        row |= {"heldout": heldout, "voice": "flite-kal16"}
    plot = tmp_path / "heldout.png"
    train = write_manifest(
        tmp_path / "train.jsonl",
        [{"id": f"t{i}", "text": q, "reply_text": "r"} for i, q in enumerate(questions[:2])],
    )
    report2, results2 = run(
        write_manifest(tmp_path / "m2.jsonl", rows),
        tmp_path / "r2.jsonl",
        *("--table", "--plot", str(plot), "--train-manifest", str(train)),
    )
    assert plot.is_file() and "text accuracy (%) by held out of training" in report2["table"]
    assert report2["modes"]["T2T"]["by_heldout"]["voice"]["n"] == 2
    # "Hello!" is the one question with a word the training questions lack
    assert [results2[(f"q{i}", "S2T")]["new_words"] for i in range(3)] == [[], [], ["hello"]]
    assert {g: v["n"] for g, v in report2["modes"]["S2T"]["by_vocabulary"].items()} == {
        "known words": 2,
        "a new word": 1,
    }
    has_word = lambda s: bool(s) and any(ch.isalnum() for ch in s)  # noqa: E731
    meaningful = False
    for mode in modes:
        assert [results2[(f"q{i}", mode)]["reply"] for i in range(3)] == [
            results[(f"q{i}", mode)]["reply"] for i in range(3)
        ]  # same replies as before: seeded sampling
        expected_text = sum(has_word(results[(f"q{i}", mode)]["reply"]) for i in (0, 2)) / 3
        assert report2["modes"][mode]["text_accuracy"] == pytest.approx(expected_text), mode
        meaningful |= expected_text > 0
        if mode == "S2M":
            expected_speech = sum(has_word(results[(f"q{i}", mode)]["transcript"]) for i in (0, 2)) / 3
            assert report2["modes"][mode]["speech_accuracy"] == pytest.approx(expected_speech), mode
    assert meaningful, "the tiny model produced no reply text at all; the check would be vacuous"


def test_cli_takes_the_checkpoints_recommended_settings_unless_told(tiny_checkpoint, tmp_path, capsys):
    """Settings not given on the command line are what the checkpoint's generation_config.json
    recommends for each mode; the report says which each mode used."""
    import shutil

    from core.checkpoint import save_generation_config
    from core.sampling import ModeSampling, SamplingConfig

    ckpt = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    default = SamplingConfig(temperature=0.5, max_new_steps=4)
    save_generation_config(
        ckpt, ModeSampling(default, {"S2T": SamplingConfig(audio_views=2, max_new_steps=4)})
    )
    manifest = write_manifest(
        tmp_path / "m.jsonl", [{"id": "a", "text": "Hi", "answers": ["x"], "category": "c"}]
    )
    argv = ["--checkpoint", str(ckpt), "--manifest", str(manifest), "--modes", "T2T,S2T", "--json", "--quiet"]
    main([*argv, "--temperature", "1"])
    used = json.loads(capsys.readouterr().out)["sampling"]
    assert (used["T2T"]["audio_views"], used["T2T"]["temperature"], used["T2T"]["max_new_steps"]) == (1, 1, 4)
    assert (used["S2T"]["audio_views"], used["S2T"]["temperature"]) == (2, 1)
    with pytest.raises(SystemExit):  # out of range: refused before the model loads
        main([*argv, "--audio-views", "99"])
    assert "audio_views must be in" in capsys.readouterr().err
