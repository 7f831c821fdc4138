"""The Chat and Compare callbacks driven directly (no server): streaming, storage, stop, votes."""

from __future__ import annotations

import random
import threading
import time
from types import SimpleNamespace

import pytest

from app.handlers import CHAT_OUTPUTS, COMPARE_OUTPUTS, ChatHandlers, ChatState, CompareHandlers
from core.modes import MODE_NAMES, MODES
from tests.app.conftest import QUESTION, REPLY, request_of

# gr.Warning outside a running app turns into a Python warning: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")

CHAT = {name: i for i, name in enumerate(CHAT_OUTPUTS)}
COMPARE = {name: i for i, name in enumerate(COMPARE_OUTPUTS)}


def run_chat(handlers, mode, question_wav, state=None, session="session-1", **kwargs):
    """All yields of one chat turn."""
    speech = MODES[mode].speech_input
    text = kwargs.pop("text", None if speech else QUESTION)
    audio = kwargs.pop("audio", question_wav if speech else None)
    return list(handlers.submit(request_of(session), state, [], mode, text, audio, None, **kwargs))


def is_update(value, **props):
    return isinstance(value, dict) and all(value.get(k) == v for k, v in props.items())


class SlowEngine:
    """Wraps the real engine and pauses between events, so a test can stop a turn midway."""

    def __init__(self, engine, pause: float = 0.05, fail_after: int | None = None):
        self._engine, self.pause, self.fail_after = engine, pause, fail_after

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, request, cancel=None):
        for i, event in enumerate(self._engine.stream(request, cancel=cancel)):
            if self.fail_after is not None and i >= self.fail_after:
                raise RuntimeError("simulated engine crash")
            time.sleep(self.pause)
            yield event


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_chat_turn_in_every_mode_streams_and_is_stored(ctx, question_wav, mode):
    m = MODES[mode]
    outputs = run_chat(ChatHandlers(ctx), mode, question_wav)
    first, final = outputs[0], outputs[-1]
    assert first[CHAT["status"]] == "Generating…"
    assert is_update(first[CHAT["send"]], interactive=False) and is_update(
        first[CHAT["stop"]], interactive=True
    )
    assert is_update(final[CHAT["send"]], interactive=True) and is_update(
        final[CHAT["stop"]], interactive=False
    )
    assert final[CHAT["status"]] == ""
    # text streamed into the chat before the end
    partial = [o[CHAT["chatbot"]] for o in outputs[1:-1] if isinstance(o[CHAT["chatbot"]], list)]
    assert partial, "no streaming updates"
    chat = final[CHAT["chatbot"]]
    assert chat[0]["role"] == "user"
    replies = [msg for msg in chat if msg["role"] == "assistant" and isinstance(msg["content"], str)]
    assert any(msg["content"].startswith(REPLY) for msg in replies)
    titles = [msg.get("metadata", {}).get("title", "") for msg in chat]
    assert any("Transcript" in t for t in titles) == m.has_transcript
    assert any("Text response" in t for t in titles) == m.has_draft
    # audio streamed as WAV chunks while the text was written (speech modes only)
    chunks = [o[CHAT["reply_audio"]] for o in outputs if isinstance(o[CHAT["reply_audio"]], bytes)]
    assert bool(chunks) == m.speech_output
    assert all(c.startswith(b"RIFF") for c in chunks)
    assert ("first audio" in final[CHAT["metrics"]]) == m.speech_output and "first text" in final[
        CHAT["metrics"]
    ]
    # the database row
    state = final[CHAT["state"]]
    (turn,) = ctx.repo.history(state.conversation_id)
    assert turn.status == "done" and turn.mode == mode and turn.reply_text == REPLY
    assert turn.system_prompt == m.system_prompt and turn.checkpoint_id == ctx.default_checkpoint
    assert (turn.user_audio_path is not None) == m.speech_input
    assert turn.user_text == (None if m.speech_input else QUESTION)
    assert turn.transcript == (QUESTION if m.has_transcript else None)
    assert turn.draft_text == (REPLY if m.has_draft else None)
    assert (
        bool(turn.speech_tokens) == m.speech_output and (turn.reply_audio_path is not None) == m.speech_output
    )
    assert turn.time_to_first_text_ms > 0 and turn.sampling["temperature"] == 0.0
    assert (turn.time_to_first_audio_ms is not None) == m.speech_output
    assert (turn.real_time_factor is not None) == m.speech_output
    assert set(state.turn_of_message.values()) == {turn.id}


