"""SRH pretraining (paper §3.3 "Initialization", appendix A "SRH-PT", appendix C "SRH-Pretraining Policy").

    python -m training.recipes.srh_pretrain --config training/configs/srh_pretrain_tiny.yaml
    python -m training.recipes.srh_pretrain --config C.yaml --strategy standalone
    torchrun --nproc_per_node 8 -m training.recipes.srh_pretrain --config C.yaml --deepspeed training/configs/zero2.json

Two strategies (`--strategy`), both on the TTS (T2M) objective at 25 Hz:

- `standalone` (strategy 1): a standalone causal LM with the SRH's architecture (the paper:
  Qwen2.5-0.5B) is trained on [reply text] [speech bos] [speech tokens] [speech eos] with the loss on
  the speech positions (`training/tts_lm.py`). It starts from the SRH of --init (so a checkpoint
  built with a pretrained SRH initialisation trains those layers); its text rows start random.
  Afterwards its decoder layers and final norm become `srh.decoder`, the speech rows of its
  embeddings `srh.decoder.embed_tokens` and of its LM head `srh.head`. Outputs: <output_dir>/tts_lm
  (Hugging Face directory, `build --srh_init` takes it) and <output_dir>/final (the --init checkpoint
  with that SRH; every other weight unchanged).
- `frozen_backbone` (strategy 2, better in the paper: S2S 47.66 -> 56.66): the encoder, adapter,
  shared LLM and text head are frozen; the SRH, the ungrouping projection and the speech grouping
  / embeddings (all new) are trained with the streaming TTS objective, i.e. the SFT loop on the
  T2M (and S2M) variants with text_loss_weight = 0 (`training.recipes.sft.run`). Output:
  <output_dir>/final.

AdamW, cosine 1e-4 -> 1e-5 with 2% warmup (appendix A: SRH-PT uses stage 1's schedule), exact
resume from <output_dir>/state, metrics.jsonl + loss.png.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

from core.checkpoint import load_config, resolve_checkpoint
from training.cli import arg, parse_config, save_config
from training.data import LengthBucketSampler, read_manifest
from training.recipes.common import (
    LoopSettings,
    load_init,
    make_runtime,
    make_trainer,
    save_final,
    train_loop,
)
from training.recipes.sft import SFTConfig
from training.recipes.sft import run as run_sft
from training.runtime import autocast
from training.tts_lm import build_tts_lm, collate_t2m, init_from_srh, load_into_srh, t2m_sequence

log = logging.getLogger(__name__)

STRATEGIES = ("standalone", "frozen_backbone")
FROZEN_BACKBONE = ("encoder", "llm")  # encoder + adapter, shared LLM + text head (appendix C)


@dataclass
class SRHPretrainConfig:
    strategy: str = arg("frozen_backbone", "standalone (TTS LM loaded into the SRH) or frozen_backbone")
    init: str = arg("", "core checkpoint whose SRH is pretrained (directory or hub id), e.g. from `build`")
    train_manifest: str = arg("", "training manifest (JSONL, tokenised: reply_tokens filled)")
    output_dir: str = arg("runs/srh_pretrain", "where states, metrics.jsonl, loss.png, tts_lm/ and final/ go")
    mel_cache: str | None = arg(None, "frozen_backbone, S2M: folder of cached user log-mels")
    modes: list[str] = arg(["T2M", "S2M"], "frozen_backbone: the streaming TTS variants to train on")
    max_steps: int = arg(1000, "optimiser steps")
    max_tokens: int = arg(4096, "padded positions per batch (per process): TTS LM or shared LLM positions")
    max_batch_size: int | None = arg(None, "cap on examples per batch")
    peak_lr: float = arg(1e-4, "peak learning rate (appendix A: 1e-4)")
    final_lr: float = arg(1e-5, "learning rate at the last step (cosine)")
    warmup_fraction: float = arg(0.02, "linear warmup as a fraction of max_steps (2%)")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "max gradient norm (0 = off)")
    seed: int = arg(0, "seeds data order and initialisation")
    log_every: int = arg(10, "steps between metric lines")
    save_every: int = arg(200, "steps between resumable states")
    keep_states: int = arg(2, "resumable states kept on disk")
    resume: bool = arg(True, "continue from the newest state in output_dir")
    precision: str = arg("bf16", "bf16 (GPU) or fp32; CPUs always run fp32")
    device: str = arg("auto", "auto, cpu or cuda")
    deepspeed: str | None = arg(None, "DeepSpeed config JSON (ZeRO-2: training/configs/zero2.json)")

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not self.init:
            raise ValueError("--init is required (a core checkpoint whose SRH is pretrained)")
        if not self.train_manifest:
            raise ValueError("--train_manifest is required")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"--precision must be bf16 or fp32, got {self.precision!r}")
        if self.max_steps < 1:
            raise ValueError(f"--max_steps must be >= 1, got {self.max_steps}")
        if self.strategy == "frozen_backbone" and not self.modes:
            raise ValueError("--modes is empty: frozen_backbone trains on T2M (and S2M) variants")


def sft_config(cfg: SRHPretrainConfig) -> SFTConfig:
    """Strategy 2 as an SFT run: the backbone frozen, the text loss off (lambda = 0)."""
    user_audio = load_config(resolve_checkpoint(cfg.init))["model"]["user_audio"]
    freeze = [p for p in FROZEN_BACKBONE if p != "encoder" or user_audio == "continuous"]
    overrides = {"mode_ratios": None, "text_loss_weight": 0.0, "speech_loss_weight": 1.0, "freeze": freeze}
    shared = {f.name: getattr(cfg, f.name) for f in fields(SFTConfig) if hasattr(cfg, f.name)}
    return SFTConfig(**{**shared, **overrides})


def run_frozen_backbone(cfg: SRHPretrainConfig) -> Path | None:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "srh_pretrain.yaml")  # sft.run writes the resolved SFT config.yaml
    return run_sft(sft_config(cfg), desc="srh_pretrain")


def run_standalone(cfg: SRHPretrainConfig) -> Path | None:
    runtime = make_runtime(cfg.device, cfg.deepspeed, cfg.seed)
    out = Path(cfg.output_dir)
    if runtime.is_main:
        save_config(cfg, out / "srh_pretrain.yaml")
    ckpt = load_init(cfg.init, runtime)
    mcfg = ckpt.model.config
    text_vocab, speech_vocab = int(mcfg.llm["vocab_size"]), mcfg.speech_vocab_size
    tts_lm = build_tts_lm(mcfg.srh, text_vocab, speech_vocab)
    init_from_srh(tts_lm, ckpt.model.srh)
    tts_lm.to(runtime.device).float().train()
    log.info(
        "TTS LM: %d parameters, vocab %d text + %d speech",
        tts_lm.num_parameters(),
        text_vocab,
        speech_vocab + 3,
    )

    items = [it for it in read_manifest(cfg.train_manifest) if it.reply_tokens]
    if not items:
        raise ValueError(
            f"{cfg.train_manifest} has no item with reply_tokens: run training.data.tokenize first"
        )
    limit = int(getattr(tts_lm.config, "max_position_embeddings", 1 << 30))
    sequences = [
        t2m_sequence(
            ckpt.tokenizer.encode(it.reply_text, add_special_tokens=False),
            it.reply_tokens,
            text_vocab,
            speech_vocab,
        )
        for it in items
    ]
    kept = [s for s in sequences if len(s[0]) <= limit]
    if len(kept) < len(sequences):
        log.warning("skipped %d replies longer than %d positions", len(sequences) - len(kept), limit)
    sampler = LengthBucketSampler(
        [len(s[0]) for s in kept],
        cfg.max_tokens,
        seed=cfg.seed,
        max_batch_size=cfg.max_batch_size,
        num_replicas=runtime.world_size,
        rank=runtime.rank,
    )
    pad_id = text_vocab + mcfg.speech_pad
    trainer = make_trainer(
        tts_lm,
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

    def get_batch(indices: list[int]) -> dict:
        return {k: v.to(runtime.device) for k, v in collate_t2m([kept[i] for i in indices], pad_id).items()}

    def loss_fn(batch: dict) -> dict:
        with autocast(runtime, cfg.precision):
            loss = trainer.model(**batch).loss
        return {"loss": loss, "speech_loss": loss.detach()}

    settings = LoopSettings(out, cfg.max_steps, cfg.log_every, cfg.save_every, cfg.keep_states, cfg.resume)
    train_loop(trainer, sampler, get_batch, loss_fn, settings, runtime, "srh_pretrain:standalone")
    if not runtime.is_main:
        return None
    tts_lm.eval()
    tts_lm.save_pretrained(out / "tts_lm")
    ckpt.tokenizer.save_pretrained(str(out / "tts_lm"))  # its text ids are the text rows
    load_into_srh(tts_lm, ckpt.model.srh)
    extra = {"recipe": "srh_pretrain", "strategy": "standalone", "init": cfg.init, "steps": cfg.max_steps}
    return save_final(out / "final", ckpt, runtime, extra)


def run(cfg: SRHPretrainConfig) -> Path | None:
    """Pretrains the SRH; returns the final core checkpoint directory (None on ranks other than 0)."""
    return run_standalone(cfg) if cfg.strategy == "standalone" else run_frozen_backbone(cfg)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = run(parse_config(SRHPretrainConfig, argv, __doc__))
    if path is not None:
        print(f"final checkpoint: {path}")


if __name__ == "__main__":
    main()
