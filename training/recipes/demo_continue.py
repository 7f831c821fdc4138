"""The demo pipeline's --continue_from path: an exported demo checkpoint trained further.

`demo --continue_from DIR`: prepare (with DIR's codec, so the reply tokens are DIR's), then
--continue_steps more steps with the Core-Cocktail stage-2 settings (the same CoM mix, learning rate
(or --continue_lr) and augmentation; --numeracy_items, --counterfactual_items, --weight_decay), GSPO,
export. Before them, when asked: --speech_delay N / --text_input_scale S / --srh_text_condition true /
--srh_text_embedding true switch the checkpoint's layout (its weights as they are, a new SRH text
embedding at zero);
--continue_ctc_steps / --continue_adapter_ctc_steps train its ear further (encoder CTC, then adapter
CTC, at half the from-scratch learning rate; with --general_speech the encoder CTC hears English
beyond the domain); --continue_t2t_steps train the LLM alone on the training texts + the
--numeracy_items (T2T, lr 1e-3, weight decay), which the stage-2 mix does not teach.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from core.modes import MODE_NAMES
from training.recipes.demo import (
    CONTINUE_EAR_LR,
    HEARD_FROZEN,
    MIX_RATIOS,
    STAGE2_LR,
    STAGES,
    DemoConfig,
    run_gspo,
    stage2_settings,
    train_text,
)
from training.recipes.demo_ear import stage_done, train_ear
from training.recipes.demo_export import export
from training.recipes.demo_prepare import with_counterfactual, with_numeracy

CONTINUE_T2T_LR, CONTINUE_T2T_TOKENS = (1e-3, 1e-4), 1500  # --continue_t2t_steps: peak, final lr; batch


def continue_training(cfg: DemoConfig, work: Path, speech_train: str, common: dict) -> Path:
    """--continue_from: the checkpoint, --continue_steps more of Core-Cocktail stage 2, GSPO, export."""
    from training.recipes import sft

    stop = STAGES.index(cfg.stop_after)
    heard = train_ear(
        cfg,
        work,
        relayout(cfg, work, Path(cfg.continue_from)),
        ctc_steps=cfg.continue_ctc_steps,
        adapter_steps=cfg.continue_adapter_ctc_steps,
        lr=CONTINUE_EAR_LR,
    )
    # the LLM alone learns the numeracy items first, which the stage-2 mix does not teach
    if cfg.continue_t2t_steps:
        heard = train_text(
            cfg,
            work,
            heard,
            work / "continued_t2t",
            steps=cfg.continue_t2t_steps,
            lr=CONTINUE_T2T_LR,
            max_tokens=CONTINUE_T2T_TOKENS,
            weight_decay=cfg.continue_t2t_weight_decay,
            common=common,
            desc="continued T2T",
        )
    more = work / "continued"
    if not stage_done(more / "final"):
        sft.run(
            sft.SFTConfig(
                init=str(heard),
                train_manifest=with_counterfactual(cfg, with_numeracy(cfg, speech_train)),
                output_dir=str(more),
                mel_cache=str(work / "mels"),
                modes=list(MODE_NAMES),
                mode_ratios=MIX_RATIOS,
                max_steps=cfg.continue_steps,
                max_tokens=cfg.max_tokens,
                peak_lr=cfg.continue_lr,
                final_lr=cfg.continue_lr * STAGE2_LR[1] / STAGE2_LR[0],  # stage 2's decay
                freeze=HEARD_FROZEN,
                augment=cfg.speech_augment,
                **stage2_settings(cfg, work),
                **common,
            ),
            desc="continued stage 2",
        )
    if stop <= STAGES.index("cocktail"):
        return more / "final"
    rl = run_gspo(cfg, work, more / "final", common) if cfg.gspo_steps else more / "final"
    if stop == STAGES.index("gspo"):
        return rl
    return export(rl, Path(cfg.out))


def relayout(cfg: DemoConfig, work: Path, source: Path) -> Path:
    """`source`, or with --speech_delay N > 0 / --text_input_scale S != 1 / --srh_text_condition true /
    --srh_text_embedding true a copy of it (work/relayout) whose config asks for that layout: the same
    weights (a new SRH text embedding starts at zero), which the continued steps then train on it."""
    changes: dict = {}
    if cfg.speech_delay:
        changes["speech_delay"] = cfg.speech_delay
    if cfg.text_input_scale != 1.0:
        changes["text_input_scale"] = cfg.text_input_scale
    if cfg.srh_text_condition:
        changes["srh_text_condition"] = True
    if cfg.srh_text_embedding:
        changes["srh_text_embedding"] = True
    if not changes:
        return source
    out = work / "relayout"
    if not stage_done(out):  # written beside, then renamed: a half-written one is never taken as done
        from core.checkpoint import from_pretrained, save_pretrained
        from core.model import DrVoiceModel

        ckpt = from_pretrained(source)
        model = DrVoiceModel(replace(ckpt.model.config, **changes))  # validated
        missing, unexpected = model.load_state_dict(ckpt.model.state_dict(), strict=False)
        new = [k for k in missing if not k.startswith("srh_text.")]
        if new or unexpected:
            raise RuntimeError(f"relayout changed weights it should keep: {new[:5]} {unexpected[:5]}")
        partial = work / "relayout.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        extra = {**ckpt.extra, "recipe": "demo/relayout"}
        save_pretrained(partial, model, ckpt.tokenizer, codec=ckpt.codec, extra=extra)
        partial.rename(out)
    return out