def test_conversation_continues_and_new_conversation_resets(ctx, question_wav):
    chat = ChatHandlers(ctx)
    first = run_chat(chat, "T2T", question_wav)[-1]
    state = first[CHAT["state"]]
    second = list(chat.submit(request_of(), state, first[CHAT["chatbot"]], "S2T", None, question_wav, None))[
        -1
    ]
    turns = ctx.repo.history(state.conversation_id)
    assert [t.turn_index for t in turns] == [0, 1] and [t.mode for t in turns] == ["T2T", "S2T"]
    assert len(second[CHAT["chatbot"]]) > len(first[CHAT["chatbot"]])
    cleared = chat.new_conversation(request_of())
    assert cleared[0] == [] and isinstance(cleared[4], ChatState) and cleared[4].conversation_id is None


def test_sampling_settings_are_used_and_stored(ctx, question_wav):
    values = (0.7, 0.9, 20, 0.5, 0.95, 10, 1.2, 123, 40, 2, 0.5)  # handlers.SAMPLING_FIELDS order
    final = list(ChatHandlers(ctx).submit(request_of(), None, [], "T2M", QUESTION, None, None, *values))[-1]
    (turn,) = ctx.repo.history(final[CHAT["state"]].conversation_id)
    assert (
        turn.sampling["temperature"] == 0.7 and turn.sampling["top_k"] == 20 and turn.sampling["seed"] == 123
    )
    assert (
        turn.sampling["max_new_steps"] == 40 and turn.sampling["audio_views"] == 2 and turn.status == "done"
    )
    assert turn.sampling["text_guide"] == 0.5


def test_stop_button_stores_the_turn_as_cancelled(make_ctx, engine, question_wav):
    ctx = make_ctx({engine.checkpoint_id: SlowEngine(engine)})
    chat = ChatHandlers(ctx)
    outputs = []
    for output in chat.submit(request_of("s"), None, [], "S2M", None, question_wav, None):
        outputs.append(output)
        if len(outputs) == 2:
            (running,) = ctx.repo.list_turns()  # the row exists before the reply is complete
            assert running.status == "running" and running.reply_text is None
            assert chat.stop(request_of("s")) == "Stopping…"
    final = outputs[-1]
    assert "stored as *cancelled*" in final[CHAT["status"]]
    (turn,) = ctx.repo.history(final[CHAT["state"]].conversation_id)
    assert turn.status == "cancelled" and turn.finished_at is not None
    assert chat.stop(request_of("s")) == ""  # nothing running any more


def test_like_and_dislike_with_comment(ctx, question_wav):
    chat = ChatHandlers(ctx)
    final = run_chat(chat, "T2M", question_wav)[-1]
    state = final[CHAT["state"]]
    reply_index = max(state.turn_of_message)
    status, comment = chat.feedback(
        SimpleNamespace(index=reply_index, liked=True), state, "  clear and short "
    )
    assert "Liked" in status and comment == ""
    status, _ = chat.feedback(SimpleNamespace(index=[reply_index, 0], liked=False), state, "")
    assert "Disliked" in status
    feedback = ctx.repo.list_feedback(state.last_turn_id)
    assert [(f.rating, f.comment) for f in feedback] == [(1, "clear and short"), (-1, None)]
    status, _ = chat.feedback(SimpleNamespace(index=0, liked=True), state, "")  # the user's own message
    assert "Only finished replies" in status


def test_engine_crash_is_stored_as_error_and_the_app_keeps_serving(make_ctx, engine, question_wav):
    broken = SlowEngine(engine, pause=0, fail_after=3)
    ctx = make_ctx({"broken": broken, engine.checkpoint_id: engine})
    chat = ChatHandlers(ctx)
    final = list(chat.submit(request_of("a"), None, [], "T2M", QUESTION, None, "broken"))[-1]
    assert "simulated engine crash" in final[CHAT["status"]]
    assert any("⚠️" in str(m["content"]) for m in final[CHAT["chatbot"]])
    (turn,) = ctx.repo.history(final[CHAT["state"]].conversation_id)
    assert turn.status == "error" and "simulated engine crash" in turn.error_message
    # another session (and the same one) still get answers
    other = list(chat.submit(request_of("b"), None, [], "T2M", QUESTION, None, engine.checkpoint_id))[-1]
    assert (
        other[CHAT["status"]] == ""
        and ctx.repo.history(other[CHAT["state"]].conversation_id)[0].status == "done"
    )


