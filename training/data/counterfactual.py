"""Counterfactual replies: speech that has to follow the reply text, not the question.

    python -m training.data.counterfactual --corpus data/corpus --items 3000

In the corpus every reply is a function of its question, so the speech stream can learn to say a
reply from the question alone and never read the text it writes. The demo model does exactly that:
for a held-out question it writes "The number before eighty six is eighty five." and speaks the
training reply "the number before eighty seven is eighty six". This module writes items that break
the shortcut: a training question (its text and its recording) with a reply of the same intent whose
answer (and, with --operand-probability, operands) are drawn at random, so it is wrong for that
question ("What is six plus ten?" -> "Six plus ten is forty one."), rendered in the assistant voice.

The reply text of these items is an input, not a target (`"text_target": false`): training feeds
it as the parallel text and learns only its speech (`core.sequence.Sample.text_target`), so the
text head is never taught a wrong answer, while the speech learns to say whatever the text says.
CoM-Mixing makes them T2M and S2M samples only (`training.data.com_mixing.missing_input`).

No held-out combination's operands appear in a reply, and no reply states a true fact (its answer
always differs from the right one), so no held-out fact is stated in any form.

Output, inside --corpus: `counterfactual.jsonl` (manifest lines: id, text, audio, reply_text,
reply_audio, category, voice, intent, source (the training item), reply_operands, text_target)
and `counterfactual.json` (counts per category). Replies are rendered like the corpus's own
(`replies/<hash>.wav`); existing files are kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from training.data.qa_domain import (
    CAPITALS,
    INTENTS_BY_NAME,
    MONTHS,
    OPPOSITES,
    WEEKDAYS,
    Intent,
    intent_fields,
)
from training.eval.scoring import number_to_words

logger = logging.getLogger(__name__)

FILE = "counterfactual.jsonl"
SPLIT = FILE.removesuffix(".jsonl")
CATEGORIES = ("arithmetic", "number", "weekday", "month", "capital", "opposite")


@dataclass(frozen=True)
class CounterfactualConfig:
    items: int = 3000
    operand_probability: float = 0.5  # also draw the reply's operands (else the question's own)
    max_number: int = 144  # answers are drawn from 0..max_number (the corpus's largest answer: 12 x 12)
    max_operand: int = 20  # arithmetic operands drawn from 0..max_operand (the corpus asks 0-12)
    seed: int = 0
    categories: tuple[str, ...] = CATEGORIES  # the training questions' categories to draw from
    swap_probability: float = 0.0  # chance that an item takes another intent's true training reply

    def __post_init__(self) -> None:
        if self.items < 1:
            raise ValueError(f"--items must be >= 1, got {self.items}")
        if not 0.0 <= self.operand_probability <= 1.0:
            raise ValueError(f"--operand-probability must be in [0, 1], got {self.operand_probability}")
        if not 0.0 <= self.swap_probability <= 1.0:
            raise ValueError(f"--swap-probability must be in [0, 1], got {self.swap_probability}")
        if self.max_number < 2 or self.max_operand < 1:
            raise ValueError("--max-number must be >= 2 and --max-operand >= 1")
        unknown = sorted(set(self.categories) - set(CATEGORIES))
        if unknown or not self.categories:
            raise ValueError(
                f"--categories: choose one or more of {', '.join(CATEGORIES)} (got {unknown or 'none'})"
            )


def _operands(intent: Intent, cfg: CounterfactualConfig, rng: random.Random) -> tuple:
    """Random operands of `intent` (numbers as ints, names as strings)."""
    if intent.category == "arithmetic":
        a, b = rng.randint(0, cfg.max_operand), rng.randint(0, cfg.max_operand)
        return (max(a, b), min(a, b)) if intent.name == "minus" else (a, b)
    if intent.category == "number":
        return (rng.randint(1, 99),)
    pool = {"weekday": WEEKDAYS, "month": MONTHS, "capital": tuple(CAPITALS), "opposite": tuple(OPPOSITES)}
    return (rng.choice(pool[intent.category]),)


def _wrong_answer(intent: Intent, right: str, cfg: CounterfactualConfig, rng: random.Random) -> str:
    """An answer of the same kind as `right` that is not `right`."""
    if intent.category in ("arithmetic", "number"):
        pool = [number_to_words(n) for n in range(cfg.max_number + 1)]
    else:
        pool = {
            "weekday": list(WEEKDAYS),
            "month": list(MONTHS),
            "capital": sorted(set(CAPITALS.values())),
            "opposite": sorted(set(OPPOSITES.values())),
        }[intent.category]
    return rng.choice([p for p in pool if p != right])


def build_items(
    cfg: CounterfactualConfig, train: list[dict], heldout_combos: dict
) -> tuple[list[dict], dict]:
    """`cfg.items` counterfactual items drawn from the training records `train` (corpus
    train.jsonl lines) of the answer-bearing categories, and a summary.

    `heldout_combos` (corpus.json: intent -> split -> operand lists): operands never put in a reply.
    """
    sources = [r for r in train if r.get("category") in cfg.categories and r.get("intent") in INTENTS_BY_NAME]
    if not sources:
        raise ValueError(f"no training item of an answer-bearing category among {', '.join(cfg.categories)}")
    banned = {
        (intent, tuple(ops))
        for intent, splits in heldout_combos.items()
        for split in ("validation", "test")
        for ops in splits.get(split, [])
    }
    # for swapped items: per question intent, the training replies of every other intent (small talk too)
    other_replies = {
        name: [r for r in train if r.get("reply_text") and r.get("intent") != name]
        for name in ({s["intent"] for s in sources} if cfg.swap_probability else ())
    }
    if any(not replies for replies in other_replies.values()):
        raise ValueError("--swap-probability needs training replies of more than one intent")
    rng = random.Random(cfg.seed)
    items, counts = [], Counter()
    for i in range(cfg.items):
        source = rng.choice(sources)
        if cfg.swap_probability and rng.random() < cfg.swap_probability:
            items.append(_swapped(f"cf-{i:05d}", source, rng.choice(other_replies[source["intent"]])))
            counts["swapped"] += 1
            continue
        intent = INTENTS_BY_NAME[source["intent"]]
        operands = tuple(source["operands"])  # a training combo: never held out
        if rng.random() < cfg.operand_probability:
            drawn = _operands(intent, cfg, rng)
            if (intent.name, drawn) not in banned:
                operands = drawn
        fields = intent_fields(intent, operands)
        fields["answer"] = _wrong_answer(intent, fields["answer"], cfg, rng)
        reply = intent.reply.format(**fields)
        items.append(
            {
                "id": f"cf-{i:05d}",
                "text": source["text"],
                "audio": source["audio"],
                "reply_text": reply[:1].upper() + reply[1:],
                "reply_audio": None,
                "reply_tokens": None,
                "category": source["category"],
                "voice": source.get("voice"),
                "intent": intent.name,
                "source": source["id"],
                "reply_operands": list(operands),
                "text_target": False,
            }
        )
        counts[source["category"]] += 1
    return items, {"items": len(items), "counts": dict(sorted(counts.items())), "config": cfg.__dict__}


def _swapped(item_id: str, source: dict, other: dict) -> dict:
    """`source`'s question with `other`'s true training reply (another intent): nothing in the
    question tells what is said, so the speech can only come from the text it is fed."""
    return {
        "id": item_id,
        "text": source["text"],
        "audio": source["audio"],
        "reply_text": other["reply_text"],
        "reply_audio": None,
        "reply_tokens": None,
        "category": source["category"],
        "voice": source.get("voice"),
        "intent": source["intent"],
        "source": source["id"],
        "reply_source": other["id"],
        "reply_operands": other.get("operands"),
        "text_target": False,
    }


def write(corpus: Path, cfg: CounterfactualConfig, workers: int = 2) -> Path:
    from training.data.numeracy import speak
    from training.data.synth import read_corpus

    meta, train = read_corpus(corpus)
    items, summary = build_items(cfg, train, meta.get("heldout_combos", {}))
    summary["spoken_replies"] = len({item["reply_text"] for item in items})
    speak(corpus, items, workers)
    out = corpus / FILE
    out.write_text("".join(json.dumps(item) + "\n" for item in items))
    (corpus / f"{SPLIT}.json").write_text(json.dumps(summary, indent=1) + "\n")
    logger.info("wrote %d items to %s (%s)", len(items), out, summary["counts"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.counterfactual",
        description="Training questions with wrong, spoken replies whose text is an input only, so that "
        "the speaking modes learn to say what the text says (T2M/S2M speech targets only).",
    )
    d = CounterfactualConfig()
    parser.add_argument("--corpus", default="data/corpus", help="corpus folder of training.data.synth")
    parser.add_argument("--items", type=int, default=d.items, help="items to write")
    parser.add_argument(
        "--operand-probability",
        type=float,
        default=d.operand_probability,
        help="chance that a reply also gets random operands (else the question's own)",
    )
    parser.add_argument("--max-number", type=int, default=d.max_number, help="largest number answer")
    parser.add_argument("--max-operand", type=int, default=d.max_operand, help="largest arithmetic operand")
    parser.add_argument(
        "--categories",
        default=",".join(d.categories),
        help="comma-separated categories of the training questions to draw from (default: all six)",
    )
    parser.add_argument(
        "--swap-probability",
        type=float,
        default=d.swap_probability,
        help="chance that an item instead pairs its question with the true training reply of another "
        "intent (small talk included), spoken as the corpus speaks it (default 0)",
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--workers", type=int, default=2, help="parallel TTS processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = CounterfactualConfig(
            args.items,
            args.operand_probability,
            args.max_number,
            args.max_operand,
            args.seed,
            tuple(c.strip() for c in args.categories.split(",") if c.strip()),
            args.swap_probability,
        )
        write(Path(args.corpus), cfg, workers=args.workers)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
