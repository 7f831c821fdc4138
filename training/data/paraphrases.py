"""More ways to ask the same training questions: extra question phrasings, spoken by the training voices.

    python -m training.data.paraphrases --corpus data/corpus --items 3000

The corpus asks each intent in six phrasings and holds one of them out for the test split, so the
speech path of the demo model learns an intent from five sentence shapes and maps a held-out one onto
the nearest of them ("Many thanks!" is transcribed "Talk to you later, bye!"). Typed, the same
held-out phrasings are answered almost always: the LLM reads new wordings of text, but its ear has
heard too few. This module writes training items that ask the *training* operand combinations of
every intent in `EXTRA_PHRASINGS`, eight more phrasings per intent, spoken by the training voices
(never a held-out one) with the corpus's prosody ranges, each with the reply of the training item
it was drawn from (its text and its `slt` recording, already in the corpus).

Fairness to the test split (`borrowing`, `allowed_phrasings`): no extra phrasing used holds a word
that occurs in a held-out phrasing and in no training phrasing ("tomorrow", "reverse", ...), nor a
run of three or more words (slots such as {x} count as words) that only a held-out phrasing has, nor
equals a held-out phrasing, so the held-out phrasings stay as new as they were. The phrasings below
borrow nothing from the default corpus (seed 0); for a corpus with other held-out phrasings the
command leaves out those that would, and names them.

Output, inside --corpus: `paraphrases.jsonl` (manifest lines in the corpus format: id, text, audio,
reply_text, reply_audio, answers, category, voice, intent, phrasing "<intent>.x<k>", operands,
source (the training item), prosody), `audio/paraphrases/*.wav` and `paraphrases.json` (counts, the
phrasings used: x<k> is the k-th of its intent's, and those left out).
Existing WAVs are not rendered again.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from training.data.qa_domain import INTENTS, INTENTS_BY_NAME, intent_fields

logger = logging.getLogger(__name__)

SPLIT = "paraphrases"
NGRAM = 3  # shortest word run that may not come from a held-out phrasing alone

EXTRA_PHRASINGS: dict[str, tuple[str, ...]] = {
    "plus": (
        "Please add {a} and {b}.", "Could you tell me {a} plus {b}?", "What does {a} plus {b} make?",
        "Add {a} to {b}, please.", "I want to know {a} plus {b}.", "What is {a} added to {b}?",
        "If I add {a} and {b}, what do I get?", "Do you know what {a} plus {b} is?",
    ),
    "minus": (
        "Please subtract {b} from {a}.", "Could you tell me {a} minus {b}?", "What does {a} minus {b} make?",
        "What is left when {b} is taken from {a}?", "I want to know {a} minus {b}.",
        "What is {b} subtracted from {a}?", "If I subtract {b} from {a}, what do I get?",
        "Do you know what {a} minus {b} is?",
    ),
    "times": (
        "Please multiply {a} by {b}.", "Could you tell me {a} times {b}?", "What does {a} times {b} make?",
        "What is {a} multiplied by {b}?", "I want to know {a} times {b}.",
        "If I multiply {a} by {b}, what do I get?", "Do you know what {a} times {b} is?",
        "Multiply {a} and {b} for me.",
    ),
    "next_number": (
        "What number is after {n}?", "Could you tell me the number after {n}?", "Which number is next after {n}?",
        "What do you get if you add one to {n}?", "Count up one from {n}.", "Name the number that follows {n}.",
        "I want the number after {n}.", "After {n}, which number comes next?",
    ),
    "previous_number": (
        "What number is before {n}?", "Could you tell me the number that precedes {n}?", "Which number precedes {n}?",
        "What do you get if you subtract one from {n}?", "Count down one from {n}.",
        "Name the number that comes before {n}.", "I want the number preceding {n}.",
        "Before {n}, which number comes?",
    ),
    "day_after": (
        "What day follows {x}?", "Could you tell me the day after {x}?", "Which day is after {x}?",
        "Name the day that follows {x}.", "What is the next day after {x}?", "After {x}, what day comes?",
        "Which weekday follows {x}?", "I want the day after {x}.",
    ),
    "day_before": (
        "What day precedes {x}?", "Could you tell me the day before {x}?", "Which day is before {x}?",
        "Name the day preceding {x}.", "Which weekday precedes {x}?", "Before {x}, what day comes?",
        "I want the day before {x}.", "What was the day preceding {x}?",
    ),
    "month_after": (
        "What month follows {x}?", "Could you tell me the month after {x}?", "Which month is after {x}?",
        "Name the month that follows {x}.", "What is the next month after {x}?", "After {x}, what month comes?",
        "I want the month after {x}.", "Which month is next after {x}?",
    ),
    "month_before": (
        "What month precedes {x}?", "Could you name the month preceding {x}?", "Which month is before {x}?",
        "Name the month preceding {x}.", "What was the month preceding {x}?", "Before {x}, what month comes?",
        "I want the month preceding {x}.", "Which month precedes {x}?",
    ),
    "capital": (
        "Could you name the capital of {country}?", "Name the capital of {country}.",
        "I want to know the capital of {country}.", "Which city is {country}'s capital?",
        "What is {country}'s capital city?", "Can you name the capital city of {country}?",
        "The capital of {country} is which city?", "Please name the capital of {country}.",
    ),
    "opposite": (
        "What word is the opposite of {w}?", "Could you tell me the opposite of {w}?", "Name the opposite of {w}.",
        "What is the antonym for {w}?", "Which word means the opposite of {w}?", "I want the opposite of {w}.",
        "Say the opposite of {w}.", "Please give me the antonym of {w}.",
    ),
    "hello": (
        "Hi!", "Hello, assistant!", "Hey!", "Good afternoon!", "Good evening!", "Hello, nice to meet you!",
        "Hey, good morning!", "Hello, how nice to meet you!",
    ),
    "how_are_you": (
        "How are things?", "How are you feeling?", "Is everything going well?", "How is your day going?",
        "Are you well?", "How do you do?", "How are you feeling today?", "Is it going well for you?",
    ),
    "name": (
        "What do people call you?", "What name do you have?", "Can you tell me your name?", "May I know your name?",
        "What is the name you go by?", "Please tell me your name.", "Have you got a name?", "What do I call you?",
    ),
    "thanks": (
        "Thanks!", "Thank you so much!", "Thanks very much!", "I appreciate it, thank you!",
        "Thank you for your help!", "Thanks, that helps a lot!", "Great, thanks!", "Thank you kindly!",
    ),
    "goodbye": (
        "Bye!", "See you soon!", "I am leaving now, bye!", "Have a good day, goodbye!", "Good night, see you!",
        "Bye, talk to you later!", "I must go, goodbye!", "See you, bye!",
    ),
}  # fmt: skip

_TOKEN = re.compile(r"\{[a-z]+\}|[a-z']+")


def words(template: str) -> list[str]:
    """The lower-case words of a phrasing template, a slot ({x}) as one word."""
    return _TOKEN.findall(template.lower())


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def heldout_indices(meta: Mapping) -> dict[str, int]:
    """intent -> the phrasing index the corpus holds out for the test split (corpus.json's
    "heldout_phrasings", e.g. "plus.1 'How much is {a} plus {b}?'")."""
    out = {}
    for intent, text in meta.get("heldout_phrasings", {}).items():
        out[intent] = int(text.split()[0].split(".")[1])
    return out


def borrowing(extra: Mapping[str, Iterable[str]], heldout: Mapping[str, int]) -> dict[str, str]:
    """Each extra phrasing (by template) that borrows what only a held-out phrasing has -- a word, a
    run of `NGRAM` or more words, or the whole phrasing -- with what it borrows. ValueError for an
    intent that does not exist."""
    unknown = sorted(set(extra) - set(INTENTS_BY_NAME))
    if unknown:
        raise ValueError(f"no such intent: {unknown}")
    train, held = [], []
    for intent in INTENTS:
        for i, template in enumerate(intent.phrasings):
            (held if heldout.get(intent.name) == i else train).append(words(template))
    only_words = {w for t in held for w in t} - {w for t in train for w in t}
    only_runs = set()
    for n in range(NGRAM, max((len(t) for t in held), default=0) + 1):
        only_runs |= {g for t in held for g in _ngrams(t, n)} - {g for t in train for g in _ngrams(t, n)}
    held_whole = {tuple(t) for t in held}
    found = {}
    for templates in extra.values():
        for template in templates:
            tokens = words(template)
            bad = sorted(set(tokens) & only_words)
            runs = sorted(
                " ".join(g) for n in range(NGRAM, len(tokens) + 1) for g in _ngrams(tokens, n) & only_runs
            )
            if bad or runs or tuple(tokens) in held_whole:
                found[template] = f"held-out words {bad}, runs {runs[:3]}" + (
                    ", a held-out phrasing" if tuple(tokens) in held_whole else ""
                )
    return found


def allowed_phrasings(
    extra: Mapping[str, Iterable[str]], heldout: Mapping[str, int]
) -> dict[str, tuple[str, ...]]:
    """`extra` without the phrasings that borrow from a held-out one (see `borrowing`; the default
    phrasings borrow nothing from the default corpus, seed 0); ValueError where an intent keeps none."""
    bad = borrowing(extra, heldout)
    for template, why in bad.items():
        logger.warning("left out %r: it borrows from a held-out phrasing (%s)", template, why)
    kept = {intent: tuple(t for t in templates if t not in bad) for intent, templates in extra.items()}
    empty = sorted(intent for intent, templates in kept.items() if not templates)
    if empty:
        raise ValueError(f"every extra phrasing of {empty} borrows from a held-out phrasing")
    return kept


def build_items(
    train: list[dict], n: int, seed: int, config, phrasings: Mapping[str, Sequence[str]] = EXTRA_PHRASINGS
) -> list[dict]:
    """`n` items: each a random single-turn training item asked in a random one of `phrasings` of its
    intent, by the same voice with new prosody (`config`: the corpus's SynthConfig ranges)."""
    from training.data.synth_plan import _prosody, _user_audio_path

    sources = [r for r in train if not r.get("history") and phrasings.get(r.get("intent"))]
    if not sources:
        raise ValueError("no single-turn training item of a known intent")
    rng = random.Random(f"{seed}:{SPLIT}")
    items = []
    for i in range(n):
        source = rng.choice(sources)
        intent = INTENTS_BY_NAME[source["intent"]]
        k = rng.randrange(len(phrasings[intent.name]))
        text = phrasings[intent.name][k].format(**intent_fields(intent, tuple(source["operands"])))
        text = text[:1].upper() + text[1:]
        item_id, prosody = f"{SPLIT}-{i:05d}", _prosody(rng, config)
        items.append(
            {
                **{key: source[key] for key in ("reply_text", "reply_audio", "answers", "category", "voice")},
                "id": item_id,
                "text": text,
                "audio": _user_audio_path(SPLIT, item_id, text, source["voice"], prosody),
                "reply_tokens": None,
                "system": None,
                "history": [],
                "intent": intent.name,
                "phrasing": f"{intent.name}.x{k}",  # the k-th of its phrasings used
                "operands": source["operands"],
                "heldout": [],
                "source": source["id"],
                "prosody": prosody,
            }
        )
    return items


def write(corpus: Path, n: int, seed: int = 0, workers: int = 2, progress: bool = True) -> dict:
    """Checks the phrasings against the corpus's held-out ones, renders `n` items into `corpus` and
    writes paraphrases.jsonl / .json; returns the summary."""
    from training.data.synth import _write_jsonl, read_corpus, render_audio, user_job
    from training.data.synth_plan import prosody_config

    meta, train = read_corpus(corpus)
    phrasings = allowed_phrasings(EXTRA_PHRASINGS, heldout_indices(meta))
    items = build_items(train, n, seed, prosody_config(corpus, meta), phrasings)
    jobs = [user_job(r["text"], r["audio"], r["voice"], r["prosody"]) for r in items]
    rendered = render_audio(jobs, corpus, workers, progress)
    _write_jsonl(corpus / f"{SPLIT}.jsonl", items)
    summary = {
        "items": len(items),
        "phrasings": {intent: list(templates) for intent, templates in phrasings.items()},
        "left_out": sorted(
            set(t for v in EXTRA_PHRASINGS.values() for t in v) - {t for v in phrasings.values() for t in v}
        ),
        "distinct_questions": len({r["text"] for r in items}),
        "intents": dict(sorted(Counter(r["intent"] for r in items).items())),
        "voices": dict(sorted(Counter(r["voice"] for r in items).items())),
        "seed": seed,
        "rendered_files": rendered,
    }
    (corpus / f"{SPLIT}.json").write_text(json.dumps(summary, indent=1) + "\n")
    logger.info("wrote %d items to %s", len(items), corpus / f"{SPLIT}.jsonl")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.paraphrases",
        description="Add training items that ask the training questions in eight more phrasings per "
        "intent (none borrowing from a held-out phrasing), spoken by the training voices, with the "
        "training replies (demo --paraphrases true).",
    )
    parser.add_argument("--corpus", default="data/corpus", help="corpus folder of training.data.synth")
    parser.add_argument("--items", type=int, default=3000, help="items to write (default 3000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="parallel TTS processes")
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error(f"--items must be >= 1, got {args.items}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(1)  # resampling threads would fight the TTS processes for the cores
    try:
        return write(Path(args.corpus), args.items, args.seed, args.workers)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
