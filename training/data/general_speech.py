"""General-vocabulary speech for the ear: random English word sequences spoken by the training voices.

    python -m training.data.general_speech --corpus data/corpus --sentences 6000 --vocabulary 3000

The QA corpus holds ~100 distinct question words, so an encoder trained from scratch on it hears
only those: a question with a word no training question has reaches the LLM as noise (the demo's
`by_vocabulary` breakdown measured 68% S2T with known words against 24% with a new one). The paper's
Whisper encoder was trained on 680k hours and hears any English word. This module gives the CTC
stages of the demo (`demo --general_speech true`) a stand-in: sentences of 3-8 words drawn from the
`--vocabulary` most frequent English words (the `wordfreq` package's list, letters only), rarer
words favoured (probability ~ rank^-0.5, so the list's tail is heard too), spoken by the corpus's
*training* voices with the corpus's prosody ranges; the held-out voices never speak here. The items
have no reply and no answer (`reply_text` ""), category "general": only the ear's CTC stages read
them, never the LLM's SFT.

Output, inside --corpus: `general.jsonl` (manifest lines: id, text, audio, reply_text "", voice,
category, prosody) and `audio/general/*.wav`; `general.json` summarises the vocabulary and counts.
Existing WAVs are not rendered again.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from training.data.synth import _write_jsonl, render_audio, user_job
from training.data.synth_plan import SynthConfig, _prosody, _user_audio_path

logger = logging.getLogger(__name__)

SPLIT = "general"
WORD = re.compile(r"[a-z]+")
SINGLE_LETTER_WORDS = ("a", "i")


def english_vocabulary(size: int) -> list[str]:
    """The `size` most frequent English words of wordfreq's list that are letters only (no
    digits, apostrophes or one-letter tokens other than "a" and "I"), most frequent first."""
    from wordfreq import top_n_list

    words = []
    for word in top_n_list("en", size * 3):  # distinct words, most frequent first
        if WORD.fullmatch(word) and (len(word) > 1 or word in SINGLE_LETTER_WORDS):
            words.append(word)
            if len(words) == size:
                return words
    raise ValueError(f"wordfreq lists only {len(words)} usable English words, asked for {size}")


def sentences(vocabulary: Sequence[str], n: int, seed: int, lengths: tuple[int, int] = (3, 8)) -> list[str]:
    """`n` sentences of `lengths` words; word of rank r drawn with probability ~ (r + 1)^-0.5; a
    capital first letter, "?" on about a third of them (the voices raise the pitch), "." otherwise."""
    rng = random.Random(f"{seed}:general")
    weights = [(r + 1) ** -0.5 for r in range(len(vocabulary))]
    out = []
    for _ in range(n):
        words = rng.choices(vocabulary, weights, k=rng.randint(*lengths))
        words = ["I" if w == "i" else w for w in words]
        text = " ".join(words)
        out.append(text[0].upper() + text[1:] + ("?" if rng.random() < 1 / 3 else "."))
    return out


def plan_general(corpus: Path, n: int, vocabulary: Sequence[str], seed: int) -> list[dict]:
    """Manifest records of the general sentences, voices taken in turn from the corpus's training
    voices (corpus.json), prosody drawn within the corpus's ranges."""
    summary = json.loads((corpus / "corpus.json").read_text())
    voices = list(summary["user_voices"]["train"])
    if not voices:
        raise ValueError(f"{corpus / 'corpus.json'} lists no training voices")
    config = SynthConfig(
        out=str(corpus), **{k: tuple(v) for k, v in summary["config"].items() if k.endswith("_range")}
    )
    rng = random.Random(f"{seed}:general:prosody")
    rng.shuffle(voices)
    records = []
    for i, text in enumerate(sentences(vocabulary, n, seed)):
        item_id, voice, prosody = f"{SPLIT}-{i:05d}", voices[i % len(voices)], _prosody(rng, config)
        records.append(
            {
                "id": item_id,
                "text": text,
                "audio": _user_audio_path(SPLIT, item_id, text, voice, prosody),
                "reply_text": "",
                "voice": voice,
                "category": SPLIT,
                "prosody": prosody,
            }
        )
    return records


def build_general(
    corpus: Path, n: int, vocabulary_size: int, seed: int, workers: int, progress: bool = True
) -> dict:
    """Renders the general sentences into `corpus`, writes general.jsonl and general.json; returns the latter."""
    vocabulary = english_vocabulary(vocabulary_size)
    records = plan_general(corpus, n, vocabulary, seed)
    jobs = [user_job(r["text"], r["audio"], r["voice"], r["prosody"]) for r in records]
    rendered = render_audio(jobs, corpus, workers, progress)
    _write_jsonl(corpus / f"{SPLIT}.jsonl", records)
    used = Counter(w.lower().strip(".?") for r in records for w in r["text"].split())
    summary = {
        "sentences": n,
        "vocabulary_size": vocabulary_size,
        "words_heard": len(used),
        "voices": dict(sorted(Counter(r["voice"] for r in records).items())),
        "seed": seed,
        "rendered_files": rendered,
    }
    (corpus / f"{SPLIT}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_sentence_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, default_sentences: int
) -> argparse.Namespace:
    """Adds --sentences --vocabulary --seed --workers (shared with training.data.assistant_speech),
    parses `argv` and checks them."""
    parser.add_argument(
        "--sentences",
        type=int,
        default=default_sentences,
        help=f"how many sentences (default {default_sentences})",
    )
    parser.add_argument("--vocabulary", type=int, default=3000, help="most frequent English words drawn from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="parallel TTS processes")
    args = parser.parse_args(argv)
    if args.sentences < 1 or args.vocabulary < 10:
        parser.error("--sentences must be >= 1 and --vocabulary >= 10")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.general_speech",
        description="Add general-vocabulary user speech (random English word sequences, training voices "
        "only) to a corpus built by training.data.synth, for the ear's CTC stages.",
    )
    parser.add_argument(
        "--corpus", required=True, help="corpus folder of training.data.synth (holds corpus.json)"
    )
    args = parse_sentence_arguments(parser, argv, default_sentences=6000)
    corpus = Path(args.corpus)
    if not (corpus / "corpus.json").is_file():
        parser.error(f"{corpus} holds no corpus.json: build it with python -m training.data.synth first")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)  # resampling threads would fight the TTS processes for the cores
    summary = build_general(corpus, args.sentences, args.vocabulary, args.seed, args.workers)
    logger.info("wrote %s: %s", corpus / f"{SPLIT}.jsonl", summary)
    return summary


if __name__ == "__main__":
    main()
