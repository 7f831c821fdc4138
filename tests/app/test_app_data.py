"""The Data tab: counts, recent turns with playback, win rates, admin-only export and deletion."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.data_tab import TURN_COLUMNS, DataHandlers
from app.handlers import COMPARE_OUTPUTS, ChatHandlers, CompareHandlers
from tests.app.conftest import ADMIN_TOKEN, QUESTION, REPLY, request_of

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")


@pytest.fixture
def voted(ctx, question_wav):
    """One chat turn with a like, and one comparison S2M vs T2M voted for S2M."""
    chat = ChatHandlers(ctx)
    final = list(chat.submit(request_of(), None, [], "S2M", None, question_wav, None))[-1]
    state = final[4]
    chat.feedback(SimpleNamespace(index=max(state.turn_of_message), liked=True), state, "nice")
    compare = CompareHandlers(ctx, rng=random.Random(3))
    result = list(compare.run(request_of(), None, QUESTION, question_wav, "S2M", "T2M", None, None, True))[-1]
    cmp_state = result[COMPARE_OUTPUTS.index("state")]
    winner = next(tag for tag, label in cmp_state.labels.items() if label == "S2M")
    compare.vote(cmp_state, winner, "S2M wins")
    return ctx


def test_counts_win_rates_and_recent_turns(voted, ctx):
    data = DataHandlers(ctx)
    counts, pairs, wins, turns = data.refresh()
    assert "**3** turns" in counts and "**1** comparisons" in counts and "👍 1" in counts
    assert len(pairs) == 1 and sum(pairs[0][1:]) == 1
    assert wins == [["S2M", "T2M", 1, 0, 0, 0, "100%"]]
    assert len(turns) == 3 and all(len(row) == len(TURN_COLUMNS) for row in turns)
    assert {row[1] for row in turns} == {"S2M", "T2M"} and all(row[2] == "done" for row in turns)
    s2m = next(row for row in turns if row[1] == "S2M")
    user_audio, reply_audio, details = data.select_turn(SimpleNamespace(row_value=s2m))
    assert user_audio[0] == 16000 and len(user_audio[1]) > 16000  # playable (rate, samples)
    assert reply_audio[0] == 16000 and details["reply_text"] == REPLY and details["speech_tokens"] > 0


def test_export_needs_the_admin_token(voted, ctx):
    data = DataHandlers(ctx)
    path, status = data.export("wrong")
    assert path is None and "Wrong admin token" in status
    path, status = data.export(ADMIN_TOKEN)
    assert "Exported 1 preference pairs" in status
    (line,) = Path(path).read_text().splitlines()
    pair = json.loads(line)
    assert pair["chosen"]["mode"] == "S2M" and pair["rejected"]["mode"] == "T2M"
    assert pair["chosen"]["speech_tokens"] and pair["provenance"]["comment"] == "S2M wins"


def test_deletion_needs_the_token_and_a_confirmation(voted, ctx):
    data = DataHandlers(ctx)
    assert "Wrong admin token" in data.delete_all("nope", True)
    assert "Tick the confirmation box" in data.delete_all(ADMIN_TOKEN, False)
    assert ctx.repo.stats().turns == 3
    assert "Deleted:" in data.delete_all(ADMIN_TOKEN, True)
    assert ctx.repo.stats().turns == 0 and not list(ctx.repo.audio.files())


def test_admin_actions_are_disabled_without_a_token(make_ctx):
    ctx = make_ctx(admin_token=None)
    data = DataHandlers(ctx)
    assert not ctx.admin_enabled
    path, status = data.export("")
    assert path is None and "disabled" in status and "DRVOICE_ADMIN_TOKEN" in status
    assert "disabled" in data.delete_all("", True)
