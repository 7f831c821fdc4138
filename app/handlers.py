"""Callbacks of the Chat and Compare tabs: plain generators, driven by Gradio or by tests.

Every callback takes the Gradio request first (only its ``session_hash`` is used, to find the
session's stop flag) and the session's ``gr.State`` value; it never raises for bad input: the
message is shown in the tab's status line (and as a toast), and the session carries on. What a
callback yields is a tuple in the order of ``CHAT_OUTPUTS`` / ``COMPARE_OUTPUTS``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.context import AppContext, UserError
from app.streaming import TurnView, user_messages
from app.turns import TurnJob, TurnOutcome, mode_label, prepare_input, run_jobs
from core.audio import AudioInputError
from core.sampling import SamplingConfig

logger = logging.getLogger(__name__)

# Sampling controls, in the order the UI passes them (name, default from SamplingConfig).
SAMPLING_FIELDS: tuple[str, ...] = (
    "temperature",
    "top_p",
    "top_k",
    "speech_temperature",
    "speech_top_p",
    "speech_top_k",
    "repetition_penalty",
    "seed",
    "max_new_steps",
    "audio_views",
    "text_guide",
)
CHAT_OUTPUTS = ("chatbot", "reply_audio", "metrics", "status", "state", "text", "audio", "send", "stop")
COMPARE_OUTPUTS = (
    "text_a", "audio_a", "metrics_a", "text_b", "audio_b", "metrics_b", "status", "reveal", "state",
    "vote_a", "vote_b", "vote_tie", "vote_both_bad", "run", "stop",
)  # fmt: skip
VOTE_LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both bad"}


def session_of(request: Any) -> str:
    """The browser session's id (tests pass any object with ``session_hash``)."""
    return getattr(request, "session_hash", None) or "anonymous"


def sampling_from_values(
    values: Sequence[Any], max_new_steps: int, default: SamplingConfig | None = None
) -> SamplingConfig:
    """SamplingConfig from the UI controls (``SAMPLING_FIELDS`` order); blank or negative seed: none.
    No values: ``default`` (the checkpoint's recommended settings for the mode; ``SamplingConfig()``
    if None).

    Raises:
        UserError: a value out of range (the message names it).
    """
    if not values:
        default = default or SamplingConfig()
        return dataclasses.replace(default, max_new_steps=min(default.max_new_steps, max_new_steps))
    if len(values) != len(SAMPLING_FIELDS):
        raise UserError(f"expected {len(SAMPLING_FIELDS)} sampling values, got {len(values)}")
    settings = dict(zip(SAMPLING_FIELDS, values, strict=True))
    try:
        seed = settings["seed"]
        settings["seed"] = None if seed is None or seed == "" or int(seed) < 0 else int(seed)
        for name in ("top_k", "speech_top_k", "max_new_steps", "audio_views"):
            settings[name] = int(settings[name])
        settings["max_new_steps"] = min(settings["max_new_steps"], max_new_steps)
        return SamplingConfig(**settings)
    except (TypeError, ValueError) as error:
        raise UserError(f"Invalid sampling settings: {error}") from None


def status_message(message: str, kind: str = "warning") -> str:
    """The Markdown of the status line; also shows a toast."""
    if kind == "warning":
        gr.Warning(message)
        return f"⚠️ **{message}**"
    gr.Info(message)
    return f"ℹ️ {message}"


def readable(error: Exception) -> str:
    return error.user_message if isinstance(error, AudioInputError) else str(error)


# ---- Chat ----------------------------------------------------------------------------------------


@dataclass
class ChatState:
    """One browser session's chat (``gr.State``)."""

    conversation_id: str | None = None
    checkpoint: str | None = None
    turn_of_message: dict[int, str] = field(default_factory=dict)  # chatbot index -> turn id
    last_turn_id: str | None = None


