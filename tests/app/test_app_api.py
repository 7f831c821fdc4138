"""The named endpoints through gradio_client, against a live app on a loopback port."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import soundfile as sf

from core.modes import MODE_NAMES, MODES
from tests.app.conftest import QUESTION, REPLY

# gradio's queue statistics use a pandas option pandas 3 deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def chat(client, mode, question_wav, conversation_id="", **sampling):
    from gradio_client import handle_file

    speech = MODES[mode].speech_input
    audio = handle_file(question_wav) if speech else None
    text = None if speech else QUESTION
    return client.predict(text, audio, mode, conversation_id, "", sampling, api_name="/chat")


def test_the_api_lists_the_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/chat", "/compare", "/vote", "/feedback"} <= set(endpoints)
    params = [p["parameter_name"] for p in endpoints["/chat"]["parameters"]]
    assert params == ["message", "audio", "mode", "conversation_id", "checkpoint", "sampling"]


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_chat_in_every_mode(client, server, question_wav, mode):
    m = MODES[mode]
    result, audio = chat(client, mode, question_wav)
    assert result["status"] == "done" and result["mode"] == mode and result["reply_text"] == REPLY
    assert result["transcript"] == (QUESTION if m.has_transcript else "")
    assert result["draft"] == (REPLY if m.has_draft else "")
    assert result["timings"]["time_to_first_text_ms"] > 0
    if m.speech_output:
        samples, rate = sf.read(audio)
        assert Path(audio).suffix == ".wav" and rate == 16000
        assert abs(len(samples) / rate - result["audio_seconds"]) < 0.01 and result["speech_tokens"] > 0
    else:
        assert audio is None and result["speech_tokens"] == 0
    turn = server[1].repo.get_turn(result["turn_id"])
    assert turn.status == "done" and turn.mode == mode and turn.reply_text == REPLY
    assert turn.conversation_id == result["conversation_id"]
    assert (turn.user_audio_path is not None) == m.speech_input and bool(
        turn.speech_tokens
    ) == m.speech_output


def test_chat_streams_progress_and_continues_a_conversation(client, server, question_wav):
    from gradio_client import handle_file

    job = client.submit(None, handle_file(question_wav), "S2M", "", "", {}, api_name="/chat")
    progress = [result for result, _ in job]
    first = job.result()[0]
    assert any(r["status"] == "running" for r in progress) and first["status"] == "done"
    second, _ = chat(client, "T2T", question_wav, conversation_id=first["conversation_id"], max_new_steps=50)
    turns = server[1].repo.history(first["conversation_id"])
    assert [t.id for t in turns] == [first["turn_id"], second["turn_id"]]
    assert turns[1].sampling["max_new_steps"] == 50


def test_compare_vote_and_feedback(client, server, question_wav):
    from gradio_client import handle_file

    result, audio_a, audio_b = client.predict(
        QUESTION, handle_file(question_wav), "S2M", "T2M", "", "", {}, api_name="/compare"
    )
    assert result["labels"] == {"A": "S2M", "B": "T2M"} and result["comparison_id"]
    assert result["A"]["reply_text"] == REPLY and result["B"]["reply_text"] == REPLY
    assert Path(audio_a).is_file() and Path(audio_b).is_file()
    vote = client.predict(result["comparison_id"], "B", "more natural", api_name="/vote")
    assert vote["vote"] == "B" and (vote["label_a"], vote["label_b"]) == ("S2M", "T2M")
    repo = server[1].repo
    record = repo.get_comparison(result["comparison_id"])
    assert record.vote == "B" and record.comment == "more natural" and not record.blinded
    assert (record.turn_a_id, record.turn_b_id) == (result["A"]["turn_id"], result["B"]["turn_id"])
    assert repo.get_turn(record.turn_a_id).mode == "S2M" and repo.get_turn(record.turn_b_id).mode == "T2M"
    feedback = client.predict(result["A"]["turn_id"], "dislike", "too fast", api_name="/feedback")
    assert feedback["rating"] == -1
    assert [(f.rating, f.comment) for f in repo.list_feedback(result["A"]["turn_id"])] == [(-1, "too fast")]


def test_bad_requests_raise_readable_errors(client, tmp_path, question_wav):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("hello, this is text\n" * 10)
    cases = [
        ((None, None, "S2M", "", "", {}), "/chat", "Nothing to answer yet"),
        ((None, handle_file(str(not_audio)), "S2M", "", "", {}), "/chat", "not an audio recording"),
        ((QUESTION, None, "T2M", "no-such-id", "", {}), "/chat", "Unknown conversation"),
        ((QUESTION, None, "T2M", "", "", {"top_p": 0}), "/chat", "Invalid sampling settings"),
        ((QUESTION, None, "T2M", "", "", {"warmth": 1}), "/chat", "Unknown sampling settings: warmth"),
        ((QUESTION, None, "T2T", "T2T", "", "", {}), "/compare", "Pick two different modes"),
        (("no-such-comparison", "A", ""), "/vote", "Unknown comparison"),
        (("x", "maybe", ""), "/feedback", "rating must be"),
    ]
    for args, endpoint, expected in cases:
        with pytest.raises(AppError, match=expected):
            client.predict(*args, api_name=endpoint)
    result, _ = chat(client, "S2T", question_wav)  # still serving
    assert result["status"] == "done"


def test_vote_needs_finished_turns_and_is_not_repeated(client):
    result, _, _ = client.predict(QUESTION, None, "T2T", "T2M", "", "", {}, api_name="/compare")
    from gradio_client.exceptions import AppError

    client.predict(result["comparison_id"], "tie", "", api_name="/vote")
    with pytest.raises(AppError, match="already has vote"):
        client.predict(result["comparison_id"], "A", "", api_name="/vote")
    with pytest.raises(AppError, match="vote must be one of"):
        client.predict(result["comparison_id"], "C", "", api_name="/vote")


def test_several_clients_at_once(server, question_wav):
    from gradio_client import Client

    results, errors = [], []

    def session(i):
        try:
            client = Client(server[0], verbose=False)
            mode = MODE_NAMES[i % len(MODE_NAMES)]
            results.append(chat(client, mode, question_wav)[0])
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 4
    assert all(r["status"] == "done" and r["reply_text"] == REPLY for r in results)
    assert len({r["conversation_id"] for r in results}) == 4
