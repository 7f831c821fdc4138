"""The demo pipeline's data stage on a few rendered items (training/recipes/demo.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from training.recipes import demo, demo_continue

needs_tts = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("espeak-ng") is None,
    reason="flite and espeak-ng are not installed (apt-get install flite espeak-ng); CI installs them",
)


def _cfg(corpus, work, **kw):
    tiny = dict(text_vocab_size=400, num_units=16, codec_decoder_steps=2, llm_hidden=32, llm_heads=2)
    kw = {"stop_after": "prepare", **kw}
    return demo.DemoConfig(corpus=str(corpus), work_dir=str(work), threads=1, **tiny, **kw)


@needs_tts
def test_extra_voices_join_the_speech_training_manifest(tmp_path):
    from training.data.synth import main as synth

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    with pytest.raises(FileNotFoundError, match="--extra-voice-copies"):
        demo.run(_cfg(corpus, tmp_path / "work", extra_voices=True))

    synth(
        [
            "--out",
            str(corpus),
            "--limit",
            "4",
            "--multiturn",
            "2",
            "--workers",
            "2",
            "--extra-voice-copies",
            "1",
        ]
    )
    work = tmp_path / "work"
    demo.run(_cfg(corpus, work, extra_voices=True))
    rows = lambda name: [json.loads(x) for x in (work / name).read_text().splitlines()]  # noqa: E731
    train, extra, speech = (
        rows("train.tokens.jsonl"),
        rows("train_extra.tokens.jsonl"),
        rows(demo.SPEECH_TRAIN),
    )
    assert [r["id"] for r in speech] == [r["id"] for r in train] + [r["id"] for r in extra]
    assert len(extra) == 4 and all(r["id"].endswith("-x1") for r in extra)
    for copy, source in zip(extra, train, strict=True):  # same reply tokens, another recording
        assert copy["reply_tokens"] == source["reply_tokens"] and copy["audio"] != source["audio"]
    assert len(list((work / "mels").rglob("*.safetensors"))) >= len(train) + len(extra)  # mels cached


@needs_tts
def test_continue_from_trains_an_exported_checkpoint_further_and_keeps_its_card(tmp_path, tiny_assets):
    from safetensors.torch import load_file

    from training.data.synth import main as synth

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    out = tmp_path / "demo"
    shutil.copytree(tiny_assets.init, out)
    (out / "README.md").write_text("# the model card\n")
    (out / "EXPERIMENTS.md").write_text("# its experiment log\n")
    (out / "heldout.png").write_bytes(b"\x89PNG figure")
    before = load_file(out / "model.safetensors")
    work = tmp_path / "work"
    cfg = _cfg(corpus, work, continue_from=str(out), out=str(out), stop_after="export")
    cfg.continue_steps, cfg.gspo_steps, cfg.max_tokens, cfg.continue_lr = 2, 1, 2000, 2e-4

    assert demo.run(cfg) == out
    assert not (work / "tiny_llm").exists() and not (work / "built").exists()  # no new build
    for name in ("units_codec.json", "units_codec.safetensors"):  # the checkpoint's own units
        assert (work / "codec" / name).read_bytes() == (tiny_assets.init / "codec" / name).read_bytes()
    rows = [json.loads(x) for x in (work / "train.tokens.jsonl").read_text().splitlines()]
    assert all(0 <= t < 32 for r in rows for t in r["reply_tokens"])  # within the codec's 32 units
    assert (work / "continued" / "final" / "config.json").is_file()
    continued = yaml.safe_load((work / "continued" / "config.yaml").read_text())
    assert (continued["peak_lr"], continued["final_lr"]) == (2e-4, 2e-5)  # --continue_lr
    assert (work / "gspo" / "final" / "config.json").is_file()
    assert (out / "README.md").read_text() == "# the model card\n"
    assert (out / "EXPERIMENTS.md").read_text() == "# its experiment log\n"
    assert (out / "heldout.png").read_bytes() == b"\x89PNG figure"
    after = load_file(out / "model.safetensors")
    assert {v.dtype for v in after.values()} == {torch.bfloat16}
    changed = [k for k in before if not torch.equal(before[k].to(torch.bfloat16), after[k])]
    assert any(k.startswith("llm.") for k in changed) and any(k.startswith("srh.") for k in changed)
    assert any(k.startswith("encoder.whisper.") for k in before)  # so the next check has something to check
    assert not any(k.startswith("encoder.whisper.") for k in changed)  # frozen, as in stage 2


def test_demo_speech_delay_must_not_be_negative_nor_the_text_input_scale_zero(tmp_path):
    with pytest.raises(ValueError, match="--speech_delay"):
        _cfg(tmp_path, tmp_path, speech_delay=-1)
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="--text_input_scale"):
            _cfg(tmp_path, tmp_path, text_input_scale=bad)


def test_demo_continue_lr_must_be_positive(tmp_path):
    for bad in (0.0, -1e-4, float("nan")):
        with pytest.raises(ValueError, match="--continue_lr"):
            _cfg(tmp_path, tmp_path, continue_lr=bad)


def test_speech_splice_needs_the_general_speech(tmp_path):
    with pytest.raises(ValueError, match="--general_speech"):
        _cfg(tmp_path, tmp_path, speech_splice=0.5)
    with pytest.raises(ValueError, match="speech_splice"):
        _cfg(tmp_path, tmp_path, speech_splice=2.0, general_speech=True)


@needs_tts
def test_continue_ctc_steps_retrain_the_ear_on_general_speech(tmp_path, tiny_assets):
    from safetensors.torch import load_file

    from training.data.general_speech import main as general_speech
    from training.data.numeracy import main as numeracy
    from training.data.synth import main as synth

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    work = tmp_path / "work"
    kw = dict(continue_from=str(tiny_assets.init), out=str(tmp_path / "out"), general_speech=True)
    with pytest.raises(FileNotFoundError, match="training.data.general_speech"):
        demo.run(_cfg(corpus, work, **kw))
    general_speech(["--corpus", str(corpus), "--sentences", "6", "--vocabulary", "100"])
    numeracy(["--corpus", str(corpus), "--items", "6"])
    kw |= dict(numeracy_items=6, weight_decay=0.25, speech_delay=2, srh_text_condition=True)
    kw |= dict(srh_text_embedding=True, text_input_scale=30.0)
    cfg = _cfg(corpus, work, stop_after="cocktail", speech_splice=1.0, speech_input_dropout=0.3, **kw)
    cfg.continue_ctc_steps, cfg.continue_adapter_ctc_steps, cfg.continue_steps, cfg.max_tokens = 2, 2, 1, 2000
    cfg.continue_t2t_steps, cfg.continue_t2t_weight_decay = 2, 0.4

    assert demo.run(cfg) == work / "continued" / "final"
    ids = lambda name: [json.loads(x)["id"] for x in (work / name).read_text().splitlines()]  # noqa: E731
    assert ids(demo.EAR_TRAIN) == ids("train.tokens.jsonl") + [f"general-{i:05d}" for i in range(6)]
    ctc_config = (work / "encoder_ctc" / "config.yaml").read_text()
    assert demo.EAR_TRAIN in ctc_config and f"peak_lr: {demo.CONTINUE_EAR_LR[0]}" in ctc_config
    adapter_config = (work / "adapter_ctc" / "config.yaml").read_text()
    assert "encoder_ctc/final" in adapter_config  # the adapter stage starts from the retrained encoder
    assert "train.tokens.jsonl" in adapter_config and demo.EAR_TRAIN not in adapter_config
    stage2_config = (work / "continued" / "config.yaml").read_text()  # stage 2 hears spliced questions
    assert "general.tokens.jsonl" in stage2_config and "splice_probability: 1.0" in stage2_config
    assert "speech_input_dropout: 0.3" in stage2_config and "weight_decay: 0.25" in stage2_config
    assert "train.tokens.numeracy6.jsonl" in stage2_config  # stage 2 also reads the numeracy items
    text_config = (work / "continued_t2t" / "config.yaml").read_text()  # the LLM learns numbers first
    assert "adapter_ctc/final" in text_config and "train.tokens.numeracy6.jsonl" in text_config
    assert "- T2T" in text_config and "S2T" not in text_config and "weight_decay: 0.4" in text_config
    assert f"peak_lr: {demo_continue.CONTINUE_T2T_LR[0]}" in text_config and "max_steps: 2" in text_config
    assert "continued_t2t/final" in stage2_config  # stage 2 starts from it
    saved = json.loads((work / "continued" / "final" / "config.json").read_text())["model"]
    assert saved["speech_input_dropout"] == 0.0  # not inherited by the recipes that start from it
    layout = (saved["speech_delay"], saved["srh_text_condition"], saved["srh_text_embedding"])
    assert layout == (2, True, True) and saved["text_input_scale"] == 30.0  # the new layout, trained on
    assert "relayout" in ctc_config  # the ear stage starts from the relaid copy: same weights, new config
    before = load_file(tiny_assets.init / "model.safetensors")
    relaid = load_file(work / "relayout" / "model.safetensors")
    assert set(relaid) - set(before) == {"srh_text.weight"} and set(before) <= set(relaid)
    assert torch.count_nonzero(relaid.pop("srh_text.weight")) == 0  # added silent
    assert all(torch.equal(before[k], v) for k, v in relaid.items())
    init_model = json.loads((tiny_assets.init / "config.json").read_text())["model"]
    assert (init_model["speech_delay"], init_model["srh_text_condition"]) == (0, False)  # source untouched
    assert init_model.get("text_input_scale", 1.0) == 1.0
    ear = load_file(work / "adapter_ctc" / "final" / "model.safetensors")
    after = load_file(work / "continued" / "final" / "model.safetensors")
    assert torch.count_nonzero(after["srh_text.weight"])  # the continued steps train it
    whisper = [k for k in before if k.startswith("encoder.whisper.")]
    assert whisper and any(not torch.equal(before[k].float(), ear[k].float()) for k in whisper)
    assert all(torch.equal(ear[k], after[k]) for k in whisper)  # stage 2 keeps the new ear frozen
    text = load_file(work / "continued_t2t" / "final" / "model.safetensors")
    llm = [k for k in ear if k.startswith("llm.")]
    assert any(not torch.equal(ear[k], text[k]) for k in llm)
    assert all(
        torch.equal(ear[k], text[k]) for k in ear if not k.startswith("llm.")
    )  # T2T moves the LLM only


@needs_tts
def test_question_words_reach_both_ctc_stages_and_not_the_llm(tmp_path, tiny_assets):
    from training.data.general_speech import main as general_speech
    from training.data.synth import main as synth

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    work = tmp_path / "work"
    kw = dict(continue_from=str(tiny_assets.init), out=str(tmp_path / "out"), question_words=True)
    with pytest.raises(FileNotFoundError, match="--words questions"):
        demo.run(_cfg(corpus, work, **kw))
    general_speech(["--corpus", str(corpus), "--sentences", "6", "--vocabulary", "100"])
    general_speech(["--corpus", str(corpus), "--words", "questions", "--sentences", "5"])
    cfg = _cfg(corpus, work, stop_after="cocktail", general_speech=True, **kw)
    cfg.continue_ctc_steps, cfg.continue_adapter_ctc_steps, cfg.continue_steps, cfg.max_tokens = 1, 1, 1, 2000

    assert demo.run(cfg) == work / "continued" / "final"
    ids = lambda name: [json.loads(x)["id"] for x in (work / name).read_text().splitlines()]  # noqa: E731
    words = [f"question_words-{i:05d}" for i in range(5)]
    general = [f"general-{i:05d}" for i in range(6)]
    assert ids(demo.QUESTION_WORDS_TRAIN) == ids("train.tokens.jsonl") + words
    assert ids(demo.EAR_TRAIN) == ids("train.tokens.jsonl") + general + words
    # the encoder hears both kinds of sentences; the adapter (corpus BPE) only the question words
    assert demo.EAR_TRAIN in (work / "encoder_ctc" / "config.yaml").read_text()
    assert demo.QUESTION_WORDS_TRAIN in (work / "adapter_ctc" / "config.yaml").read_text()
    stage2_config = (work / "continued" / "config.yaml").read_text()
    # no reply: the LLM's SFT never reads them
    assert f"train_manifest: {work / 'train.tokens.jsonl'}\n" in stage2_config
    assert "question_words.tokens" not in stage2_config and demo.QUESTION_WORDS_TRAIN not in stage2_config


@needs_tts
def test_codec_assistant_speech_refits_the_decoder_and_keeps_the_units(tmp_path):
    from core.codec.units import UnitsCodec
    from training.data.assistant_speech import main as assistant_speech
    from training.data.synth import main as synth

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    with pytest.raises(FileNotFoundError, match="training.data.assistant_speech"):
        demo.run(_cfg(corpus, tmp_path / "missing", codec_assistant_speech=True))
    assistant_speech(["--corpus", str(corpus), "--sentences", "4", "--vocabulary", "100"])
    plain, refit = tmp_path / "plain", tmp_path / "refit"
    demo.run(_cfg(corpus, plain))
    demo.run(_cfg(corpus, refit, codec_assistant_speech=True, codec_refit_steps=3))
    before, after = UnitsCodec.load(plain / "codec"), UnitsCodec.load(refit / "codec")
    assert torch.equal(before.centroids, after.centroids)  # the same units ...
    assert (plain / "train.tokens.jsonl").read_text() == (refit / "train.tokens.jsonl").read_text()
    assert before.config.decoder_dilations == () and after.config.decoder_dilations == (1, 2, 4, 8) * 2
    assert json.loads((refit / "codec" / "refit.json").read_text()) == {"recordings": 8, "steps": 3}
    saved = (refit / "codec" / "units_codec.safetensors").read_bytes()
    demo.run(_cfg(corpus, refit, codec_assistant_speech=True, codec_refit_steps=3))
    assert (refit / "codec" / "units_codec.safetensors").read_bytes() == saved  # refitted once


def test_numeracy_items_join_a_manifest_as_text_only_items(tmp_path):
    from training.data.manifest import read_manifest
    from training.data.numeracy import main as numeracy
    from training.recipes.demo_prepare import with_numeracy

    corpus, work = tmp_path / "corpus", tmp_path / "work"
    corpus.mkdir()
    work.mkdir()
    (work / "audio.wav").write_bytes(b"")
    base = work / "train.tokens.jsonl"
    base.write_text(
        json.dumps({"id": "q1", "text": "Hi!", "audio": "audio.wav", "reply_text": "Hello!"})
    )  # no final newline
    assert with_numeracy(_cfg(corpus, work), str(base)) == str(base)  # 0 items: the manifest as it is
    cfg = _cfg(corpus, work, numeracy_items=5)
    with pytest.raises(FileNotFoundError, match="training.data.numeracy"):
        with_numeracy(cfg, str(base))
    (corpus / "corpus.json").write_text(json.dumps({"heldout_combos": {}, "heldout_phrasings": {}}))
    numeracy(["--corpus", str(corpus), "--items", "8"])
    joined = with_numeracy(cfg, str(base))
    assert joined == str(work / "train.tokens.numeracy5.jsonl")
    items = read_manifest(joined)  # the user audio still resolves against the same folder
    assert [i.id for i in items[:1]] == ["q1"] and items[0].audio == work / "audio.wav"
    expected = [json.loads(x)["id"] for x in (corpus / "numeracy.jsonl").read_text().splitlines()[:5]]
    assert [i.id for i in items[1:]] == expected and all(i.audio is None for i in items[1:])
    with pytest.raises(ValueError, match="holds only 8"):
        with_numeracy(_cfg(corpus, work, numeracy_items=9), str(base))
    with pytest.raises(ValueError, match="numeracy_items"):
        _cfg(corpus, work, numeracy_items=-1)


@needs_tts
def test_base_llm_trains_on_the_numeracy_items_with_its_weight_decay(tmp_path):
    from training.data.numeracy import heldout_phrasing_indices
    from training.data.numeracy import main as numeracy
    from training.data.synth import main as synth
    from training.data.synth_plan import SynthConfig, plan_splits

    corpus, work = tmp_path / "corpus", tmp_path / "work"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    numeracy(["--corpus", str(corpus), "--items", "5"])
    # the held-out phrasings numeracy avoids are read from synth's own corpus.json as its plan drew them
    meta = json.loads((corpus / "corpus.json").read_text())
    assert heldout_phrasing_indices(meta) == plan_splits(SynthConfig(out=str(corpus))).heldout_phrasing
    cfg = _cfg(corpus, work, stop_after="text_llm", numeracy_items=5, text_llm_weight_decay=0.3)
    cfg.text_llm_steps, cfg.max_tokens = 1, 2000
    assert demo.run(cfg) == work / "text_llm" / "final"
    config = (work / "text_llm" / "config.yaml").read_text()
    assert "train.tokens.numeracy5.jsonl" in config and "weight_decay: 0.3" in config
    joined = [json.loads(x)["id"] for x in (work / "train.tokens.numeracy5.jsonl").read_text().splitlines()]
    assert sum(i.startswith("numeracy-") for i in joined) == 5


@needs_tts
def test_general_tokenizer_learns_the_general_words_and_the_adapter_ctc_hears_them(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from training.data.general_speech import main as general_speech
    from training.data.synth import main as synth

    with pytest.raises(ValueError, match="--general_speech"):
        _cfg(tmp_path, tmp_path, general_tokenizer=True)
    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    with pytest.raises(FileNotFoundError, match="training.data.general_speech"):
        demo.run(_cfg(corpus, tmp_path / "missing", general_speech=True, general_tokenizer=True))
    general_speech(["--corpus", str(corpus), "--sentences", "12", "--vocabulary", "200"])
    plain, general = tmp_path / "plain", tmp_path / "general"
    demo.run(_cfg(corpus, plain, general_speech=True))
    cfg = _cfg(corpus, general, general_speech=True, general_tokenizer=True, stop_after="adapter")
    cfg.text_llm_steps, cfg.srh_steps, cfg.ctc_steps, cfg.adapter_ctc_steps, cfg.max_tokens = 1, 1, 1, 1, 2000
    assert demo.run(cfg) == general / "adapter_ctc" / "final"

    sentences = [json.loads(x)["text"] for x in (corpus / "general.jsonl").read_text().splitlines()]
    questions = [json.loads(x)["text"] for x in (corpus / "train.jsonl").read_text().splitlines()]
    count = lambda work, texts: sum(  # noqa: E731
        len(PreTrainedTokenizerFast.from_pretrained(work / "tiny_llm").tokenize(t)) for t in texts
    )
    assert count(general, sentences) < count(plain, sentences) - 20  # the general words are learned
    assert count(general, questions) <= 1.25 * count(plain, questions)  # the questions stay compact
    adapter_config = (general / "adapter_ctc" / "config.yaml").read_text()
    assert demo.EAR_TRAIN in adapter_config  # the adapter CTC trains on the general speech too
    assert demo.EAR_TRAIN in (general / "encoder_ctc" / "config.yaml").read_text()


@needs_tts
def test_spoken_numeracy_replies_get_reply_tokens_and_make_t2m_samples(tmp_path):
    import soundfile as sf

    from training.data.com_mixing import missing_input
    from training.data.manifest import read_manifest
    from training.data.numeracy import main as numeracy
    from training.data.synth import main as synth
    from training.data.synth_plan import reply_audio_path
    from training.recipes.demo_prepare import NUMERACY_TOKENS, with_numeracy

    corpus, work = tmp_path / "corpus", tmp_path / "work"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    numeracy(["--corpus", str(corpus), "--items", "5", "--speak"])
    raw = [json.loads(x) for x in (corpus / "numeracy.jsonl").read_text().splitlines()]
    for item in raw:  # each reply in the assistant voice, where the corpus keeps that reply text
        assert item["reply_audio"] == reply_audio_path(item["reply_text"])
        info = sf.info(str(corpus / item["reply_audio"]))
        assert info.samplerate == 16000 and 0.8 < info.duration < 5
    assert json.loads((corpus / "numeracy.json").read_text())["spoken_replies"] == len(
        {x["reply_text"] for x in raw}
    )
    cfg = _cfg(corpus, work, numeracy_items=4)
    demo.run(cfg)
    tokens = read_manifest(work / NUMERACY_TOKENS)
    assert [i.id for i in tokens] == [x["id"] for x in raw]
    for item in tokens:  # 25 Hz units of the reply
        seconds = sf.info(str(item.reply_audio)).duration
        assert abs(len(item.reply_tokens) - 25 * seconds) <= 2
    joined = read_manifest(with_numeracy(cfg, str(work / "train.tokens.jsonl")))
    added = [i for i in joined if i.category == "numeracy"]
    assert [i.id for i in added] == [x["id"] for x in raw[:4]]
    assert all(missing_input(i, "T2M") is None and missing_input(i, "T2T") is None for i in added)
    assert all(missing_input(i, "S2M") == "no user audio" for i in added)
    numeracy(["--corpus", str(corpus), "--items", "5"])  # unspoken, in a work folder without tokens
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "train.tokens.jsonl").write_text("")
    plain = read_manifest(with_numeracy(cfg, str(tmp_path / "plain" / "train.tokens.jsonl")))
    assert len(plain) == 4 and all(missing_input(i, "T2M") == "no reply tokens" for i in plain)


@needs_tts
def test_asked_numeracy_questions_are_spoken_by_training_voices_and_make_s2t_samples(tmp_path):
    import soundfile as sf

    from training.data.com_mixing import missing_input
    from training.data.manifest import read_manifest
    from training.data.numeracy import main as numeracy
    from training.data.synth import main as synth
    from training.recipes.demo_prepare import NUMERACY_TOKENS, with_numeracy

    corpus, work = tmp_path / "corpus", tmp_path / "work"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    numeracy(["--corpus", str(corpus), "--items", "6", "--ask", "--seed", "2"])
    meta = json.loads((corpus / "corpus.json").read_text())
    raw = [json.loads(x) for x in (corpus / "numeracy.jsonl").read_text().splitlines()]
    for item in raw:  # a training voice, never a held-out one, in the corpus's prosody ranges
        assert item["voice"] in meta["user_voices"]["train"] and item["audio"].startswith("audio/numeracy/")
        assert meta["config"]["rate_range"][0] <= item["prosody"]["rate"] <= meta["config"]["rate_range"][1]
        info = sf.info(str(corpus / item["audio"]))
        assert (info.samplerate, info.channels) == (16000, 1) and info.duration > 0.8
        assert "reply_audio" not in item
    summary = json.loads((corpus / "numeracy.json").read_text())
    assert summary["rendered_questions"] == 6 and sum(summary["asked_by"].values()) == 6
    numeracy(["--corpus", str(corpus), "--items", "6", "--ask", "--seed", "2"])  # same files, kept
    assert json.loads((corpus / "numeracy.json").read_text())["rendered_questions"] == 0
    cfg = _cfg(corpus, work, numeracy_items=4)
    demo.run(cfg)
    assert [i.id for i in read_manifest(work / NUMERACY_TOKENS)] == [x["id"] for x in raw]
    added = [
        i
        for i in read_manifest(with_numeracy(cfg, str(work / "train.tokens.jsonl")))
        if i.category == "numeracy"
    ]
    assert len(added) == 4 and all(i.audio.is_file() for i in added)
    assert all(missing_input(i, "S2T") is None and missing_input(i, "T2T") is None for i in added)
    assert all(missing_input(i, "S2M") == "no reply tokens" for i in added)


@needs_tts
def test_counterfactual_replies_get_reply_tokens_and_join_stage_2_as_speech_only_items(tmp_path):
    from training.data.com_mixing import missing_input
    from training.data.counterfactual import main as counterfactual
    from training.data.manifest import read_manifest
    from training.data.synth import main as synth
    from training.recipes.demo_prepare import with_counterfactual

    corpus, work = tmp_path / "corpus", tmp_path / "work"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    cfg = _cfg(corpus, work, counterfactual_items=4)
    with pytest.raises(FileNotFoundError, match="training.data.counterfactual"):
        demo.run(cfg)
    counterfactual(["--corpus", str(corpus), "--items", "5", "--workers", "2"])
    demo.run(cfg)
    tokens = read_manifest(work / "counterfactual.tokens.jsonl")
    assert len(tokens) == 5 and all(i.reply_tokens and not i.text_target for i in tokens)
    base = str(work / "train.tokens.jsonl")
    assert with_counterfactual(_cfg(corpus, work), base) == base  # 0 items: the manifest as it is
    joined = read_manifest(with_counterfactual(cfg, base))
    assert [i.id for i in joined[-4:]] == [i.id for i in tokens[:4]]
    assert len(joined) == len(read_manifest(base)) + 4
    assert all(missing_input(i, "S2M") is None and missing_input(i, "T2M") is None for i in joined[-4:])
    assert all(missing_input(i, m) is not None for i in joined[-4:] for m in ("S2T", "T2T", "STC"))
    with pytest.raises(ValueError, match="only 5 items"):
        with_counterfactual(_cfg(corpus, work, counterfactual_items=6), base)
    with pytest.raises(ValueError, match="counterfactual_items"):
        _cfg(corpus, work, counterfactual_items=-1)


@needs_tts
def test_paraphrases_join_the_speech_training_manifest_with_their_sources_reply_tokens(tmp_path):
    from training.data.paraphrases import main as paraphrases
    from training.data.synth import main as synth

    corpus, work = tmp_path / "corpus", tmp_path / "work"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    with pytest.raises(FileNotFoundError, match="training.data.paraphrases"):
        demo.run(_cfg(corpus, work, paraphrases=True))
    paraphrases(["--corpus", str(corpus), "--items", "5", "--workers", "2"])
    demo.run(_cfg(corpus, work, paraphrases=True))
    rows = lambda name: [json.loads(x) for x in (work / name).read_text().splitlines()]  # noqa: E731
    train, extra, speech = (
        rows("train.tokens.jsonl"),
        rows("paraphrases.tokens.jsonl"),
        rows(demo.SPEECH_TRAIN),
    )
    assert [r["id"] for r in speech] == [r["id"] for r in train] + [r["id"] for r in extra]
    sources = {r["id"]: r for r in train}
    assert len(extra) == 5
    for item in extra:  # the training item's reply (same tokens), a new question and recording
        source = sources[item["source"]]
        assert item["reply_tokens"] == source["reply_tokens"] and item["text"] != source["text"]
    assert demo.speech_manifest(_cfg(corpus, work), work).name == "train.tokens.jsonl"
