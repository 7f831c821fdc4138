"""Core-Cocktail training (paper §3.3, appendix A): stage 1 -> merge with the base LLM -> stage 2.

    python -m training.recipes.core_cocktail --config training/configs/core_cocktail_tiny.yaml
    python -m training.recipes.core_cocktail --config C.yaml --stage merge   # one step at a time

Stage 1 fine-tunes the whole model at a high learning rate (1e-4 -> 1e-5, cosine, 2% warmup);
the merge interpolates the shared LLM back towards the base LLM, M_r = alpha*M1 + (1-alpha)*M0
(parameters only in M1 - encoder, adapter, SRH, speech embeddings, new vocabulary rows - come from
M1; `training/merge.py`); stage 2 fine-tunes M_r at a small learning rate (2e-5 -> 2e-6).
Outputs: <output_dir>/stage1/final, <output_dir>/merged, <output_dir>/stage2/final.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from core.checkpoint import CONFIG_FILE, from_pretrained, save_pretrained
from core.modes import MODE_NAMES
from training.cli import arg, parse_config, save_config
from training.merge import merge_state_dicts
from training.recipes import sft

log = logging.getLogger(__name__)

STAGES = ("all", "1", "merge", "2")


@dataclass
class CoreCocktailConfig:
    init: str = arg("", "starting core checkpoint (e.g. the output of `build` or `srh_pretrain`)")
    base_llm: str = arg("", "M0: the base LLM (a Hugging Face causal-LM directory/id, or a core checkpoint)")
    train_manifest: str = arg("", "tokenised training manifest (CoM-Mixing is applied)")
    output_dir: str = arg("runs/core_cocktail", "stage1/, merged/, stage2/ go here")
    stage: str = arg("all", "all | 1 | merge | 2")
    alpha: float = arg(0.0, "merge weight of M1 (paper appendix A: 0; Fun-Audio-Chat: 0.5)")
    mel_cache: str | None = arg(None, "folder of cached user log-mels")
    modes: list[str] = arg(list(MODE_NAMES), "CoM-Mixing patterns (Table 1)")
    mode_ratios: dict[str, float] | None = arg(None, "relative weight per mode; None = every variant")
    stage1_steps: int = arg(1000, "optimiser steps of stage 1")
    stage1_peak_lr: float = arg(1e-4, "stage 1 peak learning rate")
    stage1_final_lr: float = arg(1e-5, "stage 1 final learning rate")
    stage2_steps: int = arg(1000, "optimiser steps of stage 2")
    stage2_peak_lr: float = arg(2e-5, "stage 2 peak learning rate")
    stage2_final_lr: float = arg(2e-6, "stage 2 final learning rate")
    warmup_fraction: float = arg(0.02, "linear warmup fraction of each stage")
    max_tokens: int = arg(4096, "padded LLM positions per batch (per process)")
    max_batch_size: int | None = arg(None, "cap on examples per batch")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "max gradient norm")
    text_loss_weight: float = arg(1.0, "lambda of eq. (7)")
    speech_loss_weight: float = arg(1.0, "mu of eq. (7)")
    speech_input_dropout: float = arg(0.0, "share of reply speech groups left out of the LLM input (sft)")
    freeze: list[str] = arg([], "parameter prefixes to freeze in both stages")
    augment: bool = arg(False, "perturb user log-mels afresh each time, in both stages (sft --augment)")
    splice_manifest: str | None = arg(
        None, "unrelated speech spliced around user questions in both stages (sft --splice_manifest)"
    )
    splice_probability: float = arg(0.5, "share of user recordings that get a filler spliced on")
    seed: int = arg(0, "seeds data order")
    log_every: int = arg(10, "steps between metric lines")
    save_every: int = arg(200, "steps between resumable states")
    resume: bool = arg(True, "continue each stage from its newest state")
    precision: str = arg("bf16", "bf16 (GPU) or fp32")
    device: str = arg("auto", "auto, cpu or cuda")
    deepspeed: str | None = arg(None, "DeepSpeed config JSON (ZeRO-2)")

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {STAGES}, got {self.stage!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.stage in ("all", "merge") and not self.base_llm:
            raise ValueError("--base_llm is required for the merge")
        if self.stage in ("all", "1", "2") and not self.train_manifest:
            raise ValueError("--train_manifest is required for training stages")
        if self.stage in ("all", "1") and not self.init:
            raise ValueError("--init is required for stage 1")

    def stage_config(self, stage: int, init: str) -> sft.SFTConfig:
        steps, peak, final = (
            (self.stage1_steps, self.stage1_peak_lr, self.stage1_final_lr)
            if stage == 1
            else (self.stage2_steps, self.stage2_peak_lr, self.stage2_final_lr)
        )
        return sft.SFTConfig(
            init=init,
            train_manifest=self.train_manifest,
            output_dir=str(Path(self.output_dir) / f"stage{stage}"),
            mel_cache=self.mel_cache,
            modes=self.modes,
            mode_ratios=self.mode_ratios,
            max_steps=steps,
            max_tokens=self.max_tokens,
            max_batch_size=self.max_batch_size,
            peak_lr=peak,
            final_lr=final,
            warmup_fraction=self.warmup_fraction,
            weight_decay=self.weight_decay,
            grad_clip=self.grad_clip,
            text_loss_weight=self.text_loss_weight,
            speech_input_dropout=self.speech_input_dropout,
            speech_loss_weight=self.speech_loss_weight,
            freeze=self.freeze,
            augment=self.augment,
            splice_manifest=self.splice_manifest,
            splice_probability=self.splice_probability,
            seed=self.seed + stage,
            log_every=self.log_every,
            save_every=self.save_every,
            resume=self.resume,
            precision=self.precision,
            device=self.device,
            deepspeed=self.deepspeed,
        )


def load_base_llm_state(base: str) -> dict[str, torch.Tensor]:
    """State dict of M0 keyed like DrVoice's `llm.*` parameters.

    A core checkpoint contributes only its shared LLM (`llm.*`); a Hugging Face causal-LM directory
    or hub id is loaded with transformers and its keys are prefixed with `llm.`.
    """
    path = Path(base)
    if (path / CONFIG_FILE).is_file() and json.loads((path / CONFIG_FILE).read_text()).get(
        "format"
    ) == "drvoice":
        state = from_pretrained(path, load_codec=False).model.state_dict()
        return {k: v for k, v in state.items() if k.startswith("llm.")}
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return {f"llm.{k}": v for k, v in model.state_dict().items()}


def merge(stage1: Path, base_llm: str, alpha: float, out: Path) -> Path:
    """Writes M_r = alpha*M1 + (1-alpha)*M0 as a core checkpoint (rules in training/merge.py)."""
    ckpt = from_pretrained(stage1)
    m1 = ckpt.model.state_dict()
    m0 = load_base_llm_state(base_llm)
    merged, report = merge_state_dicts(m1, m0, alpha, key_map=lambda k: k if k in m0 else None)
    log.info("merge (alpha=%s): %s", alpha, report.summary())
    if ckpt.model.llm.config.tie_word_embeddings:
        merged.pop("llm.lm_head.weight", None)  # tied: the embedding's merged values are the head
    missing, unexpected = ckpt.model.load_state_dict(merged, strict=False)
    if [k for k in missing if k != "llm.lm_head.weight"] or unexpected:
        raise RuntimeError(f"merged state does not fit the model: {missing[:5]} {unexpected[:5]}")
    ckpt.model.llm.tie_weights()
    extra = {**ckpt.extra, "recipe": "core_cocktail/merge", "alpha": alpha, "base_llm": base_llm}
    return save_pretrained(out, ckpt.model, ckpt.tokenizer, codec=ckpt.codec, extra=extra)


def run(cfg: CoreCocktailConfig) -> Path | None:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    stage1_final, merged, result = out / "stage1" / "final", out / "merged", None
    if cfg.stage in ("all", "1"):
        result = sft.run(cfg.stage_config(1, cfg.init), desc="core-cocktail stage 1")
    if cfg.stage in ("all", "merge"):
        if not (stage1_final / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"stage 1 output {stage1_final} is missing: run --stage 1 first")
        result = merge(stage1_final, cfg.base_llm, cfg.alpha, merged)
    if cfg.stage in ("all", "2"):
        init = merged if (merged / CONFIG_FILE).is_file() else None
        if init is None:
            raise FileNotFoundError(f"merged model {merged} is missing: run --stage merge first")
        result = sft.run(cfg.stage_config(2, str(init)), desc="core-cocktail stage 2")
    return result


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = run(parse_config(CoreCocktailConfig, argv, __doc__))
    if path is not None:
        print(f"output: {path}")


if __name__ == "__main__":
    main()
