"""Supervised fine-tuning with CoM-Mixing (paper §3.3): the seven patterns, eq. (7) loss.

    python -m training.recipes.sft --config training/configs/sft_tiny.yaml
    torchrun --nproc_per_node 8 -m training.recipes.sft --config C.yaml --deepspeed training/configs/zero2.json

AdamW, cosine schedule with 2% warmup (1e-4 -> 1e-5 by default, appendix A), bf16 on GPUs,
lambda/mu loss weights, freezing options; metrics.jsonl + loss.png; exact resume from
<output_dir>/state; the result is a core checkpoint in <output_dir>/final.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from core.modes import MODE_NAMES
from training.cli import arg, parse_config, save_config
from training.data import ExampleCollator, LengthBucketSampler
from training.recipes.common import (
    LoopSettings,
    build_dataset,
    freeze,
    load_init,
    make_runtime,
    make_trainer,
    save_final,
    train_loop,
)
from training.runtime import autocast

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    init: str = arg("", "starting core checkpoint (directory or hub id), e.g. the output of `build`")
    train_manifest: str = arg("", "training manifest (JSONL, tokenised: reply_tokens filled)")
    output_dir: str = arg("runs/sft", "where states, metrics.jsonl, loss.png and final/ go")
    mel_cache: str | None = arg(None, "folder of cached user log-mels (training.data.tokenize --mels-cache)")
    modes: list[str] = arg(list(MODE_NAMES), "CoM-Mixing patterns to train on (Table 1)")
    mode_ratios: dict[str, float] | None = arg(None, "relative weight per mode; None = every variant")
    max_steps: int = arg(1000, "optimiser steps")
    max_tokens: int = arg(4096, "padded LLM positions per batch (per process)")
    max_batch_size: int | None = arg(None, "cap on examples per batch")
    peak_lr: float = arg(1e-4, "peak learning rate (stage 1 of the paper: 1e-4)")
    final_lr: float = arg(1e-5, "learning rate at the last step (cosine)")
    warmup_fraction: float = arg(0.02, "linear warmup as a fraction of max_steps (2%)")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "max gradient norm (0 = off)")
    text_loss_weight: float = arg(1.0, "lambda of eq. (7)")
    speech_loss_weight: float = arg(1.0, "mu of eq. (7)")
    speech_input_dropout: float = arg(
        0.0,
        "share of the reply's speech groups left out of the LLM input (the text stream stops leaning on them)",
    )
    freeze: list[str] = arg([], "parameter prefixes to freeze: encoder, encoder.whisper, llm, srh, ...")
    augment: bool = arg(False, "perturb user log-mels afresh each time (tempo, mel warp, SpecAugment masks)")
    splice_manifest: str | None = arg(
        None, "manifest of unrelated speech spliced around user questions (training.data.splice)"
    )
    splice_probability: float = arg(0.5, "share of user recordings that get a filler spliced on")
    seed: int = arg(0, "seeds data order and initialisation")
    log_every: int = arg(10, "steps between metric lines")
    save_every: int = arg(200, "steps between resumable states")
    keep_states: int = arg(2, "resumable states kept on disk")
    resume: bool = arg(True, "continue from the newest state in output_dir")
    precision: str = arg("bf16", "bf16 (GPU) or fp32; CPUs always run fp32")
    device: str = arg("auto", "auto, cpu or cuda")
    deepspeed: str | None = arg(None, "DeepSpeed config JSON (ZeRO-2: training/configs/zero2.json)")

    def __post_init__(self) -> None:
        if not self.init:
            raise ValueError("--init is required (a core checkpoint to start from)")
        if not self.train_manifest:
            raise ValueError("--train_manifest is required")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"--precision must be bf16 or fp32, got {self.precision!r}")
        if self.max_steps < 1:
            raise ValueError(f"--max_steps must be >= 1, got {self.max_steps}")
        if not 0.0 <= self.speech_input_dropout < 1.0:
            raise ValueError(f"--speech_input_dropout must be in [0, 1), got {self.speech_input_dropout}")


def run(cfg: SFTConfig, desc: str = "sft") -> Path | None:
    """Trains and returns the final checkpoint directory (None on ranks other than 0)."""
    runtime = make_runtime(cfg.device, cfg.deepspeed, cfg.seed)
    out = Path(cfg.output_dir)
    if runtime.is_main:
        save_config(cfg, out / "config.yaml")
    ckpt = load_init(cfg.init, runtime)
    model = ckpt.model
    model.config.text_loss_weight = cfg.text_loss_weight
    model.config.speech_loss_weight = cfg.speech_loss_weight
    model.config.speech_input_dropout = cfg.speech_input_dropout
    trainable, frozen = freeze(model, cfg.freeze)
    log.info("trainable parameters %d, frozen %d", trainable, frozen)

    dataset = build_dataset(
        ckpt,
        cfg.train_manifest,
        cfg.mel_cache,
        cfg.modes,
        cfg.mode_ratios,
        cfg.seed,
        cfg.augment,
        cfg.splice_manifest,
        cfg.splice_probability,
    )
    sampler = LengthBucketSampler(
        dataset.lengths,
        cfg.max_tokens,
        seed=cfg.seed,
        max_batch_size=cfg.max_batch_size,
        num_replicas=runtime.world_size,
        rank=runtime.rank,
    )
    collate = ExampleCollator.for_builder(dataset.builder)
    trainer = make_trainer(
        model,
        runtime,
        max_steps=cfg.max_steps,
        peak_lr=cfg.peak_lr,
        final_lr=cfg.final_lr,
        warmup_fraction=cfg.warmup_fraction,
        weight_decay=cfg.weight_decay,
        grad_clip=cfg.grad_clip,
        precision=cfg.precision,
        deepspeed=cfg.deepspeed,
    )

    def loss_fn(batch):
        with autocast(runtime, cfg.precision):
            o = trainer.model(batch)
        return {"loss": o.loss, "text_loss": o.text_loss.detach(), "speech_loss": o.speech_loss.detach()}

    settings = LoopSettings(out, cfg.max_steps, cfg.log_every, cfg.save_every, cfg.keep_states, cfg.resume)
    train_loop(
        trainer,
        sampler,
        lambda idx: collate([dataset[i] for i in idx]).to(runtime.device),
        loss_fn,
        settings,
        runtime,
        desc,
    )
    model.config.speech_input_dropout = 0.0  # a training knob: later recipes (DPO, GSPO) must not inherit it
    return save_final(
        out / "final",
        ckpt,
        runtime,
        {
            "recipe": desc,
            "init": cfg.init,
            "steps": cfg.max_steps,
            "augment": cfg.augment,
            "splice": cfg.splice_manifest is not None,
        },
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = run(parse_config(SFTConfig, argv, __doc__))
    if path is not None:
        print(f"final checkpoint: {path}")


if __name__ == "__main__":
    main()
