"""Does the speech say the text it is fed? The question-swap test of a speaking mode.

    python -m training.eval.follow_text --checkpoint checkpoints/demo --manifest data/corpus/test.jsonl

A parallel speaking mode (S2M, T2M) writes its text and speaks beside it, one LLM step for both;
the speech can read the text tokens fed back to it, or say what the question implies and never
read them. Every reply of a synthetic corpus follows from its question, so ordinary accuracy cannot
tell the two apart. This test can: each item's question is asked, but the model is made to write
the reference reply of a partner item of another intent, whose answers differ
(`ChatRequest.reply_text`: the text is written as given, only the speech is generated). The judge
(`training.eval.asr`) transcribes the speech, and per item:

- `follows_text`: the partner's answer is heard: the speech said the text it was fed;
- `follows_question`: the item's own answer is heard: the speech said what the question implies;
- `wer_text`: word error rate of the transcript against the given text (pooled in the summary).

A control pass gives each item its own reference reply, where text and question agree; its share
heard right (`control_heard`) is what `follows_text` could reach. Manifest lines need "reply_text"
and "answers" (the corpus of `training.data.synth` has both); the partner is the next item of
another intent in manifest order. Prints one JSON object (overall and per category of the text
said); `--out` writes the per-item results.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from core.types import Waveform
from training.eval.scoring import contains_answer, normalize, word_errors

logger = logging.getLogger(__name__)

MODES = ("S2M", "T2M")


@dataclass(frozen=True)
class SwapItem:
    """A question and the reply text the model is made to say."""

    id: str
    question: str  # the question's text (a spoken question's transcript)
    audio: Path | None  # the spoken question (S2M)
    answers: tuple[str, ...]  # the question's own answers
    category: str | None
    given_id: str  # the item whose reply is given ("" in the control pass: its own)
    given_text: str
    given_answers: tuple[str, ...]
    given_question: str  # the given reply's own question (its operands are no answer)
    given_category: str | None


@dataclass
class SwapResult:
    id: str
    given_id: str
    category: str | None
    given_category: str | None
    given_text: str
    transcript: str
    follows_text: bool
    follows_question: bool
    word_errors: int
    reference_words: int


def _answer_words(answers: Sequence[str]) -> set[str]:
    return {normalize(a) for a in answers}


def swap_items(records: list[dict], root: Path, control: bool = False) -> list[SwapItem]:
    """One SwapItem per record: its question with the reply of the next record (cyclically) of
    another intent whose answers differ; with `control`, its own reply.

    Raises:
        ValueError: a record lacks "reply_text" or "answers", or no record has a partner.
    """
    for r in records:
        if not r.get("reply_text") or not isinstance(r.get("answers"), list):
            raise ValueError(f"item {r.get('id')!r} needs 'reply_text' and an 'answers' list")
    items = []
    for i, r in enumerate(records):
        partner = r
        if not control:
            ring = records[i + 1 :] + records[:i]
            partner = next(
                (
                    p
                    for p in ring
                    if p.get("intent", p.get("category")) != r.get("intent", r.get("category"))
                    and not _answer_words(p["answers"]) & _answer_words(r["answers"])
                ),
                None,
            )
            if partner is None:
                raise ValueError(f"item {r.get('id')!r} has no partner of another intent with other answers")
        items.append(
            SwapItem(
                id=str(r["id"]),
                question=r.get("text") or "",
                audio=(root / r["audio"]) if r.get("audio") else None,
                answers=tuple(str(a) for a in r["answers"]),
                category=r.get("category"),
                given_id="" if control else str(partner["id"]),
                given_text=partner["reply_text"],
                given_answers=tuple(str(a) for a in partner["answers"]),
                given_question=partner.get("text") or "",
                given_category=partner.get("category"),
            )
        )
    return items


def run_item(engine, item: SwapItem, mode: str, transcribe: Callable[[Waveform], str]) -> SwapResult:
    """Asks `item`'s question in `mode` with its given reply text and judges the speech."""
    from core.engine import ChatRequest

    speech_input = mode == "S2M"
    if speech_input and item.audio is None:
        raise ValueError(f"item {item.id!r} has no 'audio' for S2M")
    request = ChatRequest(
        mode,
        text=None if speech_input else item.question,
        audio=str(item.audio) if speech_input else None,
        reply_text=item.given_text,
    )
    done, audio = engine.chat(request)
    transcript = transcribe(audio) if audio is not None and len(audio.samples) else ""
    errors, words = word_errors(done.reply_text, transcript)
    return SwapResult(
        id=item.id,
        given_id=item.given_id,
        category=item.category,
        given_category=item.given_category,
        given_text=done.reply_text,
        transcript=transcript,
        follows_text=contains_answer(transcript, item.given_answers, item.given_question),
        follows_question=contains_answer(transcript, item.answers, item.question),
        word_errors=errors,
        reference_words=words,
    )


def summarize(swapped: list[SwapResult], control: list[SwapResult]) -> dict:
    """Shares over all items and per category of the text said (the given reply's category)."""

    def shares(rows: list[SwapResult], own: list[SwapResult]) -> dict:
        words = sum(r.reference_words for r in rows)
        return {
            "n": len(rows),
            "follows_text": _share([r.follows_text for r in rows]),
            "follows_question": _share([r.follows_question for r in rows]),
            "wer_text": sum(r.word_errors for r in rows) / words if words else None,
            "control_heard": _share([r.follows_text for r in own]),
        }

    groups: dict[str, list[SwapResult]] = defaultdict(list)
    for r in swapped:
        groups[r.given_category or "?"].append(r)
    own: dict[str, list[SwapResult]] = defaultdict(list)
    for r in control:
        own[r.given_category or "?"].append(r)
    out = shares(swapped, control)
    out["by_category"] = {c: shares(groups[c], own.get(c, [])) for c in sorted(groups)}
    return out


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m training.eval.follow_text",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", default="checkpoints/demo", help="checkpoint directory")
    parser.add_argument("--manifest", type=Path, required=True, help="JSONL with reply_text and answers")
    parser.add_argument("--mode", default="T2M", choices=MODES, help="the speaking mode (default T2M)")
    parser.add_argument(
        "--items", type=int, default=80, help="items drawn from the manifest (default 80; 0: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="which items are drawn (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, help="write the per-item results (JSONL) here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        records = [json.loads(x) for x in args.manifest.read_text().splitlines() if x.strip()]
        if args.items < 0:
            raise ValueError(f"--items must be >= 0, got {args.items}")
        if args.items and args.items < len(records):  # a seeded sample, in manifest order
            keep = sorted(random.Random(args.seed).sample(range(len(records)), args.items))
            records = [records[i] for i in keep]
        swapped_items = swap_items(records, args.manifest.parent)
        control_items = swap_items(records, args.manifest.parent, control=True)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        parser.error(str(exc))

    import torch

    from core.engine import VoiceChatEngine
    from training.eval.asr import transcribe

    torch.set_num_threads(args.threads)
    engine = VoiceChatEngine.from_pretrained(args.checkpoint)
    swapped, control = [], []
    pairs = [(swapped, i) for i in swapped_items] + [(control, i) for i in control_items]
    for into, item in tqdm(pairs, desc=f"{args.mode} swap + control", disable=args.quiet):
        into.append(run_item(engine, item, args.mode, transcribe))
    report = {"checkpoint": args.checkpoint, "mode": args.mode, **summarize(swapped, control)}
    if args.out is not None:
        rows = [{"pass": "swap", **asdict(r)} for r in swapped] + [
            {"pass": "control", **asdict(r)} for r in control
        ]
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
