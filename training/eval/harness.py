"""Spoken-QA evaluation of a checkpoint in the seven interaction modes (the shape of Table 4).

For every manifest item and mode the engine answers once (greedy by default); then

- text accuracy: an accepted answer occurs in the reply text (`scoring.contains_answer`; a number
  answer must occur more often than in the question's text: an echoed operand is no answer);
- speech accuracy (modes that speak): an accepted answer occurs in the recogniser's transcript of
  the generated audio (`asr.transcribe`, pocketsphinx);
- ASR-WER (modes that speak): word error rate of that transcript against the reply text, pooled
  over the items (sum of edits / sum of reference words), as the paper's ASR-WER (§4.1);
- reference ASR-WER and reference speech accuracy: the same judge on flite `slt` renderings of the
  same reply texts, i.e. what a perfect assistant voice scores; the codec is compared against this
  ceiling (on the synthetic corpus's own replies pocketsphinx scores about 15% WER and finds the
  answer in about 83% of them);
- speech against text (modes that speak): of the replies with a right text, the share also heard
  right (`speech_given_text`), and of those with a wrong text, the share heard right anyway
  (`speech_without_text`: the speech said another answer than the text);
- real-time factor (generation time / audio duration, pooled) and time to first audio.

An empty reply text with non-empty speech adds the transcript's words to ASR-WER as insertions
(the reference voice has nothing to render for it).

Accuracies are fractions in [0, 1]; the markdown table shows percentages.

Manifest lines: {"id", "audio" (WAV path relative to the manifest), "text", "answers",
"category"}, optionally "history" ([{"text", "audio", "reply_text"}], earlier turns given to the
engine in the mode's input modality) and, as the synthetic corpus writes them, "voice" and
"heldout" (the factors unseen in training), which add accuracy per held-out group and per voice
(`by_heldout`, `by_voice`; `training.eval.breakdown`); given the training vocabulary, accuracy with
and without a question word unseen in training (`by_vocabulary`); other keys are ignored. Speech-input modes need `audio`, text-input modes `text`;
an item without the input a mode needs is skipped for that mode (counted in `skipped`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.modes import MODES, get_mode
from core.sampling import ModeSampling, SamplingConfig
from core.types import Done, Waveform
from training.data.manifest import json_lines
from training.eval.breakdown import group_scores, new_words
from training.eval.scoring import contains_answer, word_errors

logger = logging.getLogger(__name__)

ALL_MODES = ("S2M", "S2T", "T2M", "T2T", "STC", "SAC", "SUC")  # Table 4's column order


@dataclass(frozen=True)
class EvalItem:
    """One question of the evaluation manifest."""

    id: str
    text: str | None  # typed question (text-input modes)
    audio: Path | None  # spoken question (speech-input modes), absolute path
    answers: tuple[str, ...]  # accepted answers
    category: str | None = None
    history: tuple[tuple[str | None, Path | None, str], ...] = ()  # earlier (text, audio, reply_text)
    voice: str | None = None  # who asked (synth corpus), for the per-voice breakdown
    heldout: tuple[str, ...] | None = None  # factors unseen in training (synth corpus); None: unknown
    new_words: tuple[str, ...] | None = None  # question words no training question has; None: unknown


def read_eval_manifest(
    path: str | Path, limit: int | None = None, vocabulary: frozenset[str] | None = None
) -> list[EvalItem]:
    """Reads a JSONL manifest (first `limit` items); audio paths are resolved against its folder.

    `vocabulary` (`breakdown.training_vocabulary`) fills each item's `new_words`.
    """
    path = Path(path)
    root = path.parent
    items = []
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name}:{line_no}: not JSON ({exc})") from exc
            if "id" not in record or not isinstance(record.get("answers"), list):
                raise ValueError(f"{path.name}:{line_no}: needs 'id' and an 'answers' list")
            audio = record.get("audio")
            heldout = record.get("heldout")
            history = tuple(
                (h.get("text"), (root / h["audio"]) if h.get("audio") else None, h.get("reply_text") or "")
                for h in record.get("history") or []
            )
            items.append(
                EvalItem(
                    id=str(record["id"]),
                    text=record.get("text"),
                    audio=(root / audio) if audio else None,
                    answers=tuple(str(a) for a in record["answers"]),
                    category=record.get("category"),
                    history=history,
                    voice=record.get("voice"),
                    heldout=None if heldout is None else tuple(str(h) for h in heldout),
                    new_words=new_words(record.get("text"), vocabulary),
                )
            )
            if limit is not None and len(items) >= limit:
                break
    return items


@dataclass
class ItemResult:
    """One (item, mode) answer and its scores (a line of the --out JSONL)."""

    id: str
    mode: str
    category: str | None
    reply: str  # the reply text
    text_correct: bool
    transcript: str | None = None  # the judge's transcript of the generated speech
    speech_correct: bool | None = None
    wer: float | None = None  # of the transcript against the reply text
    word_errors: int = 0  # edits behind `wer`
    reference_words: int = 0  # words of the normalised reply text
    reference_transcript: str | None = None  # the judge on the flite slt rendering of the reply
    reference_word_errors: int = 0
    reference_speech_correct: bool | None = None  # an accepted answer in `reference_transcript`
    chain_text: str | None = None  # STC/SUC transcript and STC/SAC draft, as generated
    time_to_first_audio: float | None = None  # seconds
    total_time: float = 0.0  # seconds
    audio_seconds: float = 0.0
    stop_reason: str = "end"
    error: str | None = None  # the engine refused the input (counted as wrong)
    voice: str | None = None  # the item's voice and held-out factors (copied for the breakdown)
    heldout: list[str] | None = None
    new_words: list[str] | None = None  # question words unseen in training (with --train-manifest)


class Evaluator:
    """Runs and scores items; the engine and the judge are injectable (tests use stubs).

    Args:
        engine: anything with `chat(ChatRequest) -> (Done, Waveform | None)` (a `VoiceChatEngine`).
        sampling: decoding settings, for every mode or per mode (None: the engine's, which its
            checkpoint recommends per mode; greedy by default).
        transcribe: the ASR judge, waveform -> text.
        speak_reference: renders a reply text in the reference voice (flite slt).
    """

    def __init__(
        self,
        engine,
        sampling: SamplingConfig | ModeSampling | None = None,
        transcribe: Callable[[Waveform], str] | None = None,
        speak_reference: Callable[[str], Waveform] | None = None,
    ) -> None:
        if transcribe is None:
            from training.eval.asr import transcribe
        if speak_reference is None:
            from training.data.tts import speak_assistant as speak_reference
        self.engine = engine
        if isinstance(sampling, SamplingConfig):
            sampling = ModeSampling(sampling)  # the same settings in every mode
        self.sampling = sampling or engine.sampling  # None: what the checkpoint recommends per mode
        self.transcribe = transcribe
        self.speak_reference = speak_reference
        self._reference_cache: dict[str, str] = {}

    def reference_transcript(self, reply: str) -> str:
        """The judge's transcript of `reply` in the reference voice (cached per text)."""
        if reply not in self._reference_cache:
            self._reference_cache[reply] = self.transcribe(self.speak_reference(reply))
        return self._reference_cache[reply]

    def run(self, item: EvalItem, mode: str) -> ItemResult | None:
        """Answers and scores one item in one mode; None when the item lacks the mode's input."""
        from core.audio import AudioInputError
        from core.engine import ChatRequest, Exchange, InputError
        from core.generate import LengthBudgetError

        spec = get_mode(mode)
        if (spec.speech_input and item.audio is None) or (not spec.speech_input and not item.text):
            return None
        # earlier turns in the same modality as the question (speech when the mode hears speech)
        history = [
            Exchange(
                user_text=text,
                user_audio=str(audio) if spec.speech_input and audio is not None else None,
                assistant_text=reply,
            )
            for text, audio, reply in item.history
        ]
        request = ChatRequest(
            mode=mode,
            text=None if spec.speech_input else item.text,
            audio=str(item.audio) if spec.speech_input else None,
            history=history,
            sampling=self.sampling.for_mode(mode),
        )
        try:
            done, audio = self.engine.chat(request)
        except (InputError, AudioInputError, LengthBudgetError) as exc:  # no answer: counted as wrong
            logger.warning("%s %s: %s", item.id, mode, exc)
            failed = ItemResult(item.id, mode, item.category, "", False, error=f"{type(exc).__name__}: {exc}")
            return self._describe(failed, item)
        return self.score(item, mode, done, audio)

    @staticmethod
    def _describe(result: ItemResult, item: EvalItem) -> ItemResult:
        result.voice = item.voice
        result.heldout = None if item.heldout is None else list(item.heldout)
        result.new_words = None if item.new_words is None else list(item.new_words)
        return result

    def score(self, item: EvalItem, mode: str, done: Done, audio: Waveform | None) -> ItemResult:
        """Scores an answer (text always; speech for modes that speak)."""
        reply = done.reply_text
        result = ItemResult(
            item.id,
            mode,
            item.category,
            reply,
            contains_answer(reply, item.answers, item.text),
            stop_reason=done.stop_reason,
        )
        self._describe(result, item)
        chain = " | ".join(t for t in (done.transcript, done.draft) if t)
        result.chain_text = chain or None
        if done.timings is not None:
            result.time_to_first_audio = done.timings.time_to_first_audio
            result.total_time = done.timings.total_time
            result.audio_seconds = done.timings.audio_seconds
        if get_mode(mode).speech_output:
            has_audio = audio is not None and len(audio.samples) > 0
            transcript = self.transcribe(audio) if has_audio else ""
            result.transcript = transcript
            result.speech_correct = contains_answer(transcript, item.answers, item.text)
            result.word_errors, result.reference_words = word_errors(reply, transcript)
            result.wer = result.word_errors / result.reference_words if result.reference_words else None
            if result.reference_words:  # an empty reply has nothing to render
                result.reference_transcript = self.reference_transcript(reply)
                result.reference_word_errors, _ = word_errors(reply, result.reference_transcript)
                result.reference_speech_correct = contains_answer(
                    result.reference_transcript, item.answers, item.text
                )
        return result


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pooled(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    total = sum(denominators)
    return sum(numerators) / total if total > 0 else None


def _speed(results: list[ItemResult]) -> dict[str, float | None]:
    spoken = [r for r in results if r.audio_seconds > 0]
    first = [r.time_to_first_audio for r in spoken if r.time_to_first_audio is not None]
    ttfa = _mean(first)
    return {
        "real_time_factor": _pooled([r.total_time for r in spoken], [r.audio_seconds for r in spoken]),
        "time_to_first_audio_ms": None if ttfa is None else 1000.0 * ttfa,
    }


def speech_against_text(results: list[ItemResult]) -> dict[str, float | None]:
    """Whether the spoken answer follows the written one (speaking modes).

    `speech_given_text`: share of the replies with a right text whose speech the judge also hears
    the answer in; `speech_without_text`: share of the replies with a wrong text whose speech has a
    right answer all the same, i.e. the two streams said different things. None without such replies.
    """
    return {
        "speech_given_text": _mean([float(bool(r.speech_correct)) for r in results if r.text_correct]),
        "speech_without_text": _mean([float(bool(r.speech_correct)) for r in results if not r.text_correct]),
    }


def summarize(results: list[ItemResult], modes: Sequence[str], n_items: int) -> dict[str, Any]:
    """The report: per-mode scores plus pooled speed figures (module docstring)."""
    by_mode: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_mode[r.mode].append(r)
    report: dict[str, Any] = {"n": n_items, "modes": {}}
    for mode in modes:
        rs = by_mode.get(mode, [])
        entry: dict[str, Any] = {
            "n": len(rs),
            "skipped": n_items - len(rs),
            "text_accuracy": _mean([float(r.text_correct) for r in rs]),
        }
        speaks = get_mode(mode).speech_output
        if speaks:
            entry["speech_accuracy"] = _mean([float(bool(r.speech_correct)) for r in rs])
            entry["speech_accuracy_reference"] = _mean([float(bool(r.reference_speech_correct)) for r in rs])
            entry["asr_wer"] = _pooled([r.word_errors for r in rs], [r.reference_words for r in rs])
            entry["asr_wer_reference"] = _pooled(
                [r.reference_word_errors for r in rs if r.reference_words], [r.reference_words for r in rs]
            )
            entry.update(_speed(rs))
            entry.update(speech_against_text(rs))
        by_category = group_scores(rs, "category", speaks)
        entry["text_accuracy_by_category"] = {c: g["text_accuracy"] for c, g in by_category.items()}
        if speaks:
            entry["speech_accuracy_by_category"] = {c: g["speech_accuracy"] for c, g in by_category.items()}
        for key in ("heldout", "voice", "vocabulary"):
            groups = group_scores(rs, key, speaks)
            if groups:
                entry[f"by_{key}"] = groups
        entry["errors"] = sum(r.error is not None for r in rs)
        report["modes"][mode] = entry
    report.update(_speed([r for r in results if get_mode(r.mode).speech_output]))
    return report


def _percent(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100.0 * value:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """Markdown table in the shape of the paper's Table 4: rows = modes, text / speech accuracy (%)."""
    lines = [
        "| mode | text acc (%) | speech acc (%) | ASR-WER (%) | reference ASR-WER (%) | n |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, entry in report["modes"].items():
        lines.append(
            f"| {mode} | {_percent(entry['text_accuracy'])} | {_percent(entry.get('speech_accuracy'))} "
            f"| {_percent(entry.get('asr_wer'))} | {_percent(entry.get('asr_wer_reference'))} | {entry['n']} |"
        )
    rtf, ttfa = report.get("real_time_factor"), report.get("time_to_first_audio_ms")
    if rtf is not None:
        lines.append("")
        lines.append(f"real-time factor {rtf:.3f}, time to first audio {ttfa:.0f} ms, {report['n']} items")
    return "\n".join(lines)


@dataclass
class EvalRun:
    """Everything one evaluation produced."""

    report: dict[str, Any]
    results: list[ItemResult] = field(default_factory=list)


def evaluate(
    evaluator: Evaluator, items: list[EvalItem], modes: Sequence[str], progress: bool = True
) -> EvalRun:
    """Answers every item in every mode and summarises.

    Args:
        evaluator: engine + judge.
        items: the questions.
        modes: mode names, e.g. ("S2M", "T2T").
        progress: show a tqdm bar (stderr).
    """
    from tqdm.auto import tqdm

    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {', '.join(ALL_MODES)}")
    speaking = [m for m in modes if get_mode(m).speech_output]
    if speaking and getattr(evaluator.engine, "codec", True) is None:
        raise ValueError(f"modes {speaking} speak, but the checkpoint has no speech detokenizer (codec)")
    results = []
    with tqdm(total=len(items) * len(modes), desc="eval", disable=not progress) as bar:
        for item in items:
            for mode in modes:
                result = evaluator.run(item, mode)
                if result is not None:
                    results.append(result)
                bar.update(1)
    return EvalRun(summarize(results, modes, len(items)), results)


def write_results(results: list[ItemResult], path: str | Path) -> None:
    """Per-item results as JSONL (one line per item and mode)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in results:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")


def read_results(path: str | Path) -> list[ItemResult]:
    """Per-item results written by `write_results` (--out)."""
    results = []
    for where, record in json_lines(Path(path)):
        try:
            results.append(ItemResult(**record))
        except TypeError as exc:
            raise ValueError(f"{where}: not a per-item result line ({exc})") from exc
    return results


def rescore(results: list[ItemResult], items: list[EvalItem], modes: Sequence[str] | None = None) -> EvalRun:
    """Judges stored replies and transcripts again with today's answer matching, without generating.

    The manifest gives each result its answers and question text; word errors, timings and the
    breakdown fields (voice, held-out factors, new words) are kept as stored. `modes`: those to report
    (default: the modes of `results`, in their order).

    Raises:
        ValueError: a result whose id is not in `items`.
    """
    by_id = {item.id: item for item in items}
    missing = sorted({r.id for r in results} - by_id.keys())
    if missing:
        raise ValueError(f"{len(missing)} result id(s) not in the manifest, e.g. {missing[0]!r}")
    modes = list(modes) if modes else list(dict.fromkeys(r.mode for r in results))
    out = []
    for r in results:
        if r.mode not in modes:
            continue
        item = by_id[r.id]
        fresh = dataclasses.replace(r, category=item.category)
        fresh.text_correct = r.error is None and contains_answer(r.reply, item.answers, item.text)
        if r.transcript is not None:
            fresh.speech_correct = contains_answer(r.transcript, item.answers, item.text)
        if r.reference_transcript is not None:
            fresh.reference_speech_correct = contains_answer(r.reference_transcript, item.answers, item.text)
        out.append(fresh)
    return EvalRun(summarize(out, modes, len({r.id for r in results})), out)
