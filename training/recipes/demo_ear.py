"""The demo pipeline's ear stages (`training.recipes.demo`): encoder CTC, then adapter CTC."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from training.recipes.demo_prepare import ctc_manifests

if TYPE_CHECKING:
    from training.recipes.demo import DemoConfig


def stage_done(path: Path) -> bool:
    """Whether a stage's output checkpoint exists (each demo stage is skipped when it does)."""
    return (path / "config.json").is_file()


def train_ear(
    cfg: DemoConfig,
    work: Path,
    init: Path,
    ctc_steps: int,
    adapter_steps: int,
    lr: tuple[float, float] = (1e-3, 1e-4),
) -> Path:
    """The ear's CTC stages from `init`: `ctc_steps` of encoder CTC (work/encoder_ctc), then
    `adapter_steps` of adapter CTC (work/adapter_ctc), each skipped at 0 steps or when done; on the
    speech stages' manifest, the encoder CTC with --general_speech on the general speech too, the
    adapter CTC only with --general_tokenizer as well (a general sentence is ~3.7 tokens of the
    corpus-trained BPE per word, more than its 5 Hz frames, so CTC finds no path through most of them);
    both with --question_words on the question-word sentences (`ctc_manifests`). Returns the last output."""
    from training.recipes import adapter_ctc, encoder_ctc

    encoder_manifest, adapter_manifest = ctc_manifests(cfg, work)
    shared = dict(
        validation_manifest=str(work / "validation.tokens.jsonl"),
        mel_cache=str(work / "mels"),
        augment=cfg.ctc_augment,
        peak_lr=lr[0],
        final_lr=lr[1],
        device=cfg.device,
        seed=cfg.seed,
    )
    heard = init
    if ctc_steps:
        heard = work / "encoder_ctc" / "final"
        if not stage_done(heard):
            encoder_ctc.run(
                encoder_ctc.EncoderCTCConfig(
                    init=str(init),
                    train_manifest=str(encoder_manifest),
                    output_dir=str(heard.parent),
                    max_steps=ctc_steps,
                    **shared,
                )
            )
    if adapter_steps:
        source, heard = heard, work / "adapter_ctc" / "final"
        if not stage_done(heard):
            adapter_ctc.run(
                adapter_ctc.AdapterCTCConfig(
                    init=str(source),
                    train_manifest=str(adapter_manifest),
                    output_dir=str(heard.parent),
                    max_steps=adapter_steps,
                    eval_items=128,
                    **shared,
                )
            )
    return heard
