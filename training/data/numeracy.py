"""Numeracy text for the LLM: arithmetic beyond the QA domain's operands, with no held-out fact.

    python -m training.data.numeracy --corpus data/corpus --items 6000 [--speak] [--ask]

The paper's LLM (Qwen2.5) arrives knowing arithmetic; the demo's LLM is trained from scratch on the
corpus, whose arithmetic operands run 0-12. The corpus holds some operand combinations out of
training (`heldout_combos` in corpus.json), and a model that only memorised the 0-12 tables cannot
answer them: the demo's T2T accuracy on held-out combos was 26-48% against ~99% on everything else.
This module writes the stand-in for the pretrained LLM's numeracy: text-only questions and replies
of the corpus's own arithmetic intents, in the corpus's *training* phrasings only, with at least one
operand beyond 12 (plus: operands up to --max-addend; minus: minuends up to --max-minuend; times:
one operand 0-12 and the other up to --max-factor), so the words name numbers as in the corpus
("Forty one plus seven is forty eight.").

No fact of a held-out combo (validation or test) appears in any form. Facts are compared as the
relation they state, not the wording: "a plus b is c", "c minus a is b" and "the number after b is c"
with a = 1 all state the additive fact {a, b} -> c; "a times b is c" states the multiplicative fact
{a, b} -> c. An item is dropped when its fact is the fact of a held-out combo of any intent
(`heldout_facts`). The items have no user audio, so CoM-Mixing uses them only as T2T
(`training.data.com_mixing.missing_input`), and with --speak, whose replies are rendered in the
assistant voice (`replies/<hash>.wav`, as the corpus's own) and so get reply tokens, also as T2M;
with --ask, whose questions are spoken by the voices that speak the corpus's training questions
(train and train_extra; never a held-out voice) in the corpus's prosody ranges
(`audio/numeracy/*.wav`), also as S2T (and S2M with --speak), so that the ear's path to the LLM
learns the numbers too; category "numeracy".

Output, inside --corpus: `numeracy.jsonl` (manifest lines: id, text, reply_text, answers, category,
intent, phrasing, operands; --speak: reply_audio; --ask: audio, voice, prosody) and `numeracy.json`
(counts, the facts that were left out, and with --ask the voices and how many files were rendered).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from training.data.qa_domain import ARITHMETIC_MAX, INTENTS_BY_NAME, render

logger = logging.getLogger(__name__)

CATEGORY = "numeracy"
FILE = "numeracy.jsonl"
OPERATIONS = ("plus", "minus", "times")

Fact = tuple[str, tuple[int, int], int]  # ("add" | "mul", sorted operands, result)


def fact_of(intent: str, operands: tuple | list) -> Fact:
    """The relation a question of `intent` about `operands` states, independent of its wording."""
    if intent == "plus":
        a, b = operands
        return ("add", tuple(sorted((a, b))), a + b)
    if intent == "minus":  # a - b = c  <=>  b + c = a
        a, b = operands
        return ("add", tuple(sorted((b, a - b))), a)
    if intent == "times":
        a, b = operands
        return ("mul", tuple(sorted((a, b))), a * b)
    if intent == "next_number":  # n + 1
        (n,) = operands
        return ("add", tuple(sorted((1, n))), n + 1)
    if intent == "previous_number":  # (n - 1) + 1 = n
        (n,) = operands
        return ("add", tuple(sorted((1, n - 1))), n)
    raise ValueError(f"no arithmetic fact for intent {intent!r}")


def heldout_facts(heldout_combos: dict) -> set[Fact]:
    """Every fact of the held-out combos (corpus.json "heldout_combos": intent -> split -> operand
    lists), validation and test alike."""
    return {
        fact_of(intent, tuple(ops))
        for intent, splits in heldout_combos.items()
        for split in ("validation", "test")
        for ops in splits.get(split, [])
    }


@dataclass(frozen=True)
class NumeracyConfig:
    items: int = 6000
    max_addend: int = 49
    max_minuend: int = 99
    max_factor: int = 20
    seed: int = 0


def candidate_operands(cfg: NumeracyConfig) -> dict[str, list[tuple[int, int]]]:
    """Operand pairs per operation with at least one operand beyond the corpus's 0-12."""
    beyond = ARITHMETIC_MAX

    def outside(a: int, b: int) -> bool:
        return a > beyond or b > beyond

    plus = [(a, b) for a in range(cfg.max_addend + 1) for b in range(cfg.max_addend + 1) if outside(a, b)]
    minus = [(a, b) for a in range(cfg.max_minuend + 1) for b in range(a + 1) if outside(a, b)]
    small, large = range(beyond + 1), range(beyond + 1, cfg.max_factor + 1)
    times = [(a, b) for a in small for b in large] + [(b, a) for a in small for b in large]
    return {"plus": plus, "minus": minus, "times": times}


