"""Tests of the synthetic spoken-QA corpus builder (training/data/synth.py, qa_domain.py, tts.py).

The split rules are checked on the full-size plan (no audio is rendered for that); the files on a
handful of items rendered with the real TTS programs, which are skipped with the reason shown when
flite / espeak-ng are missing (CI installs both).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from training.data.qa_domain import INTENTS, INTENTS_BY_NAME, combo_key, render
from training.data.synth import SIZES, SynthConfig, main, plan_corpus, plan_splits
from training.data.tts import (
    ASSISTANT_VOICE,
    EXTRA_TRAIN_VOICES,
    FESTIVAL_TRAIN_VOICES,
    USER_VOICES,
    VOCODED_TRAIN_VOICES,
    Prosody,
    engine_command,
    speak_assistant,
    spoken_form,
    synthesize,
    vocode,
)
from training.eval.scoring import contains_answer

needs_tts = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("espeak-ng") is None,
    reason="flite and espeak-ng are not installed (apt-get install flite espeak-ng); CI installs them",
)
needs_festival = pytest.mark.skipif(
    shutil.which("text2wave") is None,
    reason="festival is not installed (apt-get install festival festvox-kdlpc16k festvox-us-slt-hts); CI installs it",
)
MANIFEST_KEYS = {
    "id", "text", "audio", "reply_text", "reply_audio", "reply_tokens", "system", "history", "answers",
    "category", "voice", "intent", "phrasing",
}  # fmt: skip


@pytest.fixture(scope="module")
def full_plan():
    train, evaluation, conversations = SIZES["full"]
    config = SynthConfig(out="unused", per_intent=train, eval_per_intent=evaluation, multiturn=conversations)
    return config, plan_corpus(config)


# ------------------------------------------------------------------------------------- domain


def test_domain_examples():
    qa = render(INTENTS_BY_NAME["plus"], 0, (3, 4))
    assert (qa.question, qa.reply, qa.answers) == (
        "What is three plus four?",
        "Three plus four is seven.",
        ("7", "seven"),
    )
    qa = render(INTENTS_BY_NAME["times"], 0, (12, 12))
    assert qa.reply == "Twelve times twelve is one hundred forty four." and qa.answers[0] == "144"
    assert render(INTENTS_BY_NAME["previous_number"], 0, (1,)).answers == ("0", "zero")
    assert render(INTENTS_BY_NAME["day_before"], 0, ("Monday",)).reply == "The day before Monday is Sunday."
    assert render(INTENTS_BY_NAME["month_after"], 0, ("December",)).answers == ("January",)
    assert render(INTENTS_BY_NAME["capital"], 0, ("India",)).answers == ("New Delhi",)
    assert render(INTENTS_BY_NAME["opposite"], 0, ("closed",)).reply == "The opposite of closed is open."
    assert render(INTENTS_BY_NAME["name"], 0, ()).reply == "My name is DrVoice."
    assert spoken_form("My name is DrVoice.") == "My name is Doctor Voice."
    minus = INTENTS_BY_NAME["minus"]
    assert all(a >= b for a, b in minus.combos) and len(minus.combos) == 13 * 14 // 2


def test_every_intent_has_five_phrasings_and_answerable_replies():
    for intent in INTENTS:
        assert len(intent.phrasings) >= 5, intent.name
        for phrasing in range(len(intent.phrasings)):
            for operands in intent.combos:
                qa = render(intent, phrasing, operands)
                assert contains_answer(qa.reply, qa.answers), (intent.name, qa)
                assert not any(ch.isdigit() for ch in qa.question + qa.reply)  # numbers are words


# -------------------------------------------------------------------------------------- splits


def test_split_rules_hold(full_plan):
    config, corpus = full_plan
    plan = corpus.plan
    train, validation, test = (corpus.splits[s] for s in ("train", "validation", "test"))
    assert len(train) == config.per_intent * len(INTENTS)
    assert len(validation) == len(test) == config.eval_per_intent * len(INTENTS)
    held_voices = set(config.heldout_voices)
    held_phrasings = {f"{name}.{p}" for name, p in plan.heldout_phrasing.items()}
    train_conversations = [c for c in corpus.multiturn if c["split"] == "train"]

    # the held-out voices, phrasings and combos never occur in training (single- and multi-turn,
    # history turns included)
    train_turns = train + [t for c in train_conversations for t in (*c["history"], c)]
    assert not held_voices & {r["voice"] for r in train + train_conversations}
    assert not held_phrasings & {r["phrasing"] for r in train_turns}
    for turn in train_turns:
        intent = INTENTS_BY_NAME[turn["intent"]]
        assert tuple(turn["operands"]) in set(plan.combos[intent.name]["train"]), turn
        # checked on the text too, not only on the recorded template id
        assert (
            turn["text"]
            != render(intent, plan.heldout_phrasing[intent.name], tuple(turn["operands"])).question
        )
    # ... but both do occur in validation and test, in every combination with the training ones
    for items in (validation, test):
        factors = {("phrasing" in r["heldout"], "voice" in r["heldout"]) for r in items}
        assert factors == {(False, False), (True, False), (False, True), (True, True)}
        assert {r["voice"] for r in items} & held_voices and {r["phrasing"] for r in items} & held_phrasings
        for r in items:
            assert ("voice" in r["heldout"]) == (r["voice"] in held_voices)
            assert ("phrasing" in r["heldout"]) == (r["phrasing"] in held_phrasings)

    # held-out combos (arithmetic, numbers): no validation/test (intent, operands) is in train,
    # plus/times not even with the operands swapped; validation and test are disjoint
    seen = {(r["intent"], tuple(r["operands"])) for r in train}
    for split_items in (validation, test):
        held = [r for r in split_items if INTENTS_BY_NAME[r["intent"]].holdout_combos]
        assert held and all("combo" in r["heldout"] for r in held)
        for r in held:
            intent = INTENTS_BY_NAME[r["intent"]]
            assert (r["intent"], tuple(r["operands"])) not in seen, r["id"]
            swapped = {(intent.name, tuple(c)) for c in seen_variants(intent, r["operands"])}
            assert not swapped & seen, r["id"]
    val_combos = {(r["intent"], tuple(r["operands"])) for r in validation if "combo" in r["heldout"]}
    test_combos = {(r["intent"], tuple(r["operands"])) for r in test if "combo" in r["heldout"]}
    assert val_combos and test_combos and not val_combos & test_combos
    # the two number intents hold out the same numbers
    assert plan.combos["next_number"]["test"] == plan.combos["previous_number"]["test"]


def seen_variants(intent, operands):
    """Operand tuples that count as the same held-out combo (both orders for plus / times)."""
    key = combo_key(intent, tuple(operands))
    return [c for c in intent.combos if combo_key(intent, c) == key]


def test_every_item_is_consistent(full_plan):
    _, corpus = full_plan
    ids = set()
    for split, items in corpus.splits.items():
        for r in items:
            assert set(r) >= MANIFEST_KEYS, r["id"]
            assert r["id"] not in ids and r["id"].startswith(split)
            ids.add(r["id"])
            intent = INTENTS_BY_NAME[r["intent"]]
            qa = render(intent, int(r["phrasing"].split(".")[1]), tuple(r["operands"]))
            assert (r["text"], r["reply_text"], tuple(r["answers"])) == (qa.question, qa.reply, qa.answers)
            assert r["category"] == intent.category and r["history"] == [] and r["reply_tokens"] is None
            assert r["audio"].startswith(f"audio/{split}/") and r["reply_audio"].startswith("replies/")
    # one reply file per reply text (the assistant voice never varies)
    pairs = {(r["reply_text"], r["reply_audio"]) for items in corpus.splits.values() for r in items}
    assert len({t for t, _ in pairs}) == len({a for _, a in pairs}) == len(pairs)
    # conversations: 2-4 turns, answers in the reply, history replies feed the follow-up
    assert corpus.multiturn and all(1 <= len(c["history"]) <= 3 for c in corpus.multiturn)
    for conv in corpus.multiturn:
        assert contains_answer(conv["reply_text"], conv["answers"])
        if conv["phrasing"].startswith("followup_next"):  # "And the one after that?" continues the last reply
            previous_answer = conv["history"][-1]["reply_text"].rstrip(".").split(" is ")[-1]
            assert conv["reply_text"].split(" is ")[0].endswith(previous_answer), conv


def test_plan_is_deterministic_given_seed(full_plan):
    config, corpus = full_plan
    again = plan_corpus(config)
    assert again.splits == corpus.splits and again.multiturn == corpus.multiturn
    other = plan_splits(SynthConfig(out="unused", seed=1))
    assert other.combos != corpus.plan.combos or other.heldout_phrasing != corpus.plan.heldout_phrasing


def test_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--heldout-voices"):
        SynthConfig(out="x", heldout_voices=("flite-slt",))  # the assistant voice is not a user voice
    with pytest.raises(ValueError, match="--heldout-voices"):
        SynthConfig(out="x", heldout_voices=tuple(v.name for v in USER_VOICES))
    with pytest.raises(ValueError, match="--heldout-voices"):  # extra voices are training-only
        SynthConfig(out="x", heldout_voices=(EXTRA_TRAIN_VOICES[0].name,))
    with pytest.raises(ValueError, match="--extra-voice-copies"):
        SynthConfig(out="x", extra_voice_copies=-1)
    with pytest.raises(ValueError, match="--extra-voices"):
        SynthConfig(out="x", extra_voices="mbrola")
    with pytest.raises(ValueError, match="--heldout-voices"):  # festival voices are training-only too
        SynthConfig(out="x", heldout_voices=(FESTIVAL_TRAIN_VOICES[0].name,))
    with pytest.raises(ValueError, match="--limit"):
        SynthConfig(out="x", limit=0)


def test_festival_extra_voices_replace_the_espeak_ones_in_train_extra_only():
    base = SynthConfig(out="unused", per_intent=12, eval_per_intent=4, multiturn=4, extra_voice_copies=1)
    espeak, festival = (
        plan_corpus(base),
        plan_corpus(SynthConfig(**{**base.__dict__, "extra_voices": "festival"})),
    )
    for split in ("train", "validation", "test"):
        assert festival.splits[split] == espeak.splits[split]
    names = {v.name for v in FESTIVAL_TRAIN_VOICES}
    assert {c["voice"] for c in festival.splits["train_extra"]} == names  # balanced: all four speak
    assert [c["id"] for c in festival.splits["train_extra"]] == [
        c["id"] for c in espeak.splits["train_extra"]
    ]


def test_a_second_extra_voice_set_adds_its_own_copies_and_keeps_the_first_sets():
    base = SynthConfig(
        out="unused",
        per_intent=12,
        eval_per_intent=4,
        multiturn=4,
        extra_voice_copies=1,
        extra_voices="festival",
    )
    festival = plan_corpus(base).splits["train_extra"]
    both = plan_corpus(SynthConfig(**{**base.__dict__, "extra_voices": "festival,vocoded"})).splits[
        "train_extra"
    ]
    assert both[: len(festival)] == festival  # the festival renderings are reused as they are
    vocoded = both[len(festival) :]
    assert len(vocoded) == len(festival)
    assert [c["id"] for c in vocoded] == [f"{c['id']}.vocoded" for c in festival]
    assert {c["voice"] for c in vocoded} == {v.name for v in VOCODED_TRAIN_VOICES}  # balanced
    assert not {c["audio"] for c in vocoded} & {c["audio"] for c in festival}
    for bad in ("festival,festival", "festival,nope", " , "):
        with pytest.raises(ValueError, match="--extra-voices"):
            SynthConfig(out="x", extra_voices=bad)


def median_f0(samples: np.ndarray, rate: int) -> float:
    """The median F0 of the voiced frames (WORLD's DIO)."""
    import pyworld

    track, _ = pyworld.dio(np.asarray(samples, dtype=np.float64), rate, frame_period=5.0)
    return float(np.median(track[track > 0]))


def test_vocode_moves_the_pitch_and_the_formants_and_keeps_length_and_level():
    rate, seconds = 16000, 0.8
    t = np.arange(int(rate * seconds)) / rate
    # a 120 Hz voice (harmonics falling as 1/k) through one resonance at 1000 Hz
    harmonics = [
        (k * 120.0, (1 + 6 * np.exp(-((((k * 120.0) - 1000.0) / 200.0) ** 2))) / k) for k in range(1, 60)
    ]
    voice = sum(a * np.sin(2 * np.pi * f * t) for f, a in harmonics).astype(np.float32)
    voice *= 0.5 / np.abs(voice).max()

    def strongest(x):  # the frequency of the spectral peak above 300 Hz: the resonance
        spectrum = np.abs(np.fft.rfft(x))
        freqs = np.fft.rfftfreq(len(x), 1 / rate)
        return float(freqs[freqs > 300][np.argmax(spectrum[freqs > 300])])

    same = vocode(voice, rate, 1.0, 1.0)
    lower = vocode(voice, rate, 0.6, 1.0)
    brighter = vocode(voice, rate, 1.0, 1.3)
    for out in (same, lower, brighter):
        assert out.dtype == np.float32 and len(out) == len(voice)
        assert abs(np.abs(out).max() - 0.5) < 1e-4  # the input's peak level
    assert abs(median_f0(same, rate) - 120) < 6 and abs(median_f0(lower, rate) - 72) < 6
    assert abs(strongest(same) - 1000) <= 130 and abs(strongest(brighter) - 1300) <= 130
    with pytest.raises(ValueError, match="vocoder factors"):
        vocode(voice, rate, 0.0, 1.0)


def test_festival_command_speeds_the_hts_voice_up_by_what_its_warp_will_slow_it_down():
    warped = next(v for v in FESTIVAL_TRAIN_VOICES if v.warp == 0.78)
    cmd = " ".join(engine_command(warped, "Hi.", "/tmp/x.wav", Prosody(rate=1.1, pitch=1.1)))
    assert cmd.startswith("text2wave -eval (voice_cmu_us_slt_arctic_hts)") and cmd.endswith("-o /tmp/x.wav")
    assert '(("-r" 1.282))' in cmd  # 1.1 / (0.78 * 1.1)
    ked = " ".join(engine_command(FESTIVAL_TRAIN_VOICES[0], "Hi.", "/tmp/x.wav", Prosody(rate=1.25)))
    assert "(voice_ked_diphone)" in ked and "Duration_Stretch 0.800" in ked and "hts_engine" not in ked


def test_extra_voice_copies_add_training_voices_and_leave_the_splits_alone():
    base = SynthConfig(out="unused", per_intent=12, eval_per_intent=4, multiturn=4)
    plain = plan_corpus(base)
    extra = plan_corpus(SynthConfig(**{**base.__dict__, "extra_voice_copies": 2}))
    assert "train_extra" not in plain.splits
    for split in ("train", "validation", "test"):
        assert extra.splits[split] == plain.splits[split]  # nothing planned before changes
    assert extra.multiturn == plain.multiturn
    train, copies = plain.splits["train"], extra.splits["train_extra"]
    assert len(copies) == 2 * len(train)
    by_id = {r["id"]: r for r in train}
    extra_names = {v.name for v in EXTRA_TRAIN_VOICES}
    for copy in copies:
        source = by_id[copy["id"].rsplit("-x", 1)[0]]
        assert {k: v for k, v in copy.items() if k not in ("id", "audio", "voice", "prosody")} == {
            k: v for k, v in source.items() if k not in ("id", "audio", "voice", "prosody")
        }
        assert copy["voice"] in extra_names and copy["audio"].startswith("audio/train_extra/")
    assert {c["voice"] for c in copies} == extra_names  # balanced: every extra voice speaks
    assert len({c["audio"] for c in copies}) == len(copies)
    heldout = set(base.heldout_voices)
    assert not heldout & {r["voice"] for r in train + copies}


# ---------------------------------------------------------------------------------- rendering


@needs_tts
def test_every_voice_renders_16k_mono():
    for voice in USER_VOICES + EXTRA_TRAIN_VOICES:
        for prosody in (Prosody(), Prosody(rate=1.2, pitch=0.9)):
            wav = synthesize("What is three plus four?", voice, prosody)
            assert wav.sample_rate == 16000 and wav.samples.ndim == 1 and wav.samples.dtype == np.float32
            assert 0.5 < wav.duration < 4.0 and np.abs(wav.samples).max() > 0.05, voice.name
    slow = synthesize("What is three plus four?", "flite-kal16", Prosody(rate=0.8)).duration
    fast = synthesize("What is three plus four?", "flite-kal16", Prosody(rate=1.25)).duration
    assert slow > 1.3 * fast


@needs_festival
def test_festival_voices_render_16k_mono_and_the_warp_deepens_the_voice():
    from training.eval.asr import transcribe

    def pitch(wav) -> float:  # the strongest frequency in 60-400 Hz: about the mean F0
        spectrum = np.abs(np.fft.rfft(wav.samples))
        freqs = np.fft.rfftfreq(len(wav.samples), 1 / wav.sample_rate)
        low = (freqs > 60) & (freqs < 400)
        return float(freqs[low][np.argmax(spectrum[low])])

    renderings = {
        v.name: synthesize("What is the capital of France?", v, Prosody()) for v in FESTIVAL_TRAIN_VOICES
    }
    for name, wav in renderings.items():
        assert wav.sample_rate == 16000 and wav.samples.ndim == 1 and wav.samples.dtype == np.float32
        assert 1.0 < wav.duration < 4.0 and np.abs(wav.samples).max() > 0.05, name
        assert "capital of france" in transcribe(wav), name  # the judge understands every one
    deep, small = renderings["festival-hts-w78"], renderings["festival-hts-w110"]
    assert 0.6 * pitch(small) < pitch(deep) < 0.8 * pitch(small)  # 0.78 / 1.1 = 0.71
    assert abs(deep.duration - small.duration) < 0.1 * small.duration  # the warp keeps the duration
    slow = synthesize("What is three plus four?", "festival-hts-w86", Prosody(rate=0.8)).duration
    fast = synthesize("What is three plus four?", "festival-hts-w86", Prosody(rate=1.25)).duration
    assert slow > 1.3 * fast


@needs_festival
@needs_tts
def test_vocoded_voices_are_understood_and_speak_lower_than_their_source():
    from training.eval.asr import transcribe

    text = "What is the capital of France?"
    for voice in VOCODED_TRAIN_VOICES:
        wav = synthesize(text, voice, Prosody())
        assert wav.sample_rate == 16000 and wav.samples.ndim == 1 and wav.samples.dtype == np.float32
        assert "capital of france" in transcribe(wav), voice.name  # the judge understands every one
    source = synthesize(text, "festival-hts-w110", Prosody())  # HTS slt, frequencies x 1.1
    low = synthesize(text, "vocoded-hts-m1", Prosody())  # HTS slt, F0 x 0.58 through WORLD
    assert 0.42 < median_f0(low.samples, 16000) / median_f0(source.samples, 16000) < 0.64  # 0.58 / 1.1 = 0.53


@needs_tts
def test_speak_assistant_is_one_fixed_voice():
    a, b = (
        speak_assistant("The capital of France is Paris."),
        speak_assistant("The capital of France is Paris."),
    )
    assert a.sample_rate == 16000 and np.array_equal(a.samples, b.samples) and a.duration > 1.0
    assert ASSISTANT_VOICE.voice == "slt" and not ASSISTANT_VOICE.vary


@needs_tts
def test_build_small_corpus(tmp_path):
    from training.data.manifest import read_manifest

    out = tmp_path / "corpus"
    argv = ["--out", str(out), "--limit", "3", "--multiturn", "2", "--workers", "2", "--seed", "3"]
    argv += ["--extra-voice-copies", "1"]
    summary = main(argv)
    extra = read_manifest(out / "train_extra.jsonl")
    assert len(extra) == 3 and all(i.audio.is_file() for i in extra)
    assert summary["counts"]["train_extra"]["items"] == 3
    for split in ("train", "validation", "test"):
        records = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert len(records) == 3 and summary["counts"][split]["items"] == 3
        for r in records:
            for key in ("audio", "reply_audio"):
                info = sf.info(str(out / r[key]))
                assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), r[key]
                assert info.duration > 0.3
        assert len({r["intent"] for r in records}) == 3  # --limit keeps a mix of intents
        assert sum(summary["counts"][split]["voice"].values()) == 3
        items = read_manifest(out / f"{split}.jsonl")  # the training side reads it
        assert [i.id for i in items] == [r["id"] for r in records] and items[0].audio.is_file()
    conversations = [json.loads(line) for line in (out / "multiturn.jsonl").read_text().splitlines()]
    assert {c["split"] for c in conversations} == {"train", "validation", "test"}
    for conv in conversations:
        assert conv["history"] and all((out / h["audio"]).is_file() for h in conv["history"])
        assert "history_prosody" not in conv
    written = json.loads((out / "corpus.json").read_text())
    assert written["counts"] == summary["counts"] and written["assistant_voice"] == "flite-slt"
    assert summary["rendered_files"] > 0
    # a second run renders nothing: every file exists already
    assert main(argv)["rendered_files"] == 0
