"""CTC pretraining of a from-scratch speech encoder on the user transcripts.

    python -m training.recipes.encoder_ctc --init runs/demo/align_init \\
        --train_manifest runs/demo/train.tokens.jsonl --validation_manifest runs/demo/validation.tokens.jsonl \\
        --mel_cache runs/demo/mels --output_dir runs/demo/encoder_ctc

The paper starts from a pretrained Whisper encoder. A randomly initialised one, trained only through
the LLM's loss, collapses: the cheapest loss reduction is a constant "soft prompt", every utterance
gives the same features (measured on the demo: cosine 0.9999 between two questions after 200 steps)
and the LLM learns to ignore them. This recipe first teaches the Whisper encoder (not the adapter)
to hear: a linear character classifier on its 50 Hz states, trained with CTC on the transcripts of
the user turns. The classifier is discarded; the checkpoint keeps the trained encoder. Greedy CTC
character error rate on held-out items is logged (`metrics.jsonl`, `loss.png`).

`--augment` perturbs every training utterance afresh (tempo 0.85-1.15 by resampling the time axis,
a vocal-tract-length-like warp of the mel axis by 0.88-1.12, two time and two frequency masks), so
that the encoder meets more "voices" than the corpus has; the classifier itself is saved as
`ctc_head.safetensors` next to `final/` for later diagnosis. At the end the character error rate
on every validation utterance is written per voice to `cer_by_voice.json` (held-out voices show how
far the encoder generalises).

Batches hold items of near-equal length (sorted by length); each item is padded to the batch's
longest with Whisper's silence value, which the few padded frames see through attention.
Recordings longer than one encoder window (30 s for real Whisper) are left out with a warning.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from core.encoder import whisper_padding_value
from training.cli import arg, parse_config, save_config
from training.data import MelCache, read_manifest
from training.data.augment import TEMPO, augment_mel
from training.eval.scoring import edit_distance
from training.metrics import MetricsLogger
from training.schedule import build_scheduler

log = logging.getLogger(__name__)

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"  # CTC classes: blank (0) + these characters


@dataclass
class EncoderCTCConfig:
    init: str = arg("", "core checkpoint with a continuous speech encoder")
    train_manifest: str = arg("", "manifest whose user turns (audio + text) are the training data")
    validation_manifest: str | None = arg(None, "manifest for the character error rate (None: no CER)")
    output_dir: str = arg("runs/encoder_ctc", "metrics.jsonl, loss.png and final/ go here")
    mel_cache: str | None = arg(None, "folder of cached user log-mels")
    max_steps: int = arg(1500, "optimiser steps")
    batch_size: int = arg(32, "utterances per batch")
    peak_lr: float = arg(1e-3, "peak learning rate")
    final_lr: float = arg(1e-4, "learning rate at the last step (cosine)")
    warmup_fraction: float = arg(0.05, "linear warmup as a fraction of max_steps")
    grad_clip: float = arg(1.0, "max gradient norm")
    augment: bool = arg(False, "tempo, mel-axis warp and SpecAugment masks on every training utterance")
    eval_every: int = arg(250, "steps between CER measurements")
    eval_items: int = arg(64, "validation utterances per CER measurement")
    log_every: int = arg(10, "steps between metric lines")
    device: str = arg("auto", "auto, cpu or cuda")
    seed: int = arg(0, "data order and classifier initialisation")

    def __post_init__(self) -> None:
        if not self.init or not self.train_manifest:
            raise ValueError("--init and --train_manifest are required")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError("--max_steps and --batch_size must be >= 1")


def characters(text: str) -> list[int]:
    """CTC targets of a transcript: lower-case letters, apostrophe, single spaces (1-based ids)."""
    clean = re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " "))
    return [ALPHABET.index(c) + 1 for c in " ".join(clean.split())]


def greedy_decode(log_probs: torch.Tensor) -> list[int]:
    """Best path of one item (T, C): merge repeats, drop blanks."""
    best = log_probs.argmax(-1).tolist()
    return [c for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]


class Utterance(NamedTuple):
    mel: torch.Tensor  # (n_mels, F) log-mel
    target: list[int]  # characters (1-based ALPHABET indices)
    voice: str  # the manifest's voice name ("" when it has none)


def _utterances(manifest: str, cache: MelCache, max_frames: int) -> list[Utterance]:
    """An `Utterance` per distinct user recording with a transcript; recordings longer
    than `max_frames` (one encoder window) are left out and counted in a warning."""
    seen, out, too_long = set(), [], 0
    for item in read_manifest(manifest):
        if not item.audio or not item.text or item.audio in seen:
            continue
        seen.add(item.audio)
        target = characters(item.text)
        if not target:
            continue
        if cache.frames(item.audio) > max_frames:
            too_long += 1
            continue
        out.append(Utterance(cache.get(item.audio), target, item.voice or ""))
    if too_long:
        log.warning(
            "%s: %d recordings over %d mel frames (one encoder window) left out",
            manifest,
            too_long,
            max_frames,
        )
    return out


def cer_by_voice(utts: list[Utterance], errors: list[int]) -> dict[str, dict]:
    """{voice: {"cer", "characters", "utterances"}}, voices sorted by name ("" = unnamed)."""
    table: dict[str, dict] = {}
    for u, e in zip(utts, errors, strict=True):
        row = table.setdefault(u.voice, {"errors": 0, "characters": 0, "utterances": 0})
        row["errors"] += e
        row["characters"] += len(u.target)
        row["utterances"] += 1
    return {
        v: {
            "cer": r["errors"] / max(r["characters"], 1),
            "characters": r["characters"],
            "utterances": r["utterances"],
        }
        for v, r in sorted(table.items())
    }


def _batch(utts: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mels padded with each item's silence value to the longest, and their lengths."""
    longest = max(u.mel.shape[-1] for u in utts)
    mels = torch.stack(
        [
            torch.cat(
                [u.mel, whisper_padding_value(u.mel).expand(u.mel.shape[0], longest - u.mel.shape[-1])], -1
            )
            for u in utts
        ]
    )
    return mels, torch.tensor([u.mel.shape[-1] for u in utts])


