"""Builds the embedded demo checkpoint from the synthetic spoken-QA corpus with the project's recipes.

    python -m training.data.synth --out data/corpus --size full        # the corpus (~6 min)
    python -m training.recipes.demo --corpus data/corpus --work_dir runs/demo --out checkpoints/demo

Every training stage runs on --device (auto: a GPU when there is one, else the CPU with --threads);
corpus preparation, the codec fit and the export run on the CPU.

Stages (each skipped when its output exists, so an interrupted build continues):
  1. prepare   training.recipes.demo_prepare: text tokenizer (byte-level BPE on the corpus;
               --general_tokenizer: and on the general sentences), a random tiny Qwen2 LLM, the
               units codec fitted on the assistant voice (train split), reply tokens + user log-mels
               (--extra_voices: also of train_extra, the train items spoken by more voices, which the
               ctc, adapter, align and cocktail stages then train on as well; --paraphrases: also of
               paraphrases, the training questions in more phrasings, the same way)
  2. build     training.recipes.build: LLM + small Whisper-style encoder + SRH + codec
  3. text_llm  the base LLM M0: the tiny LLM trained on the text-only (T2T) version of the corpus
               (--numeracy_items N: plus N text-only arithmetic items beyond the corpus's operands,
               the corpus's numeracy.jsonl from training.data.numeracy, here and in the cocktail;
               --text_llm_weight_decay: AdamW weight decay of this stage)
  4. srh       training.recipes.srh_pretrain, strategy frozen_backbone (T2M/S2M, appendix C)
  5. ctc       training.recipes.encoder_ctc: the random Whisper encoder learns to hear (CTC on the
               user transcripts); trained only through the LLM loss it collapses to a constant
               (--general_speech: also on the corpus's general.jsonl, English beyond the domain,
               from training.data.general_speech; --question_words: also on question_words.jsonl,
               the training questions' words in new orders, from general_speech --words questions)
  6. adapter   training.recipes.adapter_ctc: CTC of the adapter's 5 Hz output against the LLM's own
               token embeddings, so that the LLM is handed words rather than whole-utterance
               patterns to memorise (--adapter_ctc_steps 0 skips it; --general_tokenizer: on the
               general speech too; --question_words: on the question-word sentences too)
  7. align     adapter + LLM (Whisper encoder, SRH frozen, no speech loss) on S2T answers and STC
               transcripts, so the LLM learns to read the encoder before the full mix
  8. cocktail  training.recipes.core_cocktail: CoM-Mixing stage 1, merge with M0, stage 2 (the
               Whisper encoder stays frozen); --ctc_augment / --speech_augment perturb user speech
               (training.data.augment) in the ctc and adapter stages / the align and cocktail stages;
               --speech_splice splices general speech around user questions (training.data.splice)
               and --speech_input_dropout leaves reply speech groups out of the LLM input, in the
               cocktail (and continued stage-2) steps; --weight_decay is their AdamW weight decay
  9. gspo      training.recipes.gspo on the arithmetic questions, math-answer reward
  10. export   the result in bf16 to --out (<= 30 MB); a model card (*.md, *.png) already there is kept

--continue_from DIR trains an exported demo checkpoint further instead (training.recipes.demo_continue):

    python -m training.recipes.demo --continue_from checkpoints/demo --work_dir runs/demo_more --out checkpoints/demo
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from core.modes import MODE_NAMES
from training.cli import arg, parse_config, save_config
from training.recipes.demo_ear import stage_done, train_ear
from training.recipes.demo_export import export
from training.recipes.demo_prepare import (
    EAR_TRAIN,
    QUESTION_WORDS_TRAIN,
    SPEECH_TRAIN,
    prepare,
    speech_manifest,
    with_counterfactual,
    with_numeracy,
)

__all__ = [
    "EAR_TRAIN",
    "QUESTION_WORDS_TRAIN",
    "SPEECH_TRAIN",
    "DemoConfig",
    "export",
    "main",
    "prepare",
    "run",
    "speech_manifest",
]

log = logging.getLogger(__name__)

STAGES = ("prepare", "build", "text_llm", "srh", "ctc", "adapter", "align", "cocktail", "gspo", "export")
ALIGN_FROZEN = ["encoder.whisper", "speech_grouping", "ungrouping", "srh"]  # align trains adapter + LLM
MIX_RATIOS = {m: 1.0 for m in MODE_NAMES} | {"S2M": 2.0, "S2T": 2.0}  # CoM-Mixing weights of the cocktail
TEXT_LLM_LR = (2e-3, 2e-4)  # the base LLM M0's T2T pretraining: peak, final
STAGE2_LR = (4e-4, 4e-5)  # Core-Cocktail stage 2 (and --continue_from): peak, final
CONTINUE_EAR_LR = (5e-4, 5e-5)  # --continue_from: CTC of a trained ear (half the from-scratch peak)
HEARD_FROZEN = ["encoder.whisper"]  # the cocktail, --continue_from and GSPO keep the trained ear as it is


@dataclass
class DemoConfig:
    corpus: str = arg("data/corpus", "corpus folder written by training.data.synth")
    work_dir: str = arg("runs/demo", "intermediate runs")
    out: str = arg("checkpoints/demo", "where the final checkpoint is exported")
    stop_after: str = arg("export", f"last stage to run: {', '.join(STAGES)}")
    threads: int = arg(2, "torch CPU threads")
    device: str = arg("auto", "where the training stages run: auto (a GPU when there is one), cpu or cuda")
    text_vocab_size: int = arg(1024, "byte-level BPE vocabulary (with the special tokens)")
    num_units: int = arg(1024, "units codec codebook size")
    codec_decoder_steps: int = arg(2000, "residual mel decoder training steps of the codec")
    codec_assistant_speech: bool = arg(
        False,
        "refit the codec's decoder (wider, dilated) on the train replies + the corpus's assistant_general.jsonl "
        "(python -m training.data.assistant_speech); the units stay as they are",
    )
    codec_refit_steps: int = arg(2500, "decoder steps of --codec_assistant_speech")
    llm_hidden: int = arg(256, "shared LLM width")
    llm_layers: int = arg(4, "shared LLM layers")
    llm_heads: int = arg(4, "shared LLM attention heads")
    srh_hidden: int = arg(256, "SRH width")
    srh_layers: int = arg(2, "SRH layers")
    encoder_state: int = arg(192, "audio encoder width")
    encoder_layers: int = arg(3, "audio encoder blocks")
    encoder_heads: int = arg(3, "audio encoder heads")
    encoder_positional_scale: float = arg(0.1, "multiplier of the random encoder's sinusoidal positions")
    encoder_output_norm: bool = arg(True, "LayerNorm on the adapter output at the text embeddings' scale")
    max_tokens: int = arg(6000, "padded LLM positions per batch")
    speech_delay: int = arg(
        0,
        "speech starts this many LLM steps after its text (Fun-Audio-Chat: 2); --continue_from: a value "
        "above 0 switches the checkpoint to it (0 keeps the checkpoint's)",
    )
    text_input_scale: float = arg(1.0, "s of the reply input s E_text + G; --continue_from: != 1 sets it")
    srh_text_condition: bool = arg(
        False, "the SRH also reads the input text token (DrVoiceConfig); --continue_from: true switches it on"
    )
    srh_text_embedding: bool = arg(
        False, "the SRH embeds each step's text token (DrVoiceConfig); --continue_from: true adds it, at zero"
    )
    text_llm_steps: int = arg(600, "T2T pretraining steps of the base LLM")
    text_llm_weight_decay: float = arg(0.0, "AdamW weight decay of the base LLM's T2T pretraining")
    srh_steps: int = arg(600, "SRH pretraining steps")
    ctc_steps: int = arg(3000, "CTC pretraining steps of the speech encoder (32 utterances each)")
    ctc_augment: bool = arg(
        False, "tempo / mel-warp / SpecAugment on the CTC utterances (encoder_ctc and adapter_ctc --augment)"
    )
    speech_augment: bool = arg(
        False, "the same perturbations of user speech in the align and cocktail stages (sft --augment)"
    )
    extra_voices: bool = arg(
        False,
        "ctc, adapter, align and cocktail also train on the corpus's train_extra.jsonl "
        "(training.data.synth --extra-voice-copies)",
    )
    paraphrases: bool = arg(
        False,
        "ctc, adapter, align and cocktail also train on the corpus's paraphrases.jsonl (training "
        "questions in more phrasings, python -m training.data.paraphrases)",
    )
    general_speech: bool = arg(
        False,
        "the encoder CTC stage also trains on the corpus's general.jsonl, English words beyond "
        "the QA domain (python -m training.data.general_speech)",
    )
    general_tokenizer: bool = arg(
        False,
        "new builds, with --general_speech: the byte-level BPE also learns the general sentences (~1.8 "
        "tokens a word at 3000 tokens instead of ~3.7), so that they fit the adapter's 5 Hz frames and "
        "the adapter CTC trains on them too (--continue_from keeps the checkpoint's tokenizer)",
    )
    question_words: bool = arg(
        False,
        "the encoder and adapter CTC stages also train on the corpus's question_words.jsonl, the training "
        "questions' words in new orders (python -m training.data.general_speech --words questions)",
    )
    speech_splice: float = arg(
        0.0,
        "with --general_speech: share of user questions in the cocktail and continued stage-2 steps "
        "with a stretch of general speech spliced before or after them (training.data.splice; 0 = off)",
    )
    speech_input_dropout: float = arg(
        0.0,
        "cocktail and continued stage-2 steps: share of the reply's speech groups left out of the LLM "
        "input, so that the parallel text does not lean on the model's own speech",
    )
    adapter_ctc_steps: int = arg(
        1000, "CTC steps of the adapter against the LLM token embeddings (adapter_ctc; 0 = skip)"
    )
    align_steps: int = arg(400, "adapter + LLM alignment steps (S2T + STC transcripts)")
    align_lr: float = arg(1e-3, "peak learning rate of the encoder alignment")
    stage1_steps: int = arg(3000, "Core-Cocktail stage 1 steps")
    stage2_steps: int = arg(800, "Core-Cocktail stage 2 steps")
    alpha: float = arg(0.5, "Core-Cocktail merge weight of M1")
    gspo_steps: int = arg(60, "GSPO steps on arithmetic questions")
    seed: int = arg(0, "seed of every stage")
    weight_decay: float = arg(0.0, "AdamW weight decay of the cocktail and continued stage-2 steps")
    numeracy_items: int = arg(
        0,
        "arithmetic items beyond the corpus's operands (the corpus's numeracy.jsonl, python -m training."
        "data.numeracy) as T2T (+ S2T / T2M if --ask / --speak) samples of the text-LLM, cocktail, continued",
    )
    counterfactual_items: int = arg(
        0,
        "training questions with wrong spoken replies whose text is an input only (the corpus's "
        "counterfactual.jsonl, python -m training.data.counterfactual) added to the cocktail and continued "
        "stage-2 steps as T2M/S2M samples, so that the speech learns to say what the text says",
    )
    continue_from: str = arg(
        "",
        "an exported demo checkpoint to train further (stage-2 settings, then GSPO) instead of a new build",
    )
    continue_steps: int = arg(600, "--continue_from: steps of further Core-Cocktail stage-2 training")
    continue_lr: float = arg(STAGE2_LR[0], "--continue_from: peak lr of stage 2 (decays as in stage 2)")
    continue_ctc_steps: int = arg(0, "--continue_from: encoder CTC steps first (0: the ear stays as it is)")
    continue_adapter_ctc_steps: int = arg(0, "--continue_from: adapter CTC steps after those (0: none)")
    continue_t2t_steps: int = arg(
        0,
        "--continue_from: text-only (T2T) steps of the LLM on the training texts + the --numeracy_items "
        "before the stage-2 steps (lr 1e-3 -> 1e-4, --continue_t2t_weight_decay, 1500-token batches; 0: none)",
    )
    continue_t2t_weight_decay: float = arg(0.5, "AdamW weight decay of the --continue_t2t_steps")

    def __post_init__(self) -> None:
        if self.stop_after not in STAGES:
            raise ValueError(f"--stop_after must be one of {STAGES}, got {self.stop_after!r}")
        if self.speech_splice and not self.general_speech:
            raise ValueError("--speech_splice splices the general speech: it needs --general_speech true")
        if self.general_tokenizer and not self.general_speech:
            raise ValueError("--general_tokenizer learns the general sentences: it needs --general_speech")
        if self.speech_delay < 0:
            raise ValueError(f"--speech_delay must be >= 0, got {self.speech_delay}")
        if not self.text_input_scale > 0:  # also rejects NaN
            raise ValueError(f"--text_input_scale must be > 0, got {self.text_input_scale}")
        if min(self.numeracy_items, self.counterfactual_items) < 0:
            raise ValueError("--numeracy_items and --counterfactual_items must be >= 0")
        if not self.continue_lr > 0:  # also rejects NaN
            raise ValueError(f"--continue_lr must be > 0, got {self.continue_lr}")
        if not 0.0 <= self.speech_splice <= 1.0:
            raise ValueError(f"--speech_splice must be in [0, 1], got {self.speech_splice}")


def run(cfg: DemoConfig) -> Path:
    from training.recipes import build, core_cocktail, sft, srh_pretrain

    torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    save_config(cfg, work / "demo.yaml")
    stop = STAGES.index(cfg.stop_after)
    train, mels = str(work / "train.tokens.jsonl"), str(work / "mels")
    speech_train = str(speech_manifest(cfg, work))
    common = dict(precision="fp32", device=cfg.device, seed=cfg.seed, log_every=10, save_every=200)

    prepare(cfg, work)
    if stop == 0:
        return work
    if cfg.continue_from:
        from training.recipes.demo_continue import continue_training

        return continue_training(cfg, work, speech_train, common)
    built = work / "built"
    if not stage_done(built):
        build.run(
            build.BuildConfig(
                llm=str(work / "tiny_llm"),
                output_dir=str(built),
                codec=str(work / "codec"),
                srh_hidden=cfg.srh_hidden,
                srh_layers=cfg.srh_layers,
                srh_heads=4,
                srh_kv_heads=4,
                srh_intermediate=4 * cfg.srh_hidden,
                encoder_n_mels=80,
                encoder_state=cfg.encoder_state,
                encoder_heads=cfg.encoder_heads,
                encoder_layers=cfg.encoder_layers,
                adapter_hidden=cfg.llm_hidden,
                encoder_positional_scale=cfg.encoder_positional_scale,
                encoder_output_norm=cfg.encoder_output_norm,
                speech_delay=cfg.speech_delay,
                text_input_scale=cfg.text_input_scale,
                srh_text_condition=cfg.srh_text_condition,
                srh_text_embedding=cfg.srh_text_embedding,
                name="drvoice-demo",
                seed=cfg.seed,
            )
        )
    if stop == 1:
        return built
    text_llm = work / "text_llm"
    train_text(
        cfg,
        work,
        built,
        text_llm,
        steps=cfg.text_llm_steps,
        lr=TEXT_LLM_LR,
        max_tokens=cfg.max_tokens,
        weight_decay=cfg.text_llm_weight_decay,
        common=common,
        desc="text LLM (T2T)",
    )
    if stop == 2:
        return text_llm / "final"
    srh = work / "srh"
    if not stage_done(srh / "final"):
        srh_pretrain.run(
            srh_pretrain.SRHPretrainConfig(
                strategy="frozen_backbone",
                init=str(text_llm / "final"),
                train_manifest=train,
                output_dir=str(srh),
                mel_cache=mels,
                modes=["T2M"],
                max_steps=cfg.srh_steps,
                max_tokens=cfg.max_tokens,
                peak_lr=2e-3,
                final_lr=2e-4,
                **common,
            )
        )
    if stop == 3:
        return srh / "final"
    ctc = work / "encoder_ctc"
    if not stage_done(ctc / "final"):
        align_init = work / "align_init"
        if not stage_done(align_init):
            prepare_alignment(srh / "final", align_init, cfg)
        train_ear(cfg, work, align_init, ctc_steps=cfg.ctc_steps, adapter_steps=0)
    if stop == 4:
        return ctc / "final"
    heard = train_ear(cfg, work, ctc / "final", ctc_steps=0, adapter_steps=cfg.adapter_ctc_steps)
    if stop == 5:
        return heard
    align = work / "align"
    if not stage_done(align / "final"):
        sft.run(
            sft.SFTConfig(
                init=str(heard),
                train_manifest=speech_train,
                output_dir=str(align),
                mel_cache=mels,
                modes=["S2T", "STC"],
                freeze=ALIGN_FROZEN,
                augment=cfg.speech_augment,
                speech_loss_weight=0.0,
                max_steps=cfg.align_steps,
                max_tokens=cfg.max_tokens,
                peak_lr=cfg.align_lr,
                final_lr=cfg.align_lr / 10,
                **common,
            ),
            desc="alignment (S2T + STC)",
        )
    if stop == 6:
        return align / "final"
    cocktail = work / "cocktail"
    if not stage_done(cocktail / "stage2" / "final"):
        core_cocktail.run(
            core_cocktail.CoreCocktailConfig(
                init=str(align / "final"),
                base_llm=str(text_llm / "final"),
                train_manifest=with_counterfactual(cfg, with_numeracy(cfg, speech_train)),
                output_dir=str(cocktail),
                mel_cache=mels,
                modes=list(MODE_NAMES),
                mode_ratios=MIX_RATIOS,
                alpha=cfg.alpha,
                stage1_steps=cfg.stage1_steps,
                stage1_peak_lr=2e-3,
                stage1_final_lr=2e-4,
                stage2_steps=cfg.stage2_steps,
                stage2_peak_lr=STAGE2_LR[0],
                stage2_final_lr=STAGE2_LR[1],
                max_tokens=cfg.max_tokens,
                freeze=HEARD_FROZEN,
                augment=cfg.speech_augment,
                **stage2_settings(cfg, work),
                **common,
            )
        )
    if stop == 7:
        return cocktail / "stage2" / "final"
    rl = run_gspo(cfg, work, cocktail / "stage2" / "final", common)
    if stop == 8:
        return rl
    return export(rl, Path(cfg.out))


def train_text(
    cfg: DemoConfig,
    work: Path,
    init: Path,
    out: Path,
    *,
    steps: int,
    lr: tuple[float, float],
    max_tokens: int,
    weight_decay: float,
    common: dict,
    desc: str,
) -> Path:
    """The LLM alone on the training texts + the --numeracy_items (T2T; the base LLM M0, and
    --continue_t2t_steps); `lr` is (peak, final); skipped when `out` is done."""
    from training.recipes import sft

    if not stage_done(out / "final"):
        sft.run(
            sft.SFTConfig(
                init=str(init),
                train_manifest=with_numeracy(cfg, str(work / "train.tokens.jsonl")),
                output_dir=str(out),
                mel_cache=str(work / "mels"),
                modes=["T2T"],
                max_steps=steps,
                weight_decay=weight_decay,
                max_tokens=max_tokens,
                peak_lr=lr[0],
                final_lr=lr[1],
                **common,
            ),
            desc=desc,
        )
    return out / "final"


def stage2_settings(cfg: DemoConfig, work: Path) -> dict:
    """The stage-2 steps' speech_input_dropout, weight_decay and (--speech_splice) splice_manifest /
    splice_probability."""
    from training.data.general_speech import SPLIT

    settings = {"speech_input_dropout": cfg.speech_input_dropout, "weight_decay": cfg.weight_decay}
    if cfg.speech_splice:
        settings |= {
            "splice_manifest": str(work / f"{SPLIT}.tokens.jsonl"),
            "splice_probability": cfg.speech_splice,
        }
    return settings


def run_gspo(cfg: DemoConfig, work: Path, init: Path, common: dict) -> Path:
    """GSPO on the arithmetic questions of the training split (S2T / S2M, math-answer reward)."""
    from training.recipes import gspo

    rl = work / "gspo"
    if not stage_done(rl / "final"):
        arithmetic = work / "arithmetic.tokens.jsonl"
        lines = [json.loads(x) for x in (work / "train.tokens.jsonl").read_text().splitlines()]
        arithmetic.write_text(
            "".join(json.dumps(x) + "\n" for x in lines if x.get("category") == "arithmetic")
        )
        gspo.run(
            gspo.GSPOConfig(
                init=str(init),
                train_manifest=str(arithmetic),
                output_dir=str(rl),
                mel_cache=str(work / "mels"),
                modes=["S2T", "S2M"],
                group_size=4,
                max_new_steps=60,
                freeze=HEARD_FROZEN,
                max_steps=cfg.gspo_steps,
                peak_lr=2e-5,
                final_lr=2e-6,
                **{**common, "save_every": 20, "log_every": 1},
            )
        )
    return rl / "final"


def prepare_alignment(source: Path, out: Path, cfg: DemoConfig) -> Path:
    """The align stage's starting point: `source` with the encoder settings of `cfg`, the adapter's output
    gain matched to the (now trained) text embeddings.

    A `built/` from before these settings existed gets them here: the positional scale is a number in
    the config and a new output LayerNorm starts at its init, so the result equals a fresh build.
    """
    from dataclasses import replace

    from core.checkpoint import from_pretrained, save_pretrained
    from core.encoder import EncoderConfig
    from core.model import DrVoiceModel

    ckpt = from_pretrained(source)
    enc = EncoderConfig.from_dict(ckpt.model.config.encoder)
    enc = replace(enc, positional_scale=cfg.encoder_positional_scale, output_norm=cfg.encoder_output_norm)
    config = replace(ckpt.model.config, encoder=enc.to_dict())
    model = DrVoiceModel(config)
    missing, unexpected = model.load_state_dict(ckpt.model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("encoder.output_norm.") for k in missing):
        raise RuntimeError(f"{source} does not fit the demo architecture: {missing[:5]} {unexpected[:5]}")
    model.llm.tie_weights()
    if model.encoder.output_norm is not None:
        gain = model.encoder.match_output_scale(model.llm.get_input_embeddings().weight)
        log.info("adapter output gain set to the text embeddings' RMS %.4f", gain)
    extra = {**ckpt.extra, "recipe": "demo/prepare_alignment"}
    return save_pretrained(out, model, ckpt.tokenizer, codec=ckpt.codec, extra=extra)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"output: {run(parse_config(DemoConfig, argv, __doc__))}")


if __name__ == "__main__":
    main()