class ChatHandlers:
    """Callbacks of the Chat tab."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def recommended_sampling(self, mode: str, checkpoint: str | None) -> list[Any]:
        """The sampling controls set to what ``checkpoint`` recommends for ``mode`` (its
        generation_config.json), in ``SAMPLING_FIELDS`` order; a new mode or checkpoint sets them."""
        try:
            sampling = self.ctx.engine(checkpoint).sampling.for_mode(mode or "S2M")
        except UserError:
            return [gr.skip()] * len(SAMPLING_FIELDS)
        values = {**sampling.to_dict(), "seed": -1 if sampling.seed is None else sampling.seed}
        return [values[name] for name in SAMPLING_FIELDS]

    def submit(
        self,
        request: gr.Request,
        state: ChatState | None,
        history: list | None,
        mode: str,
        text: str | None,
        audio: Any,
        checkpoint: str | None,
        *sampling_values: Any,
    ) -> Iterator[tuple]:
        """Answers one message; yields ``CHAT_OUTPUTS`` while text and audio stream."""
        state = state or ChatState()
        history = list(history or [])
        skip = gr.skip()
        idle = (gr.update(interactive=True), gr.update(interactive=False))
        try:
            turn_input = prepare_input(mode, text, audio, self.ctx.settings.limits)
            checkpoint = checkpoint or self.ctx.default_checkpoint
            engine = self.ctx.engine(checkpoint)
            sampling = sampling_from_values(
                sampling_values,
                self.ctx.settings.limits.max_new_steps,
                engine.sampling.for_mode(turn_input.mode),
            )
        except (UserError, AudioInputError) as error:
            yield (skip, skip, skip, status_message(readable(error)), state, skip, skip, *idle)
            return
        if state.conversation_id is None or state.checkpoint != checkpoint:
            state.conversation_id = self.ctx.repo.create_conversation(
                checkpoint, session_id=session_of(request)
            )
            state.checkpoint = checkpoint
        history += user_messages(turn_input.mode, turn_input.text, audio if isinstance(audio, str) else None)
        session = session_of(request)
        cancel = self.ctx.cancels.new(session, "chat")
        view = TurnView(turn_input.mode)
        busy = (gr.update(interactive=False), gr.update(interactive=True))
        yield (history, gr.update(value=None), "", "Generating…", state, "", None, *busy)
        job = TurnJob(self.ctx, checkpoint, state.conversation_id, turn_input, sampling, cancel)
        stream_audio = self.ctx.settings.stream_audio
        try:
            for batch in run_jobs([job]):
                for _, event in batch:
                    view.apply(event)
                if view.finished:
                    break
                chunk = view.take_audio() if stream_audio else None
                yield (history + view.messages(), chunk if chunk else skip, skip, skip, state, *[skip] * 4)
        finally:
            self.ctx.cancels.release(session, "chat", cancel)
        outcome = view.outcome
        chunk = view.take_audio() if stream_audio else None
        final_audio: Any = chunk if chunk else skip
        if not stream_audio and outcome is not None and outcome.audio is not None:
            final_audio = (outcome.audio.sample_rate, outcome.audio.samples)
        audio_file = view.save_reply_audio(self.ctx.media_dir)
        messages = view.messages(audio_file)
        if outcome is not None and outcome.turn_id is not None:
            for index in range(len(history), len(history) + len(messages)):
                state.turn_of_message[index] = outcome.turn_id
            state.last_turn_id = outcome.turn_id
        status = _outcome_status(outcome)
        yield (history + messages, final_audio, view.metrics_markdown(), status, state, skip, skip, *idle)

    def stop(self, request: gr.Request) -> str:
        """Stop button: the running turn ends and is stored as ``cancelled``."""
        if self.ctx.cancels.cancel(session_of(request), "chat"):
            return "Stopping…"
        return ""

    def new_conversation(self, request: gr.Request) -> tuple:
        """Clears the chat; the next message starts a new conversation."""
        self.ctx.cancels.cancel(session_of(request), "chat")
        return [], None, "", "", ChatState(), "", None

    def feedback(self, event: gr.LikeData, state: ChatState | None, comment: str | None) -> tuple[str, Any]:
        """👍 / 👎 on a reply: stored with the optional comment. Returns (status, comment box)."""
        state = state or ChatState()
        turn_id = state.turn_of_message.get(_first_index(event.index))
        if turn_id is None:
            return status_message("Only finished replies can be rated."), gr.skip()
        if event.liked not in (True, False):
            return status_message(
                "Rating removed from the page (stored ratings are kept).", "info"
            ), gr.skip()
        rating = 1 if event.liked is True else -1
        try:
            self.ctx.repo.add_feedback(turn_id, rating, (comment or "").strip() or None)
        except Exception as error:  # e.g. the turn was deleted by an admin meanwhile
            logger.warning("feedback on %s failed: %s", turn_id, error)
            return status_message(f"Could not store the rating: {error}"), gr.skip()
        word = "👍 Liked" if rating > 0 else "👎 Disliked"
        return f"{word} — thank you" + (" (with your comment)." if comment and comment.strip() else "."), ""


def _first_index(index: Any) -> int:
    return int(index[0]) if isinstance(index, (list, tuple)) else int(index)


def _outcome_status(outcome: TurnOutcome | None) -> str:
    if outcome is None:
        return status_message("The reply was interrupted.")
    if outcome.status == "error":
        return status_message(outcome.error or "Generation failed.")
    if outcome.status == "cancelled":
        return "Stopped — the partial reply is stored as *cancelled*."
    return ""


# ---- Compare -------------------------------------------------------------------------------------


@dataclass
class CompareState:
    """One browser session's current A/B round (``gr.State``)."""

    comparison_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # "A"/"B" -> label stored with the comparison
    titles: dict[str, str] = field(default_factory=dict)  # "A"/"B" -> readable description
    turn_ids: dict[str, str] = field(default_factory=dict)
    blinded: bool = True
    voted: bool = False


