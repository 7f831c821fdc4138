"""General-vocabulary speech in the assistant's voice, for the units codec's decoder.

    python -m training.data.assistant_speech --corpus data/corpus --sentences 3000

The units codec is fitted on the assistant replies of the training split, 24 min of speech in a
small domain (647 distinct texts). Its residual mel decoder (units -> log-mel) then hears few
contexts of each unit, and a reply word it rarely heard comes out blurred ("Hello" at the start of a reply was read back as
"Philip"). This module renders sentences of 3-8 words drawn from the most frequent English words
(`training.data.general_speech.sentences`, its own seed) with the assistant voice (flite `slt`, no
prosody change), so that `python -m core.codec.units refit-decoder` can train a wider decoder on
many more contexts without touching the units themselves.

Output, inside --corpus: `assistant_general.jsonl` (lines: id, text, audio, voice, category) and
`audio/assistant_general/*.wav`. Existing WAVs are not rendered again.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from training.data.general_speech import english_vocabulary, parse_sentence_arguments, sentences
from training.data.synth import TTSJob, _write_jsonl, render_audio
from training.data.tts import ASSISTANT_VOICE, Prosody

logger = logging.getLogger(__name__)

SPLIT = "assistant_general"
SEED_OFFSET = 1000  # the sentences differ from the user-voice general speech of the same seed


def plan_assistant_speech(n: int, vocabulary: Sequence[str], seed: int) -> list[dict]:
    """Manifest records of `n` assistant-voice sentences (paths relative to the corpus)."""
    records = []
    for i, text in enumerate(sentences(vocabulary, n, seed + SEED_OFFSET)):
        item_id = f"{SPLIT}-{i:05d}"
        digest = hashlib.sha1(f"{text}|{ASSISTANT_VOICE.name}".encode()).hexdigest()[:8]
        records.append(
            {
                "id": item_id,
                "text": text,
                "audio": f"audio/{SPLIT}/{item_id}_{digest}.wav",
                "voice": ASSISTANT_VOICE.name,
                "category": SPLIT,
            }
        )
    return records


def build_assistant_speech(
    corpus: Path, n: int, vocabulary_size: int, seed: int, workers: int, progress: bool = True
) -> list[dict]:
    """Renders the sentences into `corpus` and writes assistant_general.jsonl; returns its records."""
    records = plan_assistant_speech(n, english_vocabulary(vocabulary_size), seed)
    jobs = [TTSJob(r["audio"], r["text"], ASSISTANT_VOICE.name, Prosody(), None) for r in records]
    rendered = render_audio(jobs, corpus, workers, progress)
    _write_jsonl(corpus / f"{SPLIT}.jsonl", records)
    logger.info("%d assistant-voice sentences (%d rendered now) in %s", n, rendered, corpus)
    return records


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.assistant_speech",
        description="Render general-vocabulary sentences in the assistant voice (flite slt) for the units "
        "codec's decoder (python -m core.codec.units refit-decoder).",
    )
    parser.add_argument("--corpus", required=True, help="corpus folder (the output goes inside it)")
    args = parse_sentence_arguments(parser, argv, default_sentences=3000)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    corpus = Path(args.corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    return build_assistant_speech(corpus, args.sentences, args.vocabulary, args.seed, args.workers)


if __name__ == "__main__":
    main()
