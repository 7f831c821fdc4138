"""Named endpoints for scripts (``gradio_client``): ``/chat``, ``/compare``, ``/vote``, ``/feedback``.

They run the same turn machinery as the page (rows written before generation, completed after)
but take and return plain values: a JSON result plus reply audio files. Bad input raises
``gr.Error`` with the same readable message the page shows, which ``gradio_client`` raises as
``AppError``. ``/chat`` and ``/compare`` are generators: ``job = client.submit(...)`` yields
progress results (text so far, seconds of audio generated so far); ``job.result()`` is the last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import gradio as gr

from app.context import AppContext, UserError
from app.handlers import readable, session_of, side_label
from app.streaming import TurnView
from app.turns import TurnJob, prepare_input, run_jobs
from core.audio import AudioInputError
from core.sampling import SamplingConfig
from storage import NotFoundError, VoteRefusedError


class ApiHandlers:
    """Script-facing versions of the Chat and Compare actions."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def _sampling(self, sampling: dict | None, checkpoint: str | None, mode: str) -> SamplingConfig:
        """``sampling`` over the settings ``checkpoint`` (None: the default one) recommends for ``mode``."""
        sampling = dict(sampling or {})
        unknown = set(sampling) - set(SamplingConfig.__dataclass_fields__)
        if unknown:
            raise UserError(f"Unknown sampling settings: {', '.join(sorted(unknown))}.")
        base = self.ctx.engine(checkpoint).sampling.for_mode(mode)
        sampling.setdefault("max_new_steps", base.max_new_steps)
        sampling["max_new_steps"] = min(
            int(sampling["max_new_steps"]), self.ctx.settings.limits.max_new_steps
        )
        try:
            return dataclasses.replace(base, **sampling)
        except (TypeError, ValueError) as error:
            raise UserError(f"Invalid sampling settings: {error}") from None

    def chat(
        self,
        request: gr.Request,
        message: str | None,
        audio: str | None,
        mode: str,
        conversation_id: str | None,
        checkpoint: str | None,
        sampling: dict | None,
    ) -> Iterator[tuple[dict, str | None]]:
        """One chat turn. Yields (result, reply audio path or None); see README "API".

        ``conversation_id`` "" starts a new conversation; pass the returned id to continue it.
        """
        try:
            turn_input = prepare_input(mode, message, audio, self.ctx.settings.limits)
            if conversation_id:
                conversation = self.ctx.repo.get_conversation(conversation_id)
                checkpoint = checkpoint or conversation.checkpoint_id
            checkpoint = self.ctx.engine(checkpoint).checkpoint_id
            config = self._sampling(sampling, checkpoint, turn_input.mode)
            if not conversation_id:
                conversation_id = self.ctx.repo.create_conversation(
                    checkpoint, session_id=session_of(request)
                )
        except NotFoundError:
            raise gr.Error(f"Unknown conversation {conversation_id!r}.") from None
        except (UserError, AudioInputError) as error:
            raise gr.Error(readable(error)) from None
        job = TurnJob(self.ctx, checkpoint, conversation_id, turn_input, config)
        view = TurnView(turn_input.mode)
        seconds = 0.0
        for batch in run_jobs([job]):
            for _, event in batch:
                view.apply(event)
                seconds += _audio_seconds(event)
            if not view.finished:
                view.take_audio()
                yield _result(view, conversation_id, job, seconds), None
        yield _result(view, conversation_id, job, seconds), view.save_reply_audio(self.ctx.media_dir)

    def compare(
        self,
        request: gr.Request,
        message: str | None,
        audio: str | None,
        mode_a: str,
        mode_b: str,
        checkpoint_a: str | None,
        checkpoint_b: str | None,
        sampling: dict | None,
    ) -> Iterator[tuple[dict, str | None, str | None]]:
        """Answers one input as side A and side B (not blinded: the caller chose them).

        Yields (result, audio A, audio B); ``result["comparison_id"]`` is set once both are done.
        """
        checkpoint_a = checkpoint_a or self.ctx.default_checkpoint
        checkpoint_b = checkpoint_b or self.ctx.default_checkpoint
        try:
            if (checkpoint_a, mode_a) == (checkpoint_b, mode_b):
                raise UserError("Pick two different modes (or two different checkpoints) to compare.")
            inputs = [prepare_input(m, message, audio, self.ctx.settings.limits) for m in (mode_a, mode_b)]
            sides = [
                (self.ctx.engine(c).checkpoint_id, m)
                for c, m in ((checkpoint_a, mode_a), (checkpoint_b, mode_b))
            ]
            configs = [self._sampling(sampling, c, m) for c, m in sides]  # over each side's recommended
        except (UserError, AudioInputError) as error:
            raise gr.Error(readable(error)) from None
        session = session_of(request)
        jobs, labels = [], {}
        for tag, (checkpoint, mode), turn_input, other, config in zip(
            "AB", sides, inputs, sides[::-1], configs, strict=True
        ):
            labels[tag] = side_label(checkpoint, mode, *other)
            conversation = self.ctx.repo.create_conversation(
                checkpoint, session_id=session, title=f"compare {tag}"
            )
            jobs.append(TurnJob(self.ctx, checkpoint, conversation, turn_input, config, tag=tag))
        views = {job.tag: TurnView(job.input.mode) for job in jobs}
        seconds = {"A": 0.0, "B": 0.0}

        def result(comparison_id: str | None) -> dict:
            return {
                "comparison_id": comparison_id,
                "labels": labels,
                **{
                    tag: _result(views[tag], job.conversation_id, job, seconds[tag])
                    for tag, job in zip("AB", jobs, strict=True)
                },
            }

        for batch in run_jobs(jobs):
            for tag, event in batch:
                views[tag].apply(event)
                seconds[tag] += _audio_seconds(event)
            if not all(v.finished for v in views.values()):
                for view in views.values():
                    view.take_audio()
                yield result(None), None, None
        comparison_id = None
        if all(v.outcome.status == "done" for v in views.values()):
            comparison_id = self.ctx.repo.create_comparison(
                jobs[0].turn_id, jobs[1].turn_id, labels["A"], labels["B"], blinded=False, session_id=session
            )
        media = self.ctx.media_dir
        yield result(comparison_id), views["A"].save_reply_audio(media), views["B"].save_reply_audio(media)

    def vote(self, comparison_id: str, vote: str, comment: str | None) -> dict:
        """Stores a vote ("A", "B", "tie" or "both_bad"); returns the comparison with its labels."""
        try:
            record = self.ctx.repo.vote(comparison_id, vote, (comment or "").strip() or None)
        except NotFoundError:
            raise gr.Error(f"Unknown comparison {comparison_id!r}.") from None
        except (VoteRefusedError, ValueError) as error:
            raise gr.Error(str(error)) from None
        return {
            "comparison_id": record.id,
            "vote": record.vote,
            "comment": record.comment,
            "label_a": record.label_a,
            "label_b": record.label_b,
            "turn_a_id": record.turn_a_id,
            "turn_b_id": record.turn_b_id,
            "voted_at": record.voted_at.isoformat() if record.voted_at else None,
        }

    def feedback(self, turn_id: str, rating: Any, comment: str | None) -> dict:
        """Like (+1 / "like") or dislike (-1 / "dislike") a reply; returns the stored feedback."""
        ratings = {"like": 1, "dislike": -1, "+1": 1, "-1": -1, "1": 1}
        value = ratings.get(str(rating).strip().lower())
        if value is None:
            raise gr.Error(f"rating must be 'like' or 'dislike' (or +1 / -1), got {rating!r}")
        try:
            feedback_id = self.ctx.repo.add_feedback(turn_id, value, (comment or "").strip() or None)
        except NotFoundError:
            raise gr.Error(f"Unknown turn {turn_id!r}.") from None
        return {"feedback_id": feedback_id, "turn_id": turn_id, "rating": value, "comment": comment or None}


