"""Manifest and preference-pair parsing: relative paths, round trips, errors with line numbers."""

from __future__ import annotations

import json

import pytest

from core.modes import PROMPT_STC
from tests.training.data.audio_files import write_lines, write_wav
from training.data.com_mixing import preference_samples
from training.data.manifest import (
    ManifestError,
    read_manifest,
    read_preference_pairs,
    write_manifest,
)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name in ("wav/u1.wav", "wav/r1.wav", "wav/h1.wav"):
        write_wav(root / name)
    write_wav(tmp_path / "shared" / "u2.wav")
    return root


def test_paths_resolve_against_the_manifest_folder(corpus, tmp_path):
    manifest = write_lines(
        corpus / "train.jsonl",
        [
            {
                "id": "a",
                "text": "hi",
                "audio": "wav/u1.wav",
                "reply_text": "hello",
                "reply_audio": "wav/r1.wav",
                "reply_tokens": None,
                "system": None,
                "history": [{"text": "before", "audio": "wav/h1.wav", "reply_text": "ok", "mood": "calm"}],
                "answers": ["hello", "hi"],
                "category": "greeting",
                "voice": "slt",
                "difficulty": 3,  # unknown key: kept
            },
            "",  # blank lines are skipped
            {"id": 7, "audio": "../shared/u2.wav", "reply_text": "yes", "reply_tokens": [1, 2, 3]},
        ],
    )
    a, b = read_manifest(manifest)
    assert a.audio == (corpus / "wav/u1.wav").resolve() and a.audio.is_absolute()
    assert a.reply_audio == (corpus / "wav/r1.wav").resolve()
    assert a.history[0].audio == (corpus / "wav/h1.wav").resolve() and a.history[0].reply_text == "ok"
    assert a.history[0].extra == {"mood": "calm"}
    assert (a.answers, a.category, a.voice, a.extra) == (
        ["hello", "hi"],
        "greeting",
        "slt",
        {"difficulty": 3},
    )
    assert a.audio_paths() == [a.history[0].audio, a.audio]
    assert b.id == "7" and b.text is None and b.reply_tokens == [1, 2, 3]
    assert b.audio == (tmp_path / "shared/u2.wav").resolve()
    assert b.where.endswith("train.jsonl:3")

    # written elsewhere: paths become relative to the new folder, unknown keys survive
    moved = write_manifest([a, b], tmp_path / "out" / "deep" / "m.jsonl")
    record = json.loads(moved.read_text().splitlines()[0])
    assert record["audio"] == "../../corpus/wav/u1.wav" and record["difficulty"] == 3
    assert read_manifest(moved) == [a, b]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"id": "x", "text": "hi"}, "missing required key 'reply_text'"),
        ({"text": "hi", "reply_text": "yo"}, "missing required key 'id'"),
        ({"id": "x", "reply_text": "yo"}, "needs the user's 'text' or 'audio'"),
        ({"id": "x", "text": "hi", "reply_text": 5}, "'reply_text' must be a string"),
        ({"id": "x", "text": "hi", "reply_text": "yo", "reply_tokens": [1, -2]}, "non-negative integers"),
        ({"id": "x", "text": "hi", "reply_text": "yo", "history": {}}, "'history' must be a list"),
        ({"id": "x", "text": "hi", "reply_text": "yo", "history": [{"text": "a"}]}, r"history\[0\]: missing"),
        ({"id": "x", "audio": "wav/missing.wav", "reply_text": "yo"}, "audio file not found"),
        ({"id": "a", "text": "again", "reply_text": "yo"}, r"duplicate id 'a' \(first at .*m.jsonl:1\)"),
        (
            {"id": "x", "text": "hi", "reply_text": "yo", "text_target": "no"},
            "'text_target' must be true or false",
        ),
    ],
)
def test_errors_name_the_line(tmp_path, line, message):
    good = {"id": "a", "text": "hi", "reply_text": "hello"}
    manifest = write_lines(tmp_path / "m.jsonl", [good, "", line])
    with pytest.raises(ManifestError, match=rf"m\.jsonl:3: .*{message}"):
        read_manifest(manifest)


def test_missing_files_can_be_allowed(tmp_path):
    manifest = write_lines(tmp_path / "m.jsonl", [{"id": "a", "audio": "nope.wav", "reply_text": "x"}])
    (item,) = read_manifest(manifest, check_files=False)
    assert item.audio == (tmp_path / "nope.wav").resolve()
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "absent.jsonl")


