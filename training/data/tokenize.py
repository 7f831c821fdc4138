"""Tokenization step: reply speech -> 25 Hz codes once, user speech -> cached log-mels once.

    python -m training.data.tokenize --manifest data/train.jsonl --codec checkpoints/demo/codec \\
        [--out data/train.tokens.jsonl] [--mels-cache data/mels --n-mels 80] [--overwrite]

Writes a new manifest (default `<name>.tokens.jsonl` next to the input; a `*.tokens.jsonl` input is
updated in place) whose items carry `reply_tokens`; items that already have them are skipped, so
the step can be re-run after adding items. `--codec` is a units-codec folder (`units_codec.json`)
or a DrVoice checkpoint folder (its `config.json` names the codec). With `--mels-cache`, the
log-mels of every user recording (history turns included) are computed into that cache, so
training reads them instead of recomputing the encoder's front end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from core.codec.base import SpeechTokenizer
from training.data.manifest import ManifestItem, read_manifest, write_manifest
from training.data.mel_cache import MelCache

logger = logging.getLogger(__name__)

DEFAULT_N_MELS = 80  # tiny / demo encoders; Whisper large-v3 uses 128


def tokenize_manifest(
    items: Sequence[ManifestItem],
    tokenizer: SpeechTokenizer,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> list[ManifestItem]:
    """Fills `reply_tokens` of every item that has `reply_audio`.

    Args:
        items: manifest items (not modified).
        tokenizer: a `SpeechTokenizer` (`encode(Waveform) -> (T,)` codes at 25 Hz).
        overwrite: re-tokenise items that already have `reply_tokens`.
        progress: show a tqdm bar.

    Returns:
        new items, in the same order (unchanged items are the same objects).
    """
    from core.audio import load_audio
    from training.data.mel_cache import MAX_AUDIO_BYTES, MAX_AUDIO_SECONDS

    rate = int(getattr(tokenizer, "sample_rate", 16000))
    codebook = int(tokenizer.codebook_size)
    done = skipped = no_audio = 0
    result = []
    for item in tqdm(items, desc="reply tokens", disable=not progress):
        if item.reply_audio is None:
            no_audio += 1
        elif item.reply_tokens is not None and not overwrite:
            skipped += 1
        else:
            waveform = load_audio(
                item.reply_audio,
                target_rate=rate,
                max_seconds=MAX_AUDIO_SECONDS,
                max_bytes=MAX_AUDIO_BYTES,
                min_seconds=0.0,
                silence_threshold_dbfs=None,
            )
            codes = tokenizer.encode(waveform).reshape(-1)
            tokens = [int(t) for t in codes.tolist()]
            if any(not 0 <= t < codebook for t in tokens):
                raise ValueError(f"{item.where or item.id}: tokenizer returned codes outside [0, {codebook})")
            item = dataclasses.replace(item, reply_tokens=tokens)
            done += 1
        result.append(item)
    logger.info(
        "reply tokens: %d tokenised, %d already had tokens, %d without reply audio", done, skipped, no_audio
    )
    return result


def precompute_mels(items: Sequence[ManifestItem], cache: MelCache, *, progress: bool = False) -> int:
    """Computes the cached log-mels of every user recording of `items`; returns how many were new."""
    paths = list(dict.fromkeys(p for item in items for p in item.audio_paths()))  # unique, in order
    computed = 0
    for path in tqdm(paths, desc="user log-mels", disable=not progress):
        if not cache.contains(path):
            cache.get(path)
            computed += 1
    logger.info("user log-mels: %d computed, %d already cached", computed, len(paths) - computed)
    return computed


def load_speech_tokenizer(directory: str | Path) -> SpeechTokenizer:
    """The speech tokenizer of a units-codec folder or of a DrVoice checkpoint folder."""
    from core.codec.units import CONFIG_NAME, UnitsCodec

    directory = Path(directory)
    if (directory / CONFIG_NAME).is_file():
        return UnitsCodec.load(directory)
    config_file = directory / "config.json"
    if config_file.is_file():
        from core.codec.registry import load_codec

        codec = load_codec(json.loads(config_file.read_text()).get("codec"), directory)
        if codec is None or not hasattr(codec, "encode"):
            raise ValueError(f"the checkpoint {directory} has no speech tokenizer (codec type 'none')")
        return codec
    raise FileNotFoundError(f"{directory} holds neither {CONFIG_NAME} (a units codec) nor config.json")


def default_output(manifest: Path) -> Path:
    """`data/train.jsonl` -> `data/train.tokens.jsonl`; a `*.tokens.jsonl` file maps to itself."""
    if manifest.name.endswith(".tokens.jsonl"):
        return manifest
    stem = manifest.name[: -len(".jsonl")] if manifest.name.endswith(".jsonl") else manifest.name
    return manifest.with_name(f"{stem}.tokens.jsonl")


def _checkpoint_n_mels(directory: Path | None) -> int | None:
    config_file = directory / "config.json" if directory is not None else None
    if config_file is None or not config_file.is_file():
        return None
    encoder = json.loads(config_file.read_text()).get("encoder") or {}
    return encoder.get("n_mels")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.tokenize",
        description="Turn a manifest's reply speech into 25 Hz speech tokens (once) and cache the "
        "log-mels of its user speech.",
    )
    parser.add_argument("--manifest", required=True, type=Path, help="input manifest (JSONL)")
    parser.add_argument(
        "--codec", type=Path, help="units codec folder (units_codec.json) or DrVoice checkpoint folder"
    )
    parser.add_argument("--out", type=Path, help="output manifest (default: <name>.tokens.jsonl)")
    parser.add_argument("--mels-cache", type=Path, help="folder of the user log-mel cache")
    parser.add_argument(
        "--n-mels",
        type=int,
        default=None,
        help=f"mel bins of the cache (default: the checkpoint's encoder, else {DEFAULT_N_MELS})",
    )
    parser.add_argument("--overwrite", action="store_true", help="re-tokenise items that have reply_tokens")
    args = parser.parse_args(argv)
    if args.codec is None and args.mels_cache is None:
        parser.error("nothing to do: give --codec (reply tokens) and/or --mels-cache (user log-mels)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    items = read_manifest(args.manifest)
    if args.codec is not None:
        items = tokenize_manifest(
            items, load_speech_tokenizer(args.codec), overwrite=args.overwrite, progress=True
        )
        out = write_manifest(items, args.out or default_output(args.manifest))
        print(f"wrote {len(items)} items to {out}")
    if args.mels_cache is not None:
        n_mels = args.n_mels or _checkpoint_n_mels(args.codec) or DEFAULT_N_MELS
        computed = precompute_mels(items, MelCache(args.mels_cache, n_mels), progress=True)
        print(f"cached the {n_mels}-bin log-mels of user speech in {args.mels_cache} ({computed} new)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
