"""Tests of the evaluation: scoring (hand-checked), the pocketsphinx judge, the harness.

The harness is checked twice: with a stub engine and a stub judge whose every score is worked out
by hand below, and end to end (CLI) on a tiny random checkpoint with an embedded units codec, whose
expected accuracies are derived from the per-item replies it writes with --out. Tests that need
flite are skipped, with the reason shown, when it is missing (CI installs it).
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from core.engine import InputError
from core.types import Done, Timings, Waveform
from training.eval.__main__ import main, parse_modes
from training.eval.harness import (
    EvalItem,
    Evaluator,
    ItemResult,
    evaluate,
    format_table,
    read_eval_manifest,
    read_results,
    rescore,
    write_results,
)
from training.eval.scoring import (
    contains_answer,
    normalize,
    number_to_words,
    wer,
    word_errors,
    words_to_numbers,
)

needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite is not installed (apt-get install flite); CI installs it"
)

# ------------------------------------------------------------------------------------ scoring


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (21, "twenty one"),
        (100, "one hundred"),
        (144, "one hundred forty four"),
        (1000, "one thousand"),
        (1205, "one thousand two hundred five"),
        (2_000_017, "two million seventeen"),
        (-3, "minus three"),
    ],
)
def test_number_to_words(n, words):
    assert number_to_words(n) == words
    assert words_to_numbers(words.split()) == (["minus", str(-n)] if n < 0 else [str(n)])


@pytest.mark.parametrize(
    "text, numbers, expected",
    [
        ("Three plus FOUR is 7!", "words", "three plus four is seven"),
        ("3 plus 4 is 7.", "digits", "3 plus 4 is 7"),
        ("Twenty-one", "digits", "21"),
        ("one hundred and five apples", "digits", "105 apples"),
        ("three four", "digits", "3 4"),  # two numbers, not 7 or 34
        ("twenty eleven", "digits", "20 11"),
        ("bread and butter and one", "digits", "bread and butter and 1"),  # "and" joins only after hundred
        ("1,200 people", "words", "one thousand two hundred people"),
        ("2.5", "words", "two point five"),
        ("-3 degrees", "words", "minus three degrees"),
        ("pages 5-7", "words", "pages five seven"),  # a range, not "five minus seven"
        ("I\u2019m DrVoice.", "words", "i'm doctor voice"),
        ("'quoted' words -- here", "words", "quoted words here"),
        ("", "words", ""),
    ],
)
def test_normalize(text, numbers, expected):
    assert normalize(text, numbers) == expected


@pytest.mark.parametrize(
    "text, answers, expected",
    [
        ("Three plus four is seven.", ["7"], True),  # words in the reply, digits in the answer
        ("3 plus 4 is 7", ["seven"], True),  # and the other way round
        ("It is seventeen.", ["7", "seven"], False),  # whole numbers only
        ("It is 17.", ["7"], False),
        ("twenty seven", ["7"], False),  # reads as 27
        ("twenty-seven", ["27"], True),
        ("The capital of India is NEW DELHI!", ["New Delhi"], True),
        ("The capital is Delhi.", ["New Delhi"], False),
        ("Parisian food", ["Paris"], False),
        ("my name is doctor voice", ["DrVoice"], True),
        ("anything", [], False),
        ("", ["7"], False),
        ("ok", ["", "ok"], True),  # an empty answer is ignored, not a match for everything
    ],
)
def test_contains_answer(text, answers, expected):
    assert contains_answer(text, answers) is expected


@pytest.mark.parametrize(
    "reply,answers,question,expected",
    [
        ("Twelve minus six is five.", ["6", "six"], "What is twelve minus six?", False),  # an echo
        ("Twelve minus six is six.", ["6", "six"], "What is twelve minus six?", True),
        ("Twelve minus six is 6.", ["6"], "What is 12 minus 6?", True),  # digits and words meet
        ("Zero times ten is zero.", ["0"], "What is zero times ten?", True),
        ("Zero.", ["0"], "What is zero times ten?", False),  # the documented price
        ("The capital of France is Paris.", ["Paris"], "What is the capital of France?", True),
        ("Hello! How can I help you today?", ["hello"], "Hey, hello!", True),  # word answers may echo
        ("seven", ["7"], None, True),  # no question: plain matching
    ],
)
def test_contains_answer_does_not_count_the_question_echo(reply, answers, question, expected):
    assert contains_answer(reply, answers, question) is expected


def test_wer_by_hand():
    # the=the cat=cat sat->sit (1 substitution) on=on the->(deleted, 1) mat=mat: 2 errors / 6 words
    assert wer("the cat sat on the mat", "the cat sit on mat") == pytest.approx(2 / 6)
    assert wer("a b", "a x b") == pytest.approx(1 / 2)  # one insertion
    assert wer("a b c", "") == 1.0  # three deletions
    assert wer("What is 3 plus 4?", "what is three plus for") == pytest.approx(1 / 5)  # numbers as words
    assert wer("It is 21.", "it is twenty one") == 0.0  # "21" is two words: "twenty one"
    assert word_errors("Hello, world!", "hello word") == (1, 2)
    assert wer("", "") == 0.0 and wer("", "noise") == 1.0


# ------------------------------------------------------------------------------------ the judge


@needs_flite
def test_judge_transcribes_the_assistant_voice():
    from training.data.tts import speak_assistant
    from training.eval.asr import transcribe

    reference = "the capital of france is paris"
    hypothesis = transcribe(speak_assistant(reference))
    assert wer(reference, hypothesis) <= 0.5, hypothesis  # at least half the words right
    # any sample rate is resampled to 16 kHz first; silence and empty audio give ""
    from core.audio import resample

    wav = speak_assistant(reference)
    at_48k = Waveform(resample(wav.samples, 16000, 48000), 48000)
    assert wer(reference, transcribe(at_48k)) <= 0.5
    # the same audio gets the same transcript whatever was decoded before it
    assert transcribe(wav) == hypothesis
    assert transcribe(Waveform(np.zeros(16000, np.float32), 16000)) == ""
    assert transcribe(Waveform(np.zeros(0, np.float32), 16000)) == ""


# ------------------------------------------------------------------- the harness, stubbed


def fake_tts(text: str) -> Waveform:
    """'Audio' that carries its text (one sample per byte), so the stub judge can read it back."""
    return Waveform(np.frombuffer(text.encode(), np.uint8).astype(np.float32) / 256.0, 16000)


def fake_judge(waveform: Waveform) -> str:
    """Reads the text back like a recogniser would (lower case, no punctuation) and mishears
    "seven" as "eleven"."""
    text = (np.round(waveform.samples * 256.0)).astype(np.uint8).tobytes().decode()
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join("eleven" if w == "seven" else w for w in words)


class StubEngine:
    """Answers from a fixed table (question text -> reply); speech is `fake_tts` of the reply."""

    codec = "stub"

    def __init__(self, replies: dict[str, str]):
        from core.sampling import ModeSampling, SamplingConfig

        self.sampling = ModeSampling(modes={"S2T": SamplingConfig(audio_views=3)})  # recommends per mode
        self.replies = replies
        self.requests = []

    def chat(self, request):
        from core.modes import get_mode

        self.requests.append(request)
        key = request.text if request.text is not None else request.audio.rsplit("/", 1)[-1]
        if key == "refuse":
            raise InputError("no")
        reply = self.replies[key]
        audio = fake_tts(reply) if get_mode(request.mode).speech_output else None
        timings = Timings(0.05, 0.1 if audio else None, 0.5, audio.duration if audio else 0.0, 3)
        return Done(reply_text=reply, transcript="", draft="", timings=timings), audio


ITEMS = [
    # id, question / audio file name, answers, reply
    ("a", ["7"], "Three plus four is seven."),  # text right; judge hears "eleven": speech wrong
    ("b", ["Paris"], "The capital of France is Lyon."),  # both wrong
    ("c", ["17"], "It is 17."),  # both right ("17" vs "seventeen")
]


def test_harness_scores_by_hand(tmp_path):
    replies = {name: reply for name, _, reply in ITEMS} | {"d": "x"}
    items = [EvalItem(name, name, tmp_path / name, tuple(answers), "cat") for name, answers, _ in ITEMS]
    items.append(EvalItem("d", "d", None, ("x",), "other"))  # text only: skipped by speech modes
    evaluator = Evaluator(StubEngine(replies), transcribe=fake_judge, speak_reference=fake_tts)
    run = evaluate(evaluator, items, ["S2M", "T2T"], progress=False)
    s2m, t2t = run.report["modes"]["S2M"], run.report["modes"]["T2T"]
    assert run.report["n"] == 4 and (s2m["n"], s2m["skipped"], t2t["n"], t2t["skipped"]) == (3, 1, 4, 0)
    # text: a right, b wrong, c right (+ d right in T2T)
    assert s2m["text_accuracy"] == pytest.approx(2 / 3) and t2t["text_accuracy"] == pytest.approx(3 / 4)
    # speech: a wrong ("eleven"), b wrong, c right
    assert s2m["speech_accuracy"] == pytest.approx(1 / 3) and s2m[
        "speech_accuracy_reference"
    ] == pytest.approx(1 / 3)
    # ASR-WER pooled: 1 error ("seven" -> "eleven") over 5 + 6 + 3 reference words; the reference
    # renderings go through the same stub voice and judge, so the ceiling is the same figure
    assert s2m["asr_wer"] == pytest.approx(1 / 14) and s2m["asr_wer_reference"] == pytest.approx(1 / 14)
    # speed: 0.5 s for each reply, 100 ms to first audio; audio lasts one sample per byte
    audio_seconds = sum(len(reply.encode()) for _, _, reply in ITEMS) / 16000
    assert s2m["real_time_factor"] == pytest.approx(1.5 / audio_seconds)
    assert run.report["time_to_first_audio_ms"] == pytest.approx(100.0)
    assert "speech_accuracy" not in t2t and t2t["text_accuracy_by_category"] == {"cat": 2 / 3, "other": 1.0}
    # speech against text: of a and c (text right) only c is heard right; b (text wrong) is not heard right
    assert s2m["speech_accuracy_by_category"] == {"cat": pytest.approx(1 / 3)}
    assert s2m["speech_given_text"] == pytest.approx(1 / 2) and s2m["speech_without_text"] == 0.0
    assert "speech_given_text" not in t2t and "speech_accuracy_by_category" not in t2t
    by_key = {(r.id, r.mode): r for r in run.results}
    assert by_key[("a", "S2M")].transcript == "three plus four is eleven" and by_key[("a", "S2M")].wer == 0.2
    assert by_key[("a", "T2T")].transcript is None
    # speech modes sent the audio, text modes the text
    modes_inputs = {(r.mode, r.text is None, r.audio is None) for r in evaluator.engine.requests}
    assert modes_inputs == {("S2M", True, False), ("T2T", False, True)}
    table = format_table(run.report)
    assert "| S2M | 66.67 | 33.33 | 7.14 | 7.14 | 3 |" in table and "| T2T | 75.00 | – | – | – | 4 |" in table


def test_harness_does_not_score_an_echoed_operand(tmp_path):
    question = "What is twelve minus six?"
    replies = {question: "Twelve minus six is five.", "What is six minus zero?": "Six minus zero is six."}
    items = [EvalItem(f"q{i}", q, None, ("6", "six")) for i, q in enumerate(replies)]
    evaluator = Evaluator(StubEngine(replies), transcribe=fake_judge, speak_reference=fake_tts)
    run = evaluate(evaluator, items, ["T2M"], progress=False)
    by_id = {r.id: r for r in run.results}
    assert not by_id["q0"].text_correct and not by_id["q0"].speech_correct  # "six" only echoes the question
    assert by_id["q1"].text_correct and by_id["q1"].speech_correct  # the second "six" is the answer
    assert run.report["modes"]["T2M"]["text_accuracy"] == pytest.approx(0.5)


def test_harness_reports_speech_that_parts_from_the_text(tmp_path):
    # the judge hears "seven" as "eleven": a wrong written answer can be a right spoken one
    replies = {"q0": "Four plus seven is seven.", "q1": "Four plus three is seven.", "q2": "It is one."}
    answers = {"q0": ("11", "eleven"), "q1": ("7",), "q2": ("1",)}
    items = [EvalItem(q, q, None, answers[q], "arithmetic" if q != "q2" else "number") for q in replies]
    evaluator = Evaluator(StubEngine(replies), transcribe=fake_judge, speak_reference=fake_tts)
    t2m = evaluate(evaluator, items, ["T2M"], progress=False).report["modes"]["T2M"]
    # q0: text wrong, speech right; q1: text right, speech wrong; q2: both right
    assert t2m["speech_given_text"] == pytest.approx(1 / 2) and t2m["speech_without_text"] == 1.0
    assert t2m["speech_accuracy_by_category"] == {"arithmetic": 0.5, "number": 1.0}
    assert t2m["text_accuracy_by_category"] == {"arithmetic": 0.5, "number": 1.0}


def test_rescore_judges_stored_results_again(tmp_path, capsys):
    stored = [
        ItemResult(
            "a",
            "T2M",
            None,
            "Twelve minus six is five.",
            True,  # judged before the echo rule
            transcript="twelve minus six is six",
            speech_correct=True,
            word_errors=1,
            reference_words=5,
            reference_transcript="twelve minus six is five",
            reference_speech_correct=True,
            time_to_first_audio=0.1,
            total_time=0.5,
            audio_seconds=1.0,
            voice="v1",
        ),
        ItemResult("b", "T2T", None, "Paris.", False),
    ]
    write_results(stored, tmp_path / "items.jsonl")
    assert read_results(tmp_path / "items.jsonl") == stored
    items = [
        EvalItem("a", "What is twelve minus six?", None, ("6",), "arithmetic"),
        EvalItem("b", "Capital of France?", None, ("Paris",), "capital"),
    ]
    run = rescore(read_results(tmp_path / "items.jsonl"), items)
    a, b = run.results
    assert (a.text_correct, a.speech_correct, a.reference_speech_correct) == (False, True, False)
    assert b.text_correct and a.category == "arithmetic" and a.voice == "v1"
    t2m = run.report["modes"]["T2M"]
    assert t2m["text_accuracy"] == 0.0 and t2m["speech_accuracy"] == 1.0 and t2m["asr_wer"] == 0.2
    assert run.report["real_time_factor"] == 0.5 and list(run.report["modes"]) == ["T2M", "T2T"]
    # the CLI: no checkpoint, no generation
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "a", "text": "What is twelve minus six?", "answers": ["6"]})
        + "\n"
        + json.dumps({"id": "b", "text": "Capital of France?", "answers": ["Paris"]})
        + "\n"
    )
    report = main(["--manifest", str(manifest), "--rescore", str(tmp_path / "items.jsonl"), "--json"])
    assert json.loads(capsys.readouterr().out)["rescored"] == str(tmp_path / "items.jsonl")
    assert report["modes"]["T2T"]["text_accuracy"] == 1.0 and report["modes"]["T2M"]["text_accuracy"] == 0.0
    with pytest.raises(ValueError, match="not in the manifest"):
        rescore(stored, items[:1])
    with pytest.raises(SystemExit):
        main(["--manifest", str(manifest)])  # neither --checkpoint nor --rescore


def test_harness_counts_refused_inputs_as_wrong(tmp_path):
    evaluator = Evaluator(StubEngine({}), transcribe=fake_judge, speak_reference=fake_tts)
    run = evaluate(evaluator, [EvalItem("r", "refuse", None, ("7",))], ["T2T"], progress=False)
    assert run.report["modes"]["T2T"]["text_accuracy"] == 0.0 and run.report["modes"]["T2T"]["errors"] == 1
    assert run.results[0].error == "InputError: no"
    textonly = StubEngine({})
    textonly.codec = None
    with pytest.raises(ValueError, match="no speech detokenizer"):
        evaluate(Evaluator(textonly, transcribe=fake_judge, speak_reference=fake_tts), [], ["T2M"])
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate(evaluator, [], ["S2X"])


def test_breakdown_by_heldout_and_voice_by_hand(tmp_path):
    from training.eval.__main__ import full_table
    from training.eval.breakdown import format_breakdown, heldout_group, plot_breakdown

    assert heldout_group(["voice", "phrasing", "voice"]) == "phrasing+voice"
    assert heldout_group([]) == "none" and heldout_group(None) is None
    # a: right text, wrong speech; b: both wrong; c: both right (as in ITEMS); d: not described
    replies = {name: reply for name, _, reply in ITEMS} | {"d": "x"}
    described = {"a": ("v1", ()), "b": ("v2", ("voice", "phrasing")), "c": ("v2", ("phrasing", "voice"))}
    items = [
        EvalItem(name, name, tmp_path / name, tuple(answers), "cat", voice=described[name][0],
                 heldout=described[name][1])
        for name, answers, _ in ITEMS
    ] + [EvalItem("d", "d", None, ("x",), "other")]  # fmt: skip
    evaluator = Evaluator(StubEngine(replies), transcribe=fake_judge, speak_reference=fake_tts)
    run = evaluate(evaluator, items, ["S2M", "T2T"], progress=False)
    s2m, t2t = run.report["modes"]["S2M"], run.report["modes"]["T2T"]
    # "none" = {a}; "phrasing+voice" = {b, c}, whatever order the factors were listed in; d has none
    assert s2m["by_heldout"] == {
        "none": {"n": 1, "text_accuracy": 1.0, "speech_accuracy": 0.0},
        "phrasing+voice": {"n": 2, "text_accuracy": 0.5, "speech_accuracy": 0.5},
    }
    assert t2t["by_heldout"] == {
        "none": {"n": 1, "text_accuracy": 1.0},
        "phrasing+voice": {"n": 2, "text_accuracy": 0.5},
    }
    assert t2t["by_voice"] == {"v1": {"n": 1, "text_accuracy": 1.0}, "v2": {"n": 2, "text_accuracy": 0.5}}
    by_key = {(r.id, r.mode): r for r in run.results}
    assert by_key[("b", "T2T")].heldout == ["voice", "phrasing"] and by_key[("b", "T2T")].voice == "v2"
    assert by_key[("d", "T2T")].heldout is None
    table = format_breakdown(run.report)
    assert table.splitlines()[0] == "| mode | none | phrasing+voice |"
    assert "| S2M | 100.0 (1) | 50.0 (2) |" in table and "| T2T | 100.0 (1) | 50.0 (2) |" in table
    assert "| v1 | v2 |" in full_table(run.report)
    png = plot_breakdown(run.report, tmp_path / "plots" / "heldout.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a manifest that does not describe its items has no breakdown (and no plot)
    plain = evaluate(evaluator, items[3:], ["T2T"], progress=False)
    assert "by_heldout" not in plain.report["modes"]["T2T"] and format_breakdown(plain.report) == ""
    with pytest.raises(ValueError, match="heldout"):
        plot_breakdown(plain.report, tmp_path / "none.png")


def test_breakdown_by_vocabulary_by_hand(tmp_path):
    from training.eval.__main__ import full_table
    from training.eval.breakdown import KNOWN_WORDS, NEW_WORD, new_words, training_vocabulary

    train = write_manifest(
        tmp_path / "train.jsonl",
        [
            {"id": "t1", "text": "What is three plus four?", "reply_text": "Seven."},
            {"id": "t2", "text": "Thank you!", "reply_text": "You are welcome!", "history": [
                {"text": "Hello there", "reply_text": "Hi!"}]},
            {"id": "t3", "audio": "t3.wav", "reply_text": "A reply to speech with no transcript."},
        ],
    )  # fmt: skip
    vocab = training_vocabulary(train)
    assert vocab == {"what", "is", "three", "plus", "four", "thank", "you", "hello", "there"}
    assert new_words("What is 3 plus FOUR?", vocab) == ()  # normalised as the scorer does: 3 = three
    assert new_words("Many thanks, you!", vocab) == ("many", "thanks")
    assert new_words(None, vocab) is None and new_words("hello", None) is None
    with pytest.raises(ValueError, match="no question text"):
        training_vocabulary(
            write_manifest(tmp_path / "none.jsonl", [{"id": "x", "audio": "x.wav", "reply_text": "r"}])
        )
    items = read_eval_manifest(
        write_manifest(
            tmp_path / "test.jsonl",
            [
                {"id": "1", "text": "Hello there!", "answers": []},
                {"id": "2", "text": "Many thanks!", "answers": []},
            ],
        ),
        vocabulary=vocab,
    )
    assert [i.new_words for i in items] == [(), ("many", "thanks")]
    assert read_eval_manifest(tmp_path / "test.jsonl")[0].new_words is None  # no vocabulary: unknown

    # a: right text, wrong speech, known words; b: both wrong, c: both right, both with a new word;
    # d: vocabulary unknown (left out of the groups)
    replies = {name: reply for name, _, reply in ITEMS} | {"d": "x"}
    unseen = {"a": (), "b": ("lyon",), "c": ("seventeen",)}
    items = [
        EvalItem(name, name, tmp_path / name, tuple(answers), "cat", new_words=unseen[name])
        for name, answers, _ in ITEMS
    ] + [EvalItem("d", "d", None, ("x",), "other")]
    evaluator = Evaluator(StubEngine(replies), transcribe=fake_judge, speak_reference=fake_tts)
    run = evaluate(evaluator, items, ["S2M", "T2T"], progress=False)
    assert run.report["modes"]["S2M"]["by_vocabulary"] == {
        KNOWN_WORDS: {"n": 1, "text_accuracy": 1.0, "speech_accuracy": 0.0},
        NEW_WORD: {"n": 2, "text_accuracy": 0.5, "speech_accuracy": 0.5},
    }
    assert list(run.report["modes"]["T2T"]["by_vocabulary"]) == [KNOWN_WORDS, NEW_WORD]
    assert {(r.id, tuple(r.new_words or ())) for r in run.results if r.mode == "T2T"} >= {("b", ("lyon",))}
    assert "| T2T | 100.0 (1) | 50.0 (2) |" in full_table(run.report).split("question's words")[1]


def test_history_is_passed_in_the_modes_input_modality(tmp_path):
    engine = StubEngine({"q": "x", "q.wav": "x"})
    item = EvalItem("m", "q", tmp_path / "q.wav", ("x",), history=(("hello", tmp_path / "h.wav", "Hi!"),))
    evaluate(
        Evaluator(engine, transcribe=fake_judge, speak_reference=fake_tts), [item], ["T2T", "S2T"], False
    )
    assert [r.sampling.audio_views for r in engine.requests] == [1, 3]  # the engine's, per mode
    t2t, s2t = (r.history[0] for r in engine.requests)
    assert (t2t.user_text, t2t.user_audio, t2t.assistant_text) == ("hello", None, "Hi!")
    assert (s2t.user_text, s2t.user_audio, s2t.assistant_text) == ("hello", str(tmp_path / "h.wav"), "Hi!")


def test_read_manifest_and_modes(tmp_path):
    manifest = tmp_path / "sub" / "m.jsonl"
    manifest.parent.mkdir()
    history = [{"text": "hello", "audio": "h.wav", "reply_text": "Hi!", "reply_audio": "r.wav"}]
    lines = [
        {"id": "q1", "audio": "a.wav", "text": "hi", "answers": ["hello"], "category": "smalltalk", "x": 1},
        {"id": 2, "text": "what", "answers": [], "history": history, "voice": "v", "heldout": []},
    ]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = read_eval_manifest(manifest)
    assert items[0] == EvalItem("q1", "hi", manifest.parent / "a.wav", ("hello",), "smalltalk")
    assert items[1].id == "2" and items[1].audio is None and len(read_eval_manifest(manifest, limit=1)) == 1
    assert items[1].history == (("hello", manifest.parent / "h.wav", "Hi!"),) and items[0].history == ()
    assert (items[1].voice, items[1].heldout) == ("v", ()) and items[0].heldout is None
    manifest.write_text('{"id": "x"}\n')
    with pytest.raises(ValueError, match="m.jsonl:1"):
        read_eval_manifest(manifest)
    assert parse_modes(["s2m,T2T", "S2M"]) == ["S2M", "T2T"]
    assert parse_modes(["all"]) == ["S2M", "S2T", "T2M", "T2T", "STC", "SAC", "SUC"]


def write_manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