def _audio_seconds(event: Any) -> float:
    samples = getattr(event, "samples", None)
    rate = getattr(event, "sample_rate", 0)
    return len(samples) / rate if samples is not None and rate else 0.0


def _result(view: TurnView, conversation_id: str, job: TurnJob, audio_seconds: float) -> dict:
    """The JSON result of a turn (progress while running, complete at the end)."""
    outcome = view.outcome
    timings = None
    if outcome is not None and outcome.timings is not None:
        t = outcome.timings
        timings = {
            "time_to_first_text_ms": None
            if t.time_to_first_text is None
            else round(t.time_to_first_text * 1000, 1),
            "time_to_first_audio_ms": None
            if t.time_to_first_audio is None
            else round(t.time_to_first_audio * 1000, 1),
            "total_ms": round(t.total_time * 1000, 1),
            "real_time_factor": t.real_time_factor,
            "audio_seconds": t.audio_seconds,
            "llm_steps": t.llm_steps,
        }
    return {
        "conversation_id": conversation_id,
        "turn_id": job.turn_id,
        "checkpoint": job.checkpoint,
        "mode": job.input.mode,
        "status": outcome.status if outcome is not None else "running",
        "transcript": view.text["transcript"].strip(),
        "draft": view.text["draft"].strip(),
        "reply_text": view.text["reply"].strip(),
        "audio_seconds": round(audio_seconds, 3),
        "speech_tokens": len(outcome.speech_tokens) if outcome is not None else None,
        "timings": timings,
        "error": outcome.error if outcome is not None else None,
    }