def pair_record(**chosen_overrides):
    chosen = {
        "turn_id": "t1",
        "mode": "STC",
        "system_prompt": PROMPT_STC,
        "text": "four.",
        "transcript": "two plus two?",
        "draft_text": "four.",
        "speech_tokens": [5, 6, 7],
        "audio": "audio/r1.wav",
    }
    chosen.update(chosen_overrides)
    rejected = {"mode": "s2t", "text": "five."}  # hand-written: minimal keys, any case
    return {
        "id": "c1",
        "prompt": {
            "user_text": None,
            "user_audio": "audio/u1.wav",
            "history": [
                {"role": "user", "text": "hello", "audio": None},
                {"role": "assistant", "text": "hi!"},
            ],
        },
        "chosen": chosen,
        "rejected": rejected,
        "provenance": {"source": "hand", "vote": "A"},
    }


def test_preference_pairs_hand_written(tmp_path):
    data = tmp_path / "data"
    write_wav(data / "audio/u1.wav")
    write_wav(data / "audio/r1.wav")
    pairs_file = write_lines(tmp_path / "exports" / "pairs.jsonl", [pair_record()])
    with pytest.raises(ManifestError, match=r"pairs\.jsonl:1: prompt: user_audio file not found"):
        read_preference_pairs(pairs_file)  # relative to the file's folder by default
    (pair,) = read_preference_pairs(pairs_file, audio_root=data)
    assert pair.prompt.user_audio == (data / "audio/u1.wav").resolve()
    assert pair.chosen.speech_tokens == [5, 6, 7] and pair.rejected.mode == "S2T"
    assert pair.provenance == {"source": "hand", "vote": "A"}

    chosen, rejected = preference_samples(pair, audio_features=lambda path: [1, 2, 3, 4, 5])
    assert (chosen.mode, chosen.transcript, chosen.draft, chosen.reply_speech) == (
        "STC",
        "two plus two?",
        "four.",
        [5, 6, 7],
    )
    assert chosen.system_prompt == PROMPT_STC and chosen.user.speech_tokens == [1, 2, 3, 4, 5]
    assert (rejected.mode, rejected.reply_text, rejected.reply_speech) == ("S2T", "five.", [])
    assert [(h.user.text, h.assistant_text) for h in chosen.history] == [("hello", "hi!")]

    bad = write_lines(tmp_path / "bad.jsonl", [pair_record(mode="XYZ")])
    with pytest.raises(ManifestError, match=r"bad\.jsonl:1: chosen: unknown mode"):
        read_preference_pairs(bad, check_files=False)
    bad = write_lines(tmp_path / "bad2.jsonl", [{"id": "c", "prompt": {}, "chosen": {}, "rejected": {}}])
    with pytest.raises(ManifestError, match=r"bad2\.jsonl:1: the prompt needs"):
        read_preference_pairs(bad)


def test_preference_pairs_from_storage_export(tmp_path):
    """The file `storage.export` writes is read as is (audio relative to the app's data dir)."""
    from storage import Repository
    from storage.export import export_preference_pairs

    data = tmp_path / "data"
    question = write_wav(tmp_path / "q.wav").read_bytes()
    reply = write_wav(tmp_path / "r.wav", frequency=330).read_bytes()
    with Repository(f"sqlite:///{tmp_path / 'app.sqlite3'}", data) as repo:
        turns = {}
        for side, mode in (("a", "S2M"), ("b", "S2T")):
            conversation = repo.create_conversation("ck", session_id="s")
            turn = repo.start_turn(conversation, mode, f"sys {mode}", None, question, None, {"seed": 1})
            repo.finish_turn(
                turn,
                reply_text=f"reply {side}",
                speech_tokens=[1, 2, 3] if mode == "S2M" else None,
                reply_audio=reply if mode == "S2M" else None,
            )
            turns[side] = turn
        repo.vote(repo.create_comparison(turns["a"], turns["b"], "S2M", "S2T"), "A")
        assert export_preference_pairs(repo, tmp_path / "pairs.jsonl") == 1
    (pair,) = read_preference_pairs(tmp_path / "pairs.jsonl", audio_root=data)
    assert pair.prompt.user_audio.is_file() and pair.chosen.audio.is_file()
    assert (pair.chosen.mode, pair.chosen.text, pair.chosen.speech_tokens) == ("S2M", "reply a", [1, 2, 3])
    assert (pair.rejected.mode, pair.rejected.speech_tokens) == ("S2T", None)
    chosen, rejected = preference_samples(pair, audio_features=lambda path: [0] * 7)
    assert (
        chosen.system_prompt == "sys S2M" and chosen.reply_speech == [1, 2, 3] and rejected.reply_speech == []
    )


def test_text_target_defaults_to_true_and_survives_a_round_trip(tmp_path):
    manifest = write_lines(
        tmp_path / "m.jsonl",
        [
            {"id": "a", "text": "hi", "reply_text": "yo"},
            {"id": "b", "text": "hi", "reply_text": "no", "text_target": False},
        ],
    )
    a, b = read_manifest(manifest)
    assert a.text_target and not b.text_target
    assert [i.text_target for i in read_manifest(write_manifest([a, b], tmp_path / "out.jsonl"))] == [
        True,
        False,
    ]