def ctc_training(
    cfg,
    batches: list[list],
    forward: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    params: list[torch.nn.Parameter],
    metrics: MetricsLogger,
    score_name: str,
    score: Callable[[], float] | None,
    desc: str,
    extra: Callable[[], dict] = dict,
) -> None:
    """The CTC step loop shared by `encoder_ctc` and `adapter_ctc`.

    `cfg` carries max_steps, peak_lr, final_lr, warmup_fraction, grad_clip, eval_every, log_every and
    seed; `forward(utts, train=True)` returns ((B, T, C) log-probs, (B,) frame counts) for a batch of
    items with a `target` (1-based class ids, 0 = blank); `score()` (e.g. the validation error rate)
    is logged as `score_name` every `eval_every` steps and at the last; `extra()` adds scalars to
    every metric line. Batches are visited in a fresh seeded order every epoch.
    """
    optimizer = torch.optim.AdamW(params, lr=cfg.peak_lr, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, cfg.max_steps, cfg.peak_lr, cfg.final_lr, cfg.warmup_fraction)
    order: list[int] = []
    rng = random.Random(cfg.seed)
    for step in tqdm(range(1, cfg.max_steps + 1), desc=desc, dynamic_ncols=True):
        if not order:
            order = list(range(len(batches)))
            rng.shuffle(order)
        utts = batches[order.pop()]
        log_probs, frames = forward(utts, train=True)
        device = log_probs.device  # CUDA's CTC wants every argument on the GPU
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),
            torch.tensor([c for u in utts for c in u.target], device=device),
            frames.to(device),
            torch.tensor([len(u.target) for u in utts], device=device),
            zero_infinity=True,
        )
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        record = {}
        if score is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            record[score_name] = score()
            log.info(
                "step %d: CTC loss %.3f, validation %s %.3f",
                step,
                loss.item(),
                score_name,
                record[score_name],
            )
        if step % cfg.log_every == 0 or record:
            metrics.log(
                step, loss=loss, grad_norm=grad_norm, lr=scheduler.get_last_lr()[0], **extra(), **record
            )


