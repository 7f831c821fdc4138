"""Pieces every supervised recipe shares: data set-up, freezing, the step loop with exact resume."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from core.checkpoint import Checkpoint, from_pretrained, save_pretrained
from core.sequence import Batch, SequenceBuilder
from training.data import (
    CoMMixingConfig,
    LengthBucketSampler,
    MelCache,
    SpeechTextDataset,
    read_manifest,
)
from training.data.augment import AugmentedMels
from training.data.splice import SplicedMels, filler_pool
from training.metrics import MetricsLogger
from training.runtime import (
    Runtime,
    Trainer,
    deepspeed_config_path,
    latest_state,
    load_deepspeed_config,
    setup_runtime,
)
from training.schedule import build_scheduler

log = logging.getLogger(__name__)

FREEZABLE = (
    "encoder",
    "encoder.whisper",
    "encoder.adapter",
    "llm",
    "llm.lm_head",
    "speech_grouping",
    "ungrouping",
    "srh",
    "srh_text",
)


def freeze(model: torch.nn.Module, prefixes: list[str]) -> tuple[int, int]:
    """Sets requires_grad=False on parameters whose name starts with one of `prefixes`.

    Returns:
        (trainable, frozen) parameter counts.
    """
    for prefix in prefixes:
        if not any(name == prefix or name.startswith(prefix + ".") for name, _ in model.named_parameters()):
            raise ValueError(f"freeze: no parameters under {prefix!r}; choose from {', '.join(FREEZABLE)}")
    trainable = frozen = 0
    for name, p in model.named_parameters():
        if any(name == f or name.startswith(f + ".") for f in prefixes):
            p.requires_grad_(False)
            frozen += p.numel()
        else:
            trainable += p.numel()
    return trainable, frozen


def load_init(init: str, runtime: Runtime) -> Checkpoint:
    """The starting checkpoint (a core checkpoint directory or hub id), in fp32 on the run's device."""
    ckpt = from_pretrained(init, device=runtime.device)
    ckpt.model.float().train()
    return ckpt


def build_dataset(
    ckpt: Checkpoint,
    manifest: str,
    mel_cache: str | None,
    modes: list[str],
    ratios: dict[str, float] | None,
    seed: int,
    augment: bool = False,
    splice_manifest: str | None = None,
    splice_probability: float = 0.5,
) -> SpeechTextDataset:
    """CoM-Mixing dataset of a manifest; `augment` perturbs user log-mels afresh on every access
    (`training.data.augment`), `splice_manifest` splices its recordings around user questions at
    `splice_probability` (`training.data.splice`); both for continuous user audio only."""
    cfg = ckpt.model.config
    builder = SequenceBuilder(cfg, ckpt.tokenizer)
    items = read_manifest(manifest)
    features = MelCache(mel_cache, cfg.encoder["n_mels"]) if cfg.user_audio == "continuous" else None
    if splice_manifest and features is None:
        raise ValueError("splicing filler speech needs a continuous speech encoder (user_audio is discrete)")
    if splice_manifest:
        voices = {item.audio: item.voice for item in items if item.audio is not None and item.voice}
        features = SplicedMels(
            features,
            filler_pool(read_manifest(splice_manifest)),
            voices,
            probability=splice_probability,
            seed=seed,
            max_frames=ckpt.model.encoder.cfg.window_mel_frames,
        )
    if augment and features is not None:
        features = AugmentedMels(features, seed=seed)
    mixing = CoMMixingConfig(modes=tuple(modes), ratios=ratios, seed=seed)
    return SpeechTextDataset(items, builder, features, mixing)


@dataclass
class LoopSettings:
    output_dir: Path
    max_steps: int
    log_every: int
    save_every: int
    keep_states: int
    resume: bool


def train_loop(
    trainer: Trainer,
    sampler: LengthBucketSampler,
    get_batch: Callable[[list[int]], Batch],
    loss_fn: Callable[[Batch], dict[str, torch.Tensor]],
    settings: LoopSettings,
    runtime: Runtime,
    desc: str,
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int = 0,
) -> int:
    """Runs optimiser steps until `max_steps`, logging and saving a resumable state.

    `loss_fn(batch)` returns a dict with "loss" (optimised) and other scalars to log. A run whose
    output_dir holds a complete state resumes right after it (model, optimiser, scheduler, data
    position and RNG restored), so its loss curve continues exactly as an uninterrupted one.

    Returns:
        The last step.
    """
    out = settings.output_dir
    metrics = MetricsLogger(out) if runtime.is_main else None
    step = 0
    state = latest_state(out) if settings.resume else None
    if state is not None:
        step, extra = trainer.load_state(state)
        sampler.load_state_dict(extra["sampler"])
        log.info("resumed from %s (step %d)", state, step)
    if metrics is not None:
        metrics.truncate_after(step + 1)
    bar = tqdm(
        total=settings.max_steps, initial=step, desc=desc, disable=not runtime.is_main, dynamic_ncols=True
    )
    start = time.perf_counter()
    while step < settings.max_steps:
        for indices in sampler:
            batch = get_batch(indices)
            values = loss_fn(batch)
            grad_norm = trainer.step(values["loss"])
            step += 1
            bar.update(1)
            if step % settings.log_every == 0 or step == settings.max_steps:
                # every rank joins the all-reduce (a collective on rank 0 alone would hang)
                scalars = {k: runtime.all_reduce_mean(float(v.detach())) for k, v in values.items()}
                if metrics is not None:
                    scalars.update(lr=trainer.lr, grad_norm=grad_norm, elapsed_s=time.perf_counter() - start)
                    metrics.log(step, **scalars)
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}")
            if evaluate is not None and eval_every and step % eval_every == 0 and metrics is not None:
                metrics.log(step, **{f"val_{k}": v for k, v in evaluate().items()})
            if step % settings.save_every == 0 or step == settings.max_steps:
                trainer.save_state(out, step, {"sampler": sampler.state_dict()}, keep=settings.keep_states)
            if step >= settings.max_steps:
                break
    bar.close()
    if metrics is not None:
        keys = [k for k in ("loss", "text_loss", "speech_loss") if any(k in r for r in metrics.records())]
        metrics.plot("loss.png", keys=keys or None)
        metrics.close()
    return step


def save_final(directory: Path, ckpt: Checkpoint, runtime: Runtime, extra: dict[str, Any]) -> Path | None:
    """Writes the trained model as a core checkpoint (rank 0), with the starting checkpoint's codec."""
    if not runtime.is_main:
        return None
    path = save_pretrained(directory, ckpt.model.eval(), ckpt.tokenizer, codec=ckpt.codec, extra=extra)
    if ckpt.codec is None and (ckpt.path / "codec").is_dir():
        shutil.copytree(ckpt.path / "codec", path / "codec", dirs_exist_ok=True)
    return path


def make_trainer(
    model: torch.nn.Module,
    runtime: Runtime,
    *,
    max_steps: int,
    peak_lr: float,
    final_lr: float,
    warmup_fraction: float,
    weight_decay: float,
    grad_clip: float,
    precision: str,
    deepspeed: str | None,
) -> Trainer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(params, lr=peak_lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    scheduler = build_scheduler(optimizer, max_steps, peak_lr, final_lr, warmup_fraction)
    return Trainer(
        model, optimizer, scheduler, runtime, load_deepspeed_config(deepspeed), grad_clip, precision
    )


def make_runtime(device: str, deepspeed: str | None, seed: int) -> Runtime:
    runtime = setup_runtime(device, use_deepspeed=bool(deepspeed_config_path(deepspeed)))
    torch.manual_seed(seed)
    return runtime