def side_label(checkpoint: str, mode: str, other_checkpoint: str, other_mode: str) -> str:
    """What a side is called in the win-rate table: its mode, its checkpoint, or both."""
    if checkpoint == other_checkpoint:
        return mode
    if mode == other_mode:
        return checkpoint
    return f"{checkpoint}/{mode}"


class CompareHandlers:
    """Callbacks of the Compare tab."""

    def __init__(self, ctx: AppContext, rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.rng = rng or random.Random()

    def run(
        self,
        request: gr.Request,
        state: CompareState | None,
        text: str | None,
        audio: Any,
        mode_1: str,
        mode_2: str,
        checkpoint_1: str | None,
        checkpoint_2: str | None,
        blinded: bool,
        *sampling_values: Any,
    ) -> Iterator[tuple]:
        """Answers one input on both sides; yields ``COMPARE_OUTPUTS`` while both stream."""
        skip = gr.skip()
        off = gr.update(interactive=False)
        ready = (gr.update(interactive=True), gr.update(interactive=False))
        checkpoint_1 = checkpoint_1 or self.ctx.default_checkpoint
        checkpoint_2 = checkpoint_2 or self.ctx.default_checkpoint
        try:
            if (checkpoint_1, mode_1) == (checkpoint_2, mode_2):
                raise UserError("Pick two different modes (or two different checkpoints) to compare.")
            sides = [(checkpoint_1, mode_1), (checkpoint_2, mode_2)]
            inputs = [prepare_input(m, text, audio, self.ctx.settings.limits) for _, m in sides]
            for checkpoint, _ in sides:
                self.ctx.engine(checkpoint)
            default = self.ctx.engine(None).sampling.default
            sampling = sampling_from_values(sampling_values, self.ctx.settings.limits.max_new_steps, default)
        except (UserError, AudioInputError) as error:
            yield (*[skip] * 6, status_message(readable(error)), skip, state, *[skip] * 4, *ready)
            return
        order = [0, 1]
        if blinded:
            self.rng.shuffle(order)
        state = CompareState(blinded=bool(blinded))
        session = session_of(request)
        cancel = self.ctx.cancels.new(session, "compare")
        jobs = []
        for tag, i in zip("AB", order, strict=True):
            (checkpoint, mode), (other_checkpoint, other_mode) = sides[i], sides[1 - i]
            state.labels[tag] = side_label(checkpoint, mode, other_checkpoint, other_mode)
            state.titles[tag] = f"{mode_label(mode)} on checkpoint `{checkpoint}`"
            conversation = self.ctx.repo.create_conversation(
                checkpoint, session_id=session, title=f"compare {tag}"
            )
            jobs.append(TurnJob(self.ctx, checkpoint, conversation, inputs[i], sampling, cancel, tag=tag))
        views = {job.tag: TurnView(job.input.mode) for job in jobs}
        reveal = "" if blinded else self._reveal(state)
        busy = (off, gr.update(interactive=True))
        clear = gr.update(value=None)
        yield (
            "*…*",
            clear,
            "",
            "*…*",
            clear,
            "",
            "Generating both replies…",
            reveal,
            state,
            *[off] * 4,
            *busy,
        )
        stream_audio = self.ctx.settings.stream_audio
        try:
            for batch in run_jobs(jobs):
                for tag, event in batch:
                    views[tag].apply(event)
                if all(v.finished for v in views.values()):
                    break
                yield (*self._panel(views["A"], stream_audio, False), *self._panel(views["B"], stream_audio, False),
                       skip, skip, state, *[skip] * 6)  # fmt: skip
        finally:
            self.ctx.cancels.release(session, "compare", cancel)
        outcomes = {tag: view.outcome for tag, view in views.items()}
        complete = all(o is not None and o.status == "done" for o in outcomes.values())
        if complete:
            state.turn_ids = {tag: o.turn_id for tag, o in outcomes.items()}
            state.comparison_id = self.ctx.repo.create_comparison(
                state.turn_ids["A"], state.turn_ids["B"], state.labels["A"], state.labels["B"],
                blinded=state.blinded, session_id=session,
            )  # fmt: skip
            status = "Both replies are ready: which one is better?"
        else:
            problems = [
                f"{tag}: {_side_problem(o)}" for tag, o in outcomes.items() if o is None or o.status != "done"
            ]
            status = status_message(
                "No vote for this round — " + "; ".join(problems) + ". Start the next round."
            )
        vote = gr.update(interactive=complete)
        yield (*self._panel(views["A"], stream_audio, True), *self._panel(views["B"], stream_audio, True),
               status, skip, state, *[vote] * 4, *ready)  # fmt: skip

    @staticmethod
    def _panel(view: TurnView, stream_audio: bool, final: bool) -> tuple:
        chunk = view.take_audio() if stream_audio else None
        audio: Any = chunk if chunk else gr.skip()
        if final and not stream_audio and view.outcome is not None and view.outcome.audio is not None:
            audio = (view.outcome.audio.sample_rate, view.outcome.audio.samples)
        return view.markdown(), audio, view.metrics_markdown() if final else gr.skip()

    @staticmethod
    def _reveal(state: CompareState) -> str:
        return "\n".join(f"- **{tag}** was {state.titles[tag]}" for tag in ("A", "B"))

    def vote(self, state: CompareState | None, choice: str, comment: str | None) -> tuple:
        """Stores the vote and reveals the sides. Returns (status, reveal, state, 4 vote buttons, comment)."""
        skip = gr.skip()
        if state is None or state.comparison_id is None:
            return (status_message("Nothing to vote on yet: answer an input on both sides first."),
                    skip, state, *[skip] * 4, skip)  # fmt: skip
        if state.voted:
            return (status_message("You already voted in this round: start the next round."),
                    skip, state, *[skip] * 4, skip)  # fmt: skip
        try:
            self.ctx.repo.vote(state.comparison_id, choice, (comment or "").strip() or None)
        except Exception as error:  # refused (already voted elsewhere, turn deleted) or unknown value
            return status_message(f"The vote was not stored: {error}"), skip, state, *[skip] * 4, skip
        state.voted = True
        off = gr.update(interactive=False)
        reveal = f"**Your vote: {VOTE_LABELS[choice]}.**\n\n" + self._reveal(state)
        return "Vote stored — thank you. Start the next round when ready.", reveal, state, *[off] * 4, ""

    def next_round(self, request: gr.Request) -> tuple:
        """Clears both panels (cancelling a round still running)."""
        self.ctx.cancels.cancel(session_of(request), "compare")
        off = gr.update(interactive=False)
        return ("", None, "", "", None, "", "", "", CompareState(), *[off] * 4,
                gr.update(interactive=True), off, "", None, "")  # fmt: skip

    def stop(self, request: gr.Request) -> str:
        if self.ctx.cancels.cancel(session_of(request), "compare"):
            return "Stopping… (a stopped round cannot be voted on)"
        return ""


def _side_problem(outcome: TurnOutcome | None) -> str:
    if outcome is None:
        return "interrupted"
    if outcome.status == "cancelled":
        return "stopped"
    return outcome.error or outcome.status