def run(cfg: EncoderCTCConfig) -> Path:
    from core.checkpoint import from_pretrained, save_pretrained
    from training.runtime import setup_runtime

    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    device = setup_runtime(cfg.device).device
    ckpt = from_pretrained(cfg.init, device=device, dtype=torch.float32)
    encoder = ckpt.model.encoder
    if encoder is None:
        raise ValueError(f"{cfg.init} has no continuous speech encoder (user_audio is discrete)")
    cache = MelCache(cfg.mel_cache, encoder.cfg.n_mels)
    window = encoder.cfg.window_mel_frames
    # slowed down by tempo augmentation, an utterance may grow by 1 / TEMPO[0]
    longest = int(window * TEMPO[0]) if cfg.augment else window
    train = sorted(_utterances(cfg.train_manifest, cache, longest), key=lambda u: u.mel.shape[-1])
    every_valid = _utterances(cfg.validation_manifest, cache, window) if cfg.validation_manifest else []
    valid = every_valid[: cfg.eval_items]
    log.info("CTC on %d training utterances, CER on %d", len(train), len(valid))
    head = torch.nn.Linear(encoder.cfg.n_audio_state, len(ALPHABET) + 1).to(device)
    params = list(encoder.whisper.parameters()) + list(head.parameters())
    batches = [train[i : i + cfg.batch_size] for i in range(0, len(train), cfg.batch_size)]
    metrics = MetricsLogger(out)
    metrics.truncate_after(0)  # no resume: a rerun starts afresh and must not append to an old curve

    generator = torch.Generator().manual_seed(cfg.seed)

    def forward(utts, train: bool = False):
        if train and cfg.augment:
            utts = [u._replace(mel=augment_mel(u.mel, generator)) for u in utts]
        mels, lengths = _batch(utts)
        states = encoder._encode_windows(mels.to(device, encoder.whisper.conv1.weight.dtype))  # (B, T, d)
        return F.log_softmax(head(states).float(), -1), (lengths + 1) // 2

    def errors(utts: list[Utterance]) -> list[int]:
        """Character edit distance of each utterance's greedy transcript."""
        encoder.eval()
        with torch.no_grad():
            out = [edit_distance(u.target, greedy_decode(forward([u])[0][0])) for u in utts]
        encoder.train()
        return out

    def cer() -> float:
        return sum(errors(valid)) / max(sum(len(u.target) for u in valid), 1)

    encoder.train()
    ctc_training(cfg, batches, forward, params, metrics, "cer", cer if valid else None, "encoder CTC")
    metrics.plot(out / "loss.png", keys=("loss", "cer") if valid else ("loss",))
    metrics.close()
    save_file(
        {k: v.contiguous().cpu() for k, v in head.state_dict().items()}, str(out / "ctc_head.safetensors")
    )
    if every_valid:
        by_voice = cer_by_voice(every_valid, errors(every_valid))
        (out / "cer_by_voice.json").write_text(json.dumps(by_voice, indent=2) + "\n")
        log.info("validation CER by voice: %s", ", ".join(f"{v} {r['cer']:.3f}" for v, r in by_voice.items()))
    extra = {**ckpt.extra, "recipe": "encoder_ctc", "ctc_steps": cfg.max_steps, "ctc_augment": cfg.augment}
    return save_pretrained(out / "final", ckpt.model.eval(), ckpt.tokenizer, codec=ckpt.codec, extra=extra)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"output: {run(parse_config(EncoderCTCConfig, argv, __doc__))}")


if __name__ == "__main__":
    main()
