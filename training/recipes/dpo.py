"""DPO on preference pairs (paper appendix C, "Reinforcement learning"; DESIGN §8).

    python -m storage.export --db data/drvoice.sqlite3 --out data/pairs.jsonl   # the app's votes
    python -m training.recipes.dpo --config training/configs/dpo_tiny.yaml
    torchrun --nproc_per_node 8 -m training.recipes.dpo --config C.yaml --pairs pairs.jsonl \\
        --deepspeed training/configs/zero2.json

Pairs are the app's A/B votes (`python -m storage.export`) or any JSONL in that format. The policy
starts from `--init` and is trained; the reference is a frozen copy of it (or `--reference`, another
checkpoint of the same vocabulary). Each batch holds B pairs: the B chosen and B rejected replies are
laid out with `SequenceBuilder.example` (each side in its own mode, its speech the exact
`speech_tokens` the app generated), collated into one (2B, L) batch and scored in one policy forward
(with grad) and one reference forward (no grad). A reply's log-probability is the text-head plus SRH
log-probs over the reply (`DrVoiceModel.sequence_logprobs`), and

    loss = -log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))))

(`training.losses.dpo_loss`). metrics.jsonl logs loss, reward_accuracy, reward_margin and the mean
chosen/rejected rewards; loss.png and rewards.png plot them; <output_dir>/state holds exact-resume
states; <output_dir>/final the trained core checkpoint.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from core.checkpoint import Checkpoint, from_pretrained
from core.modes import get_mode
from core.sequence import Example, SequenceBuilder
from training.cli import arg, parse_config, save_config
from training.data import (
    ExampleCollator,
    LengthBucketSampler,
    PreferencePair,
    preference_samples,
    read_preference_pairs,
)
from training.data.com_mixing import AudioFeatures
from training.losses import dpo_loss
from training.metrics import MetricsLogger
from training.recipes.common import (
    LoopSettings,
    freeze,
    load_init,
    make_runtime,
    make_trainer,
    save_final,
    train_loop,
)
from training.recipes.rl_common import SequenceScorer, user_audio_features
from training.runtime import Runtime, autocast

log = logging.getLogger(__name__)


@dataclass
class DPOConfig:
    init: str = arg("", "policy's starting core checkpoint (directory or hub id), e.g. the SFT result")
    reference: str | None = arg(None, "frozen reference checkpoint; None = a frozen copy of --init")
    pairs: str = arg("", "preference pairs JSONL (python -m storage.export, or the same format)")
    audio_root: str | None = arg(
        None,
        "folder relative audio paths resolve against (the app's data dir); None = the pairs file's folder",
    )
    output_dir: str = arg("runs/dpo", "where states, metrics.jsonl, loss.png, rewards.png and final/ go")
    mel_cache: str | None = arg(None, "folder of cached user log-mels (None: computed in memory)")
    beta: float = arg(0.1, "DPO inverse temperature of the implicit reward")
    max_steps: int = arg(1000, "optimiser steps")
    max_tokens: int = arg(4096, "padded LLM positions per batch, chosen + rejected rows (per process)")
    batch_pairs: int | None = arg(None, "cap on pairs per batch (each pair is 2 rows)")
    peak_lr: float = arg(1e-6, "peak learning rate")
    final_lr: float = arg(1e-7, "learning rate at the last step (cosine)")
    warmup_fraction: float = arg(0.02, "linear warmup as a fraction of max_steps")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "max gradient norm (0 = off)")
    freeze: list[str] = arg([], "parameter prefixes to freeze: encoder, encoder.whisper, llm, srh, ...")
    seed: int = arg(0, "seeds the pair order")
    log_every: int = arg(10, "steps between metric lines")
    save_every: int = arg(200, "steps between resumable states")
    keep_states: int = arg(2, "resumable states kept on disk")
    resume: bool = arg(True, "continue from the newest state in output_dir")
    precision: str = arg("bf16", "bf16 (GPU) or fp32; CPUs always run fp32")
    device: str = arg("auto", "auto, cpu or cuda")
    deepspeed: str | None = arg(None, "DeepSpeed config JSON (ZeRO-2: training/configs/zero2.json)")

    def __post_init__(self) -> None:
        if not self.init:
            raise ValueError("--init is required (the policy's starting core checkpoint)")
        if not self.pairs:
            raise ValueError("--pairs is required (a preference-pair JSONL)")
        if self.beta <= 0:
            raise ValueError(f"--beta must be > 0, got {self.beta}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"--precision must be bf16 or fp32, got {self.precision!r}")
        if self.max_steps < 1:
            raise ValueError(f"--max_steps must be >= 1, got {self.max_steps}")
        if self.batch_pairs is not None and self.batch_pairs < 1:
            raise ValueError(f"--batch_pairs must be >= 1, got {self.batch_pairs}")


# ---- data ----------------------------------------------------------------------------------------


def needed_user_audio(pair: PreferencePair, mode_name: str) -> list[Path]:
    """The user recordings one side of `pair` is laid out with (speech where the mode takes speech)."""
    speech_input = get_mode(mode_name).speech_input
    prompt = pair.prompt
    turns = [(e.text, e.audio) for e in prompt.history if e.role == "user"]
    turns.append((prompt.user_text, prompt.user_audio))
    # as com_mixing._user: speech when the mode takes speech (or the turn has no text)
    return [audio for text, audio in turns if audio is not None and (speech_input or not text)]


def check_pair_audio(pair: PreferencePair) -> None:
    """Raises FileNotFoundError naming the pair, the side and the file when a needed recording is missing."""
    for side_name, side in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        for path in needed_user_audio(pair, side.mode):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{pair.where}: pair {pair.id!r}, {side_name} side ({side.mode}): user audio not found: "
                    f"{path} (relative paths resolve against --audio_root, default the pairs file's folder)"
                )


def pair_examples(
    pair: PreferencePair, builder: SequenceBuilder, features: AudioFeatures | None
) -> tuple[Example, Example]:
    """The (chosen, rejected) teacher-forced examples of a pair; errors name the pair."""
    n_codes = builder.config.speech_vocab_size
    for side_name, side in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if side.speech_tokens and max(side.speech_tokens) >= n_codes:
            raise ValueError(
                f"{pair.where}: pair {pair.id!r}, {side_name} side: speech_tokens reach {max(side.speech_tokens)} "
                f"but the model's speech tokenizer has {n_codes} codes (generated with another codec?)"
            )
    try:
        chosen, rejected = preference_samples(pair, features)
        return builder.example(chosen), builder.example(rejected)
    except ValueError as error:
        raise ValueError(f"{pair.where}: pair {pair.id!r}: {error}") from error


class PairDataset:
    """Preference pairs laid out as example pairs; `lengths` are the padded rows a pair costs."""

    def __init__(self, pairs: list[PreferencePair], builder: SequenceBuilder, features: AudioFeatures | None):
        measure = getattr(features, "shape_only", features)  # lays out from cached mel shapes alone
        budget = builder.config.max_positions
        self.pairs: list[PreferencePair] = []
        self.lengths: list[int] = []  # 2 * longer side: both rows are padded to the longer one
        dropped = []
        for pair in pairs:
            chosen, rejected = pair_examples(pair, builder, measure)
            longest = max(len(chosen), len(rejected))
            if longest > budget:
                dropped.append(pair.id)
                continue
            self.pairs.append(pair)
            self.lengths.append(2 * longest)
        if dropped:
            log.warning(
                "dropped %d pairs over %d positions: %s", len(dropped), budget, ", ".join(dropped[:5])
            )
        if not self.pairs:
            raise ValueError("no preference pair fits the model's position budget")
        self.builder = builder
        self.features = features
        self.collate = ExampleCollator.for_builder(builder)

    def batch(self, indices: list[int]):
        """(2B, L) batch: rows [0, B) the chosen replies, rows [B, 2B) the rejected ones."""
        sides = [pair_examples(self.pairs[i], self.builder, self.features) for i in indices]
        return self.collate([c for c, _ in sides] + [r for _, r in sides])


def load_reference(cfg: DPOConfig, policy: Checkpoint, runtime: Runtime) -> torch.nn.Module:
    """The frozen reference model: a copy of the starting policy, or `cfg.reference`."""
    if cfg.reference:
        ref = from_pretrained(cfg.reference, device=runtime.device, load_codec=False).model.float()
        a, b = ref.config, policy.model.config
        if (a.llm["vocab_size"], a.speech_vocab_total, a.special_token_ids) != (
            b.llm["vocab_size"],
            b.speech_vocab_total,
            b.special_token_ids,
        ):
            raise ValueError(f"--reference {cfg.reference}: its vocabularies differ from --init {cfg.init}")
    else:
        ref = copy.deepcopy(policy.model)
    ref.eval().requires_grad_(False)
    return ref


# ---- recipe --------------------------------------------------------------------------------------


def run(cfg: DPOConfig, desc: str = "dpo") -> Path | None:
    """Trains and returns the final checkpoint directory (None on ranks other than 0)."""
    runtime = make_runtime(cfg.device, cfg.deepspeed, cfg.seed)
    out = Path(cfg.output_dir)
    if runtime.is_main:
        save_config(cfg, out / "config.yaml")
    pairs = read_preference_pairs(cfg.pairs, audio_root=cfg.audio_root, check_files=False)
    if not pairs:
        raise ValueError(f"{cfg.pairs}: no preference pairs")
    for pair in pairs:
        check_pair_audio(pair)

    ckpt = load_init(cfg.init, runtime)
    model = ckpt.model
    reference = load_reference(cfg, ckpt, runtime)
    trainable, frozen = freeze(model, cfg.freeze)
    log.info("trainable parameters %d, frozen %d; %d pairs", trainable, frozen, len(pairs))

    builder = SequenceBuilder(model.config, ckpt.tokenizer)
    dataset = PairDataset(pairs, builder, user_audio_features(ckpt, cfg.mel_cache))
    sampler = LengthBucketSampler(
        dataset.lengths,
        cfg.max_tokens,
        seed=cfg.seed,
        max_batch_size=cfg.batch_pairs,
        num_replicas=runtime.world_size,
        rank=runtime.rank,
    )
    trainer = make_trainer(
        SequenceScorer(model),
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
        n_pairs = batch.input_ids.shape[0] // 2
        with autocast(runtime, cfg.precision):
            policy = trainer.model(batch).total  # (2B,)
            with torch.no_grad():
                ref = reference.sequence_logprobs(batch).total  # (2B,)
        o = dpo_loss(policy[:n_pairs], policy[n_pairs:], ref[:n_pairs], ref[n_pairs:], cfg.beta)
        return {
            "loss": o.loss,
            "reward_accuracy": o.reward_accuracy,
            "reward_margin": o.reward_margin,
            "chosen_reward": o.chosen_rewards.mean(),
            "rejected_reward": o.rejected_rewards.mean(),
            "chosen_logp": policy[:n_pairs].detach().mean(),
            "rejected_logp": policy[n_pairs:].detach().mean(),
        }

    settings = LoopSettings(out, cfg.max_steps, cfg.log_every, cfg.save_every, cfg.keep_states, cfg.resume)
    train_loop(
        trainer,
        sampler,
        lambda idx: dataset.batch(idx).to(runtime.device),
        loss_fn,
        settings,
        runtime,
        desc,
    )
    if runtime.is_main:
        with MetricsLogger(out) as metrics:
            metrics.plot(
                "rewards.png", keys=("reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")
            )
    extra = {"recipe": desc, "init": cfg.init, "reference": cfg.reference or cfg.init, "pairs": cfg.pairs}
    return save_final(out / "final", ckpt, runtime, {**extra, "beta": cfg.beta, "steps": cfg.max_steps})


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = run(parse_config(DPOConfig, argv, __doc__))
    if path is not None:
        print(f"final checkpoint: {path}")


if __name__ == "__main__":
    main()
