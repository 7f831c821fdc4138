"""Command line of the embedded units codec (`python -m core.codec.units ...` runs this).

    python -m core.codec.units fit --wav-dir DIR --out DIR --num-units K
    python -m core.codec.units refit-decoder --codec DIR --out DIR --manifest M --wav-dir DIR

`fit` learns units (and optionally the residual decoder) from recordings of the one voice;
`refit-decoder` trains a new, wider decoder on more recordings while the units stay as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from core.codec.units import UnitsCodec
from core.types import Waveform

logger = logging.getLogger(__name__)


def read_mono(path: str | Path) -> Waveform:
    """One audio file, mixed down to mono, at its own sample rate."""
    import soundfile as sf

    samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    return Waveform(samples.mean(axis=1), sample_rate)


def read_wav_dir(directory: str | Path) -> list[Waveform]:
    """All *.wav files under a folder (sorted, recursive), mixed down to mono."""
    return [read_mono(path) for path in sorted(Path(directory).rglob("*.wav"))]


MANIFEST_REPEATS = ("distinct", "sqrt", "items")


def read_manifest_audio(
    manifest: str | Path, key: str = "reply_audio", repeat: str = "distinct"
) -> list[Waveform]:
    """The WAVs a JSON Lines manifest names under `key` (paths relative to the manifest).

    Each file is read once and listed once (`distinct`), round(sqrt(n)) times (`sqrt`) or n times
    (`items`), n being how many lines name it, so that a decoder trained on the list hears the replies
    a manifest asks for often (a corpus's small talk) more often than those it names once.
    """
    if repeat not in MANIFEST_REPEATS:
        raise ValueError(f"repeat must be one of {MANIFEST_REPEATS}, got {repeat!r}")
    manifest = Path(manifest)
    counts: Counter[str] = Counter()
    for line in manifest.read_text().splitlines():
        if line.strip() and (value := json.loads(line).get(key)):
            counts[value] += 1
    times = {"distinct": lambda n: 1, "sqrt": lambda n: max(1, round(math.sqrt(n))), "items": lambda n: n}
    return [
        w
        for path in sorted(counts)
        for w in [read_mono(manifest.parent / path)] * times[repeat](counts[path])
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m core.codec.units",
        description="Fit or refit the embedded units codec (core.codec.units).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="learn units (and the residual decoder) from a folder of wavs")
    fit.add_argument("--wav-dir", required=True, help="folder with *.wav recordings of the one voice")
    fit.add_argument("--out", required=True, help="output folder (units_codec.json + .safetensors)")
    fit.add_argument("--num-units", type=int, required=True, help="codebook size K (1024 for the demo)")
    fit.add_argument("--kmeans-iters", type=int, default=30, help="Lloyd iterations")
    fit.add_argument("--decoder-steps", type=int, default=0, help="residual decoder steps (0 = lookup only)")
    fit.add_argument("--griffin-lim-iters", type=int, default=32, help="Griffin-Lim iterations at decode")
    fit.add_argument("--seed", type=int, default=0, help="seeds k-means++ and decoder training")
    fit.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    refit = commands.add_parser(
        "refit-decoder", help="train a new residual decoder for an existing codec (its units unchanged)"
    )
    refit.add_argument("--codec", required=True, help="folder of the codec to start from")
    refit.add_argument("--out", required=True, help="output folder (may equal --codec)")
    refit.add_argument("--wav-dir", action="append", default=[], help="folder of *.wav in the codec's voice")
    refit.add_argument(
        "--manifest", action="append", default=[], help="JSON Lines manifest whose audio is the codec's voice"
    )
    refit.add_argument("--manifest-key", default="reply_audio", help="audio field of --manifest lines")
    refit.add_argument(
        "--manifest-repeat",
        choices=MANIFEST_REPEATS,
        default="distinct",
        help="each --manifest recording once (distinct), or round(sqrt(n)) / n times for the n lines naming "
        "it, so that often-said replies weigh more (default distinct)",
    )
    refit.add_argument("--decoder-steps", type=int, default=2500, help="optimiser steps")
    refit.add_argument("--channels", type=int, default=256, help="decoder width")
    refit.add_argument("--blocks", type=int, default=8, help="residual blocks")
    refit.add_argument("--kernel", type=int, default=3, help="conv kernel (frames, odd)")
    refit.add_argument(
        "--dilations", type=int, nargs="+", default=[1, 2, 4, 8, 1, 2, 4, 8], help="one per block"
    )
    refit.add_argument("--crop-units", type=int, default=64, help="training crop length in units")
    refit.add_argument("--batch-size", type=int, default=8, help="crops per step")
    refit.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    refit.add_argument("--seed", type=int, default=0, help="seeds the shuffle, initialisation and crops")
    refit.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.command == "refit-decoder":
        if not args.wav_dir and not args.manifest:
            parser.error("refit-decoder needs at least one --wav-dir or --manifest")
        codec = UnitsCodec.load(args.codec)
        waveforms = [w for d in args.wav_dir for w in read_wav_dir(d)]
        waveforms += [
            w for m in args.manifest for w in read_manifest_audio(m, args.manifest_key, args.manifest_repeat)
        ]
        if not waveforms:
            parser.error("no audio found in --wav-dir / --manifest")
        minutes = sum(len(w.samples) / w.sample_rate for w in waveforms) / 60
        logger.info("refitting the decoder on %d recordings (%.1f min)", len(waveforms), minutes)
        codec.refit_decoder(
            waveforms,
            args.decoder_steps,
            channels=args.channels,
            blocks=args.blocks,
            kernel=args.kernel,
            dilations=args.dilations,
            seed=args.seed,
            progress=True,
            crop_units=args.crop_units,
            batch_size=args.batch_size,
            lr=args.lr,
        )
        codec.save(args.out)
        logger.info("saved the codec with its new decoder to %s", args.out)
        return
    waveforms = read_wav_dir(args.wav_dir)
    if not waveforms:
        parser.error(f"no .wav files under {args.wav_dir}")
    codec = UnitsCodec.fit(
        waveforms,
        args.num_units,
        seed=args.seed,
        kmeans_iters=args.kmeans_iters,
        decoder_steps=args.decoder_steps,
        progress=True,
        griffin_lim_iters=args.griffin_lim_iters,
    )
    codec.save(args.out)
    logger.info("saved %d-unit codec to %s", codec.codebook_size, args.out)


if __name__ == "__main__":
    main()