def test_compare_streams_both_sides_then_votes_reveal_the_modes(ctx, question_wav):
    compare = CompareHandlers(ctx, rng=random.Random(1))
    outputs = list(compare.run(request_of(), None, QUESTION, question_wav, "S2M", "STC", None, None, True))
    first, final = outputs[0], outputs[-1]
    votes = [COMPARE[k] for k in ("vote_a", "vote_b", "vote_tie", "vote_both_bad")]
    assert all(is_update(first[i], interactive=False) for i in votes)  # no vote before both finish
    assert all(
        is_update(o[i], interactive=False) or o[i] == {"__type__": "update"}
        for o in outputs[:-1]
        for i in votes
    )
    assert all(is_update(final[i], interactive=True) for i in votes)
    assert any(isinstance(o[COMPARE["audio_a"]], bytes) for o in outputs)
    assert any(isinstance(o[COMPARE["audio_b"]], bytes) for o in outputs)
    assert REPLY in final[COMPARE["text_a"]] and REPLY in final[COMPARE["text_b"]]
    assert final[COMPARE["reveal"]] is not None and "S2M" not in str(final[COMPARE["reveal"]])  # blinded
    state = final[COMPARE["state"]]
    assert sorted(state.labels.values()) == ["S2M", "STC"]
    status, reveal, state, *buttons, comment = compare.vote(state, "B", "B sounded better")
    assert "Vote stored" in status and "Your vote: B is better" in reveal
    assert state.titles["A"] in reveal and state.titles["B"] in reveal and comment == ""
    assert all(is_update(b, interactive=False) for b in buttons)
    record = ctx.repo.get_comparison(state.comparison_id)
    assert record.vote == "B" and record.comment == "B sounded better" and record.blinded
    assert {record.label_a, record.label_b} == {"S2M", "STC"}
    for side in ("A", "B"):
        turn = ctx.repo.get_turn(state.turn_ids[side])
        assert turn.status == "done" and turn.mode == state.labels[side] and turn.speech_tokens
    again = compare.vote(state, "A", "")
    assert "already voted" in again[0] and ctx.repo.get_comparison(state.comparison_id).vote == "B"
    cleared = compare.next_round(request_of())
    assert cleared[COMPARE["state"]].comparison_id is None


def test_compare_sides_are_shuffled_only_when_blinded(ctx, question_wav):
    compare = CompareHandlers(ctx, rng=random.Random(0))
    labels = set()
    for _ in range(4):
        final = list(compare.run(request_of(), None, QUESTION, None, "T2T", "T2M", None, None, False))[-1]
        state = final[COMPARE["state"]]
        assert (state.labels["A"], state.labels["B"]) == ("T2T", "T2M")
        assert "**A** was Text-to-Text (T2T)" in final[COMPARE["reveal"]] or final[COMPARE["reveal"]] == {
            "__type__": "update"
        }
    for _ in range(6):
        final = list(compare.run(request_of(), None, QUESTION, None, "T2T", "T2M", None, None, True))[-1]
        labels.add(final[COMPARE["state"]].labels["A"])
    assert labels == {"T2T", "T2M"}


def test_stopped_compare_round_cannot_be_voted(make_ctx, engine, question_wav):
    ctx = make_ctx({engine.checkpoint_id: SlowEngine(engine)})
    compare = CompareHandlers(ctx)
    outputs = []
    for output in compare.run(request_of("c"), None, None, question_wav, "S2M", "S2T", None, None, True):
        outputs.append(output)
        if len(outputs) == 2:
            compare.stop(request_of("c"))
    final = outputs[-1]
    assert "No vote for this round" in final[COMPARE["status"]]
    votes = [COMPARE[k] for k in ("vote_a", "vote_b", "vote_tie", "vote_both_bad")]
    assert all(is_update(final[i], interactive=False) for i in votes)
    assert final[COMPARE["state"]].comparison_id is None
    assert "Nothing to vote on" in compare.vote(final[COMPARE["state"]], "A", "")[0]
    assert ctx.repo.stats().comparisons == 0


