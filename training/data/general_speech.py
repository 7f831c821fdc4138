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

`--words questions` draws instead from the words of the corpus's *training* questions, uniformly, in
the form they take inside a question ("Tuesday", "thanks", "fifty"): new combinations of words the
ear already hears, so that the adapter's CTC (`demo --question_words true`) learns to read each word
rather than recognise its 25 small-talk sentences as wholes ("Bye for now!" was heard as "four";
every word of it is in training questions). These sentences tokenise into few corpus BPE tokens,
so they fit the adapter's 5 Hz CTC, which the general English ones do not.

Output, inside --corpus: `general.jsonl` (manifest lines: id, text, audio, reply_text "", voice,
category, prosody) and `audio/general/*.wav`; `general.json` summarises the vocabulary and counts;
with `--words questions` `question_words.jsonl`, `audio/question_words/` and `question_words.json`.
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
from training.data.synth_plan import _prosody, _user_audio_path, prosody_config

logger = logging.getLogger(__name__)

SPLIT = "general"
QUESTION_WORDS_SPLIT = "question_words"
SPLITS = {"english": SPLIT, "questions": QUESTION_WORDS_SPLIT}  # --words -> manifest / audio folder name
WORD = re.compile(r"[a-z]+")
QUESTION_WORD = re.compile(r"[A-Za-z]+")
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


def question_vocabulary(manifest: Path) -> list[str]:
    """The distinct words of a manifest's questions (its `text`), sorted, each in the form it takes
    inside a question: lower case if it ever occurs there in lower case after the first word
    ("what", "thanks"), else as written ("Tuesday", "France", "DrVoice")."""
    inside, seen = set(), set()
    for line in manifest.read_text().splitlines():
        words = QUESTION_WORD.findall(json.loads(line)["text"])
        seen.update(words)
        inside.update(w for w in words[1:] if w.islower())
    if not seen:
        raise ValueError(f"{manifest} holds no question words")
    return sorted({w.lower() if w.lower() in inside else w for w in seen})


def sentences(
    vocabulary: Sequence[str],
    n: int,
    seed: int,
    lengths: tuple[int, int] = (3, 8),
    uniform: bool = False,
) -> list[str]:
    """`n` sentences of `lengths` words; word of rank r drawn with probability ~ (r + 1)^-0.5 (or
    uniformly); a capital first letter, "?" on about a third of them (the voices raise the pitch),
    "." otherwise."""
    rng = random.Random(f"{seed}:general")
    weights = [1.0 if uniform else (r + 1) ** -0.5 for r in range(len(vocabulary))]
    out = []
    for _ in range(n):
        words = rng.choices(vocabulary, weights, k=rng.randint(*lengths))
        words = ["I" if w == "i" else w for w in words]
        text = " ".join(words)
        out.append(text[0].upper() + text[1:] + ("?" if rng.random() < 1 / 3 else "."))
    return out


def plan_general(
    corpus: Path, n: int, vocabulary: Sequence[str], seed: int, split: str = SPLIT, uniform: bool = False
) -> list[dict]:
    """Manifest records of the general sentences (ids and audio folder named after `split`), voices
    taken in turn from the corpus's training voices (corpus.json), prosody drawn within the corpus's
    ranges."""
    summary = json.loads((corpus / "corpus.json").read_text())
    voices = list(summary["user_voices"]["train"])
    if not voices:
        raise ValueError(f"{corpus / 'corpus.json'} lists no training voices")
    config = prosody_config(corpus, summary)
    rng = random.Random(f"{seed}:general:prosody")
    rng.shuffle(voices)
    records = []
    for i, text in enumerate(sentences(vocabulary, n, seed, uniform=uniform)):
        item_id, voice, prosody = f"{split}-{i:05d}", voices[i % len(voices)], _prosody(rng, config)
        records.append(
            {
                "id": item_id,
                "text": text,
                "audio": _user_audio_path(split, item_id, text, voice, prosody),
                "reply_text": "",
                "voice": voice,
                "category": split,
                "prosody": prosody,
            }
        )
    return records


def build_general(
    corpus: Path,
    n: int,
    vocabulary_size: int,
    seed: int,
    workers: int,
    progress: bool = True,
    words: str = "english",
) -> dict:
    """Renders the sentences into `corpus` and writes their manifest and summary (general.jsonl /
    .json, or question_words.* for `words` "questions"); returns the summary."""
    if words not in SPLITS:
        raise ValueError(f"words must be 'english' or 'questions', got {words!r}")
    split = SPLITS[words]
    if words == "questions":
        vocabulary = question_vocabulary(corpus / "train.jsonl")
    else:
        vocabulary = english_vocabulary(vocabulary_size)
    records = plan_general(corpus, n, vocabulary, seed, split, uniform=words == "questions")
    jobs = [user_job(r["text"], r["audio"], r["voice"], r["prosody"]) for r in records]
    rendered = render_audio(jobs, corpus, workers, progress)
    _write_jsonl(corpus / f"{split}.jsonl", records)
    used = Counter(w.lower().strip(".?") for r in records for w in r["text"].split())
    summary = {
        "words": words,
        "sentences": n,
        "vocabulary_size": len(vocabulary),
        "words_heard": len(used),
        "voices": dict(sorted(Counter(r["voice"] for r in records).items())),
        "seed": seed,
        "rendered_files": rendered,
    }
    (corpus / f"{split}.json").write_text(json.dumps(summary, indent=2) + "\n")
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
    parser.add_argument(
        "--vocabulary", type=int, default=3000, help="most frequent English words drawn from (default 3000)"
    )
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
        "--words",
        choices=tuple(SPLITS),
        default="english",
        help="english: the --vocabulary most frequent English words (general.jsonl); questions: the "
        "words of the training questions, uniformly (question_words.jsonl) (default english)",
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
    summary = build_general(
        corpus, args.sentences, args.vocabulary, args.seed, args.workers, words=args.words
    )
    logger.info("wrote %s: %s", corpus / f"{SPLITS[args.words]}.jsonl", summary)
    return summary


if __name__ == "__main__":
    main()