def share(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """`total` split as evenly as possible over the pools, none given more than its size while
    another has room (times has ~200 pairs, plus and minus thousands); repeats only once every pool
    is used up."""
    counts = dict.fromkeys(sizes, 0)
    room = {k for k, n in sizes.items() if n > 0}
    if not room:
        raise ValueError("no operand pair is left after removing the held-out facts")
    left = total
    while left:
        open_ = sorted(k for k in room if counts[k] < sizes[k]) or sorted(room)
        for k in open_[:left]:
            counts[k] += 1
            left -= 1
    return counts


def build_items(
    cfg: NumeracyConfig, heldout_combos: dict, heldout_phrasings: dict[str, int]
) -> tuple[list[dict], dict]:
    """`cfg.items` numeracy items (split over the operations by `share`, each operand pair used
    once before any repeats) and a summary; `heldout_phrasings`: intent -> template index
    that training never uses."""
    if cfg.items < 1:
        raise ValueError(f"--items must be >= 1, got {cfg.items}")
    if (
        cfg.max_addend <= ARITHMETIC_MAX
        or cfg.max_minuend <= ARITHMETIC_MAX
        or cfg.max_factor <= ARITHMETIC_MAX
    ):
        raise ValueError(f"--max-addend, --max-minuend and --max-factor must exceed {ARITHMETIC_MAX}")
    banned = heldout_facts(heldout_combos)
    rng = random.Random(f"{cfg.seed}:numeracy")
    items = []
    pools = candidate_operands(cfg)
    kept = {name: [ops for ops in pools[name] if fact_of(name, ops) not in banned] for name in OPERATIONS}
    dropped = {name: len(pools[name]) - len(kept[name]) for name in OPERATIONS}
    for name, want in share(cfg.items, {name: len(kept[name]) for name in OPERATIONS}).items():
        intent = INTENTS_BY_NAME[name]
        allowed = [p for p in range(len(intent.phrasings)) if p != heldout_phrasings.get(name)]
        pool = kept[name]
        rng.shuffle(pool)
        for k in range(want):
            ops = pool[k % len(pool)]
            phrasing = allowed[rng.randrange(len(allowed))]
            qa = render(intent, phrasing, ops)
            items.append(
                {
                    "id": f"{CATEGORY}-{name}-{k:05d}",
                    "text": qa.question,
                    "reply_text": qa.reply,
                    "answers": list(qa.answers),
                    "category": CATEGORY,
                    "intent": name,
                    "phrasing": f"{name}.{phrasing}",
                    "operands": list(ops),
                }
            )
    rng.shuffle(items)
    summary = {
        "config": cfg.__dict__,
        "counts": {name: sum(i["intent"] == name for i in items) for name in OPERATIONS},
        "distinct_operands": {name: len(kept[name]) for name in OPERATIONS},
        "dropped_heldout_facts": dropped,
        "heldout_facts": sorted([f[0], list(f[1]), f[2]] for f in banned),
    }
    return items, summary


def heldout_phrasing_indices(corpus_meta: dict) -> dict[str, int]:
    """corpus.json "heldout_phrasings" ("plus.1 '...'") -> {"plus": 1}."""
    out = {}
    for intent, desc in corpus_meta.get("heldout_phrasings", {}).items():
        out[intent] = int(desc.split()[0].rsplit(".", 1)[1])
    return out


def speak(corpus: Path, items: list[dict], workers: int = 2, progress: bool = True) -> int:
    """--speak: each item's reply in the assistant voice (flite `slt`), at the path the corpus gives
    that reply text (`replies/<hash>.wav`, shared with the corpus's own replies), recorded in the
    item's `reply_audio`; returns how many files were rendered (existing ones are kept)."""
    from training.data.synth import TTSJob, render_audio
    from training.data.synth_plan import reply_audio_path
    from training.data.tts import ASSISTANT_VOICE, Prosody

    jobs = {}
    for item in items:
        item["reply_audio"] = reply_audio_path(item["reply_text"])
        jobs.setdefault(
            item["reply_audio"],
            TTSJob(item["reply_audio"], item["reply_text"], ASSISTANT_VOICE.name, Prosody(), None),
        )
    return render_audio(list(jobs.values()), corpus, workers, progress)


def training_voices(meta: dict) -> list[str]:
    """The voices that speak the corpus's training questions (its train and train_extra splits)."""
    from training.data.synth_plan import EXTRA_SPLIT

    counts = meta.get("counts", {})
    voices = sorted({v for split in ("train", EXTRA_SPLIT) for v in counts.get(split, {}).get("voice", {})})
    if not voices:
        raise ValueError("corpus.json names no training voice (counts.train.voice); rebuild the corpus")
    return voices


def ask(
    corpus: Path, items: list[dict], meta: dict, seed: int, workers: int = 2, progress: bool = True
) -> int:
    """--ask: each item's question spoken by a training voice (drawn per item) with prosody drawn in the
    corpus's ranges, recorded in the item's `audio`, `voice` and `prosody`; returns how many files were
    rendered (existing ones are kept)."""
    from training.data.synth import render_audio, user_job
    from training.data.synth_plan import _prosody, _user_audio_path, prosody_config

    voices, config = training_voices(meta), prosody_config(corpus, meta)
    rng = random.Random(f"{seed}:{CATEGORY}:ask")
    for item in items:
        item["voice"], item["prosody"] = rng.choice(voices), _prosody(rng, config)
        item["audio"] = _user_audio_path(CATEGORY, item["id"], item["text"], item["voice"], item["prosody"])
    jobs = [user_job(i["text"], i["audio"], i["voice"], i["prosody"]) for i in items]
    return render_audio(jobs, corpus, workers, progress)


def write(
    corpus: Path, cfg: NumeracyConfig, spoken: bool = False, workers: int = 2, asked: bool = False
) -> Path:
    meta_path = corpus / "corpus.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: build the corpus first (python -m training.data.synth)"
        )
    meta = json.loads(meta_path.read_text())
    items, summary = build_items(cfg, meta.get("heldout_combos", {}), heldout_phrasing_indices(meta))
    if spoken:
        summary["spoken_replies"] = len({item["reply_text"] for item in items})
        speak(corpus, items, workers)
    if asked:
        summary["rendered_questions"] = ask(corpus, items, meta, cfg.seed, workers)
        summary["asked_by"] = dict(sorted(Counter(i["voice"] for i in items).items()))
    out = corpus / FILE
    out.write_text("".join(json.dumps(item) + "\n" for item in items))
    (corpus / "numeracy.json").write_text(json.dumps(summary, indent=1) + "\n")
    logger.info("wrote %d items to %s (%s)", len(items), out, summary["counts"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.numeracy",
        description="Text-only arithmetic beyond the corpus's operands (no held-out fact) for the LLM's T2T training.",
    )
    defaults = NumeracyConfig()
    parser.add_argument("--corpus", default="data/corpus", help="corpus folder of training.data.synth")
    parser.add_argument("--items", type=int, default=defaults.items, help="items to write (split over + - x)")
    parser.add_argument("--max-addend", type=int, default=defaults.max_addend, help="largest operand of plus")
    parser.add_argument(
        "--max-minuend", type=int, default=defaults.max_minuend, help="largest minuend of minus"
    )
    parser.add_argument("--max-factor", type=int, default=defaults.max_factor, help="largest factor of times")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--speak",
        action="store_true",
        help="also render each reply in the assistant voice (reply_audio), so that the speaking modes (T2M) "
        "learn the numbers too",
    )
    parser.add_argument(
        "--ask",
        action="store_true",
        help="also speak each question by the corpus's training voices (audio), so that the speech input "
        "modes (S2T) learn the numbers too",
    )
    parser.add_argument("--workers", type=int, default=2, help="parallel TTS processes of --speak / --ask")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = NumeracyConfig(args.items, args.max_addend, args.max_minuend, args.max_factor, args.seed)
    try:
        write(Path(args.corpus), cfg, spoken=args.speak, workers=args.workers, asked=args.ask)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