def test_two_sessions_at_once_do_not_disturb_each_other(make_ctx, engine, question_wav):
    ctx = make_ctx({engine.checkpoint_id: SlowEngine(engine, pause=0.01)})
    chat = ChatHandlers(ctx)
    results = {}

    def session(name, mode, text, audio):
        results[name] = list(chat.submit(request_of(name), None, [], mode, text, audio, None))[-1]

    threads = [
        threading.Thread(target=session, args=("good-1", "S2M", None, question_wav)),
        threading.Thread(target=session, args=("bad", "S2M", None, b"not audio at all")),
        threading.Thread(target=session, args=("good-2", "T2M", QUESTION, None)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert "not an audio recording" in results["bad"][CHAT["status"]]
    for name in ("good-1", "good-2"):
        assert results[name][CHAT["status"]] == ""
        (turn,) = ctx.repo.history(results[name][CHAT["state"]].conversation_id)
        assert turn.status == "done" and turn.reply_text == REPLY
    assert ctx.repo.stats().turns == 2


def test_turns_left_running_by_a_crash_become_errors_at_start(tiny, tmp_path):
    from app.context import AppContext
    from storage import Repository

    url = f"sqlite:///{tmp_path / 'crash.sqlite3'}"
    with Repository(url, tmp_path / "data") as repo:
        conversation = repo.create_conversation("tiny")
        turn_id = repo.start_turn(conversation, "S2M", "prompt", user_text="hi")  # then the process died
    ctx = AppContext.load([str(tiny[0])], db_url=url, data_dir=tmp_path / "data")
    try:
        turn = ctx.repo.get_turn(turn_id)
        assert turn.status == "error" and "interrupted" in turn.error_message
    finally:
        ctx.close()


def test_a_checkpoint_that_cannot_answer_is_refused_at_start(tiny, tmp_path, monkeypatch):
    """Loading warms each engine up; a failure there stops the start with a readable error."""
    from app.context import AppContext
    from core.checkpoint import CheckpointError
    from core.engine import VoiceChatEngine

    def broken(self):
        raise RuntimeError("the codec's decoder is missing a layer")

    monkeypatch.setattr(VoiceChatEngine, "warm_up", broken)
    with pytest.raises(
        CheckpointError, match="could not answer a first made-up request: RuntimeError: the codec"
    ):
        AppContext.load(
            [str(tiny[0])], db_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", data_dir=tmp_path / "data"
        )


def test_without_audio_streaming_the_whole_reply_comes_at_the_end(make_ctx, question_wav):
    ctx = make_ctx(stream_audio=False)  # what app.py does when ffmpeg is missing
    outputs = run_chat(ChatHandlers(ctx), "S2M", question_wav)
    assert not any(isinstance(o[CHAT["reply_audio"]], bytes) for o in outputs)
    rate, samples = outputs[-1][CHAT["reply_audio"]]
    assert rate == 16000 and len(samples) / rate > 1.0


def test_settings_start_from_each_checkpoints_recommended_ones(make_ctx, engine):
    """The page's sliders show what the default checkpoint's generation_config.json recommends and
    follow the chat's mode and checkpoint; the API fills what a script leaves out from the chosen
    checkpoint's settings for the mode."""
    import copy
    import dataclasses

    from app.api import ApiHandlers
    from app.handlers import SAMPLING_FIELDS, sampling_from_values
    from app.ui import build_app
    from core.sampling import ModeSampling, SamplingConfig

    s2t = SamplingConfig(audio_views=3, text_guide=0.25, seed=5)
    other = copy.copy(engine)
    other.checkpoint_id, other.sampling = "other", ModeSampling(SamplingConfig(text_guide=0.25), {"S2T": s2t})
    ctx = make_ctx({engine.checkpoint_id: engine, "other": other})
    api = ApiHandlers(ctx)
    assert api._sampling({"temperature": 0.5}, "other", "S2T") == dataclasses.replace(s2t, temperature=0.5)
    assert api._sampling({}, "other", "S2M") == SamplingConfig(text_guide=0.25)
    assert api._sampling({}, None, "S2T") == SamplingConfig()
    assert sampling_from_values((), 50, s2t) == dataclasses.replace(s2t, max_new_steps=50)
    values = dict(zip(SAMPLING_FIELDS, ChatHandlers(ctx).recommended_sampling("S2T", "other"), strict=True))
    assert (values["audio_views"], values["text_guide"], values["seed"]) == (3, 0.25, 5)
    values = dict(zip(SAMPLING_FIELDS, ChatHandlers(ctx).recommended_sampling("S2T", None), strict=True))
    assert (values["audio_views"], values["seed"]) == (1, -1)

    demo = build_app(make_ctx({"other": other, engine.checkpoint_id: engine}))
    guides = [b for b in demo.blocks.values() if str(getattr(b, "label", "")).startswith("S2M/T2M: let")]
    assert len(guides) == 2 and all(b.value == 0.25 for b in guides)  # the chat tab's and the compare tab's
