"""GSPO with verifiable rewards (paper appendix C, "Reinforcement learning"; DESIGN §8).

    python -m training.recipes.gspo --config training/configs/gspo_tiny.yaml
    torchrun --nproc_per_node 8 -m training.recipes.gspo --config C.yaml --deepspeed training/configs/zero2.json

One step: take `prompts_per_step` prompts (manifest items that have `answers`, each in one of
`modes`; speech-input modes hear the item's user audio, text modes read its text), sample G =
`group_size` replies per prompt with the streaming generator (temperature > 0, seeded per step,
prompt and sample, so a resumed run draws the same replies), score each reply's decoded text with the
reward function (`--reward module:function`, default `training.rewards:math_answer`), then lay out
the exact generated token ids (text ids, chain ids, speech codes; `core.sequence.Sample.reply_ids`)
with targets on the sampled tokens only, and take `ppo_epochs` optimiser updates on

    s_i = exp( mean_t (log pi(y_i,t) - log pi_old(y_i,t)) )         over text + SRH speech tokens
    A_i = (r_i - mean_group r) / std_group r
    J   = mean_i min(s_i A_i, clip(s_i, 1 - 3e-4, 1 + 4e-4) A_i)     (no KL; training.losses.gspo_objective)

`sequence_logprobs` gives each reply's summed log-prob and token count, so mean_t(log pi - log pi_old)
= (sum_new - sum_old) / count. pi_old is the policy that sampled the replies: the first update's
forward, detached (so with ppo_epochs = 1 every s_i is exactly 1: on-policy). A reply cut by
`max_new_steps` is scored on the tokens it drew; the <|sil|> text pads the generator forces after the
text ended carry no log-prob either (`rollout_example`).

metrics.jsonl logs mean_reward, clip_fraction, ratio_mean/min/max, loss, lr; reward.png plots them;
<output_dir>/state holds exact-resume states (one per step, after its updates); <output_dir>/final
the trained core checkpoint.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from core.generate import DrVoiceGenerator, LengthBudgetError
from core.modes import get_mode
from core.sampling import SamplingConfig
from core.sequence import IGNORE, Example, HistoryTurn, Sample, SequenceBuilder, UserInput
from training.cli import arg, parse_config, save_config
from training.data import ExampleCollator, ManifestItem, read_manifest
from training.data.com_mixing import AudioFeatures
from training.losses import gspo_objective
from training.metrics import MetricsLogger
from training.recipes.common import freeze, load_init, make_runtime, make_trainer, save_final
from training.recipes.rl_common import SequenceScorer, user_audio_features
from training.rewards import DEFAULT_REWARD, RewardFn, checked_reward, load_reward
from training.runtime import Runtime, autocast, latest_state

log = logging.getLogger(__name__)


@dataclass
class GSPOConfig:
    init: str = arg("", "policy's starting core checkpoint (directory or hub id), e.g. the DPO result")
    train_manifest: str = arg(
        "", "manifest whose items with `answers` are the prompts (e.g. arithmetic questions)"
    )
    output_dir: str = arg("runs/gspo", "where states, metrics.jsonl, reward.png and final/ go")
    mel_cache: str | None = arg(None, "folder of cached user log-mels (None: computed in memory)")
    reward: str = arg(
        DEFAULT_REWARD, "reward function 'module:function', called as f(reply_text, item) -> float"
    )
    modes: list[str] = arg(["S2M", "S2T"], "patterns to sample in (Table 1); each prompt takes one")
    group_size: int = arg(4, "G, replies sampled per prompt (4 for the tiny demo, 8+ for real runs)")
    prompts_per_step: int = arg(
        2, "prompts per step (per process); a step scores prompts_per_step * G replies"
    )
    ppo_epochs: int = arg(1, "optimiser updates per batch of replies (1 = on-policy, every ratio is 1)")
    max_new_steps: int = arg(300, "LLM steps per reply (5 Hz in the parallel phase: 300 = 60 s of speech)")
    temperature: float = arg(1.0, "text sampling temperature (> 0)")
    top_p: float = arg(1.0, "text nucleus sampling (1 = off)")
    top_k: int = arg(0, "text top-k (0 = off)")
    speech_temperature: float = arg(1.0, "speech sampling temperature (0 = greedy)")
    clip_low: float = arg(3e-4, "ratio floor is 1 - clip_low (paper: 3e-4)")
    clip_high: float = arg(4e-4, "ratio ceiling is 1 + clip_high (paper: 4e-4)")
    max_steps: int = arg(500, "GSPO steps (each: one batch of replies, ppo_epochs updates)")
    peak_lr: float = arg(1e-6, "peak learning rate")
    final_lr: float = arg(1e-7, "learning rate at the last update (cosine)")
    warmup_fraction: float = arg(0.02, "linear warmup as a fraction of the updates")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "max gradient norm (0 = off)")
    freeze: list[str] = arg([], "parameter prefixes to freeze: encoder, encoder.whisper, llm, srh, ...")
    seed: int = arg(0, "seeds the prompt order and the sampling")
    log_every: int = arg(1, "steps between metric lines")
    save_every: int = arg(50, "steps between resumable states")
    keep_states: int = arg(2, "resumable states kept on disk")
    resume: bool = arg(True, "continue from the newest state in output_dir")
    precision: str = arg("bf16", "bf16 (GPU) or fp32; CPUs always run fp32")
    device: str = arg("auto", "auto, cpu or cuda")
    deepspeed: str | None = arg(None, "DeepSpeed config JSON (ZeRO-2: training/configs/zero2.json)")

    def __post_init__(self) -> None:
        if not self.init:
            raise ValueError("--init is required (the policy's starting core checkpoint)")
        if not self.train_manifest:
            raise ValueError("--train_manifest is required (items with `answers`)")
        self.modes = [get_mode(m).name for m in self.modes]  # raises on unknown names
        if not self.modes:
            raise ValueError("--modes is empty")
        load_reward(self.reward)  # a bad --reward fails now, naming the spec
        for name, low in (("group_size", 2), ("prompts_per_step", 1), ("ppo_epochs", 1), ("max_steps", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 < self.temperature <= 5.0:
            raise ValueError(
                f"--temperature must be in (0, 5] (GSPO needs different replies), got {self.temperature}"
            )
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"--precision must be bf16 or fp32, got {self.precision!r}")


# ---- prompts and rollouts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One prompt: a manifest item asked in one mode."""

    item: ManifestItem
    mode: str


@dataclass
class Rollout:
    """One sampled reply, laid out exactly as generated."""

    task: Task
    sample: Sample  # reply_ids / chain_ids / reply_speech are the generated tokens
    reply_text: str  # decoded reply text (what the reward reads)
    prompt_length: int  # positions of the prompt; step i was predicted at position prompt_length - 1 + i
    steps: int  # generator steps taken (LLM positions that sampled an output)
    complete: bool  # False: cut by max_new_steps or the position budget
    reward: float = 0.0


def build_tasks(items: list[ManifestItem], modes: list[str]) -> list[Task]:
    """Items with answers x modes they can be asked in (speech modes need audio, text modes text)."""
    tasks = []
    for item in items:
        if not item.answers:
            continue
        for name in modes:
            mode = get_mode(name)
            if (item.audio if mode.speech_input else item.text) is not None:
                tasks.append(Task(item, mode.name))
    return tasks


def _user(text: str | None, audio: Path | None, speech: bool, features: AudioFeatures | None) -> UserInput:
    """A user turn: speech when the mode takes speech and there is a recording (or no text)."""
    if audio is None or not (speech or not text):
        return UserInput(text=text)
    if features is None:
        raise ValueError("this model takes discrete user audio: GSPO supports continuous-input models")
    mels = features(audio)
    return UserInput(mels=mels) if isinstance(mels, torch.Tensor) else UserInput(speech_tokens=list(mels))


def task_prompt(
    task: Task, builder: SequenceBuilder, features: AudioFeatures | None
) -> tuple[Example, UserInput, list[HistoryTurn]]:
    """The prompt layout of a task, with the user turn and history it was built from."""
    speech = get_mode(task.mode).speech_input
    item = task.item
    user = _user(item.text, item.audio, speech, features)
    history = [HistoryTurn(_user(h.text, h.audio, speech, features), h.reply_text) for h in item.history]
    try:
        prompt = builder.prompt(task.mode, user, history, item.system)
    except ValueError as error:
        raise ValueError(f"{item.where or item.id} ({task.mode}): {error}") from error
    return prompt, user, history


def sample_reply(
    generator: DrVoiceGenerator,
    tokenizer,
    task: Task,
    prompt: Example,
    user: UserInput,
    history: list[HistoryTurn],
    sampling: SamplingConfig,
) -> Rollout:
    """Generates one reply and records its exact tokens as a Sample (see `core.generate`)."""
    mode = get_mode(task.mode)
    ids = generator.ids
    chain: list[int] = []
    reply: list[int] = []
    speech: list[int] = []
    complete = False
    n_steps = 0
    try:
        for step in generator.stream(prompt, mode.name, sampling):
            n_steps += 1
            tok = step.text_token
            if step.kind == "text" and mode.is_chain:  # chain phase, ends with <|audio_bos|>
                if tok != ids["audio_bos"]:
                    chain.append(tok)
            elif step.kind == "text":  # text-only reply, ends with <|im_end|>
                complete = tok == ids["im_end"]
                if not complete:
                    reply.append(tok)
            else:  # parallel: text token (None once text ended, <|im_end|> ends it) + speech codes
                if tok is not None and tok != ids["im_end"]:
                    reply.append(tok)
                speech.extend(step.speech_tokens)
                complete = step.text_done and step.speech_done
    except LengthBudgetError:
        if not (chain or reply or speech):
            raise
    sample = Sample(
        mode=mode.name,
        user=user,
        reply_text="",
        reply_speech=speech if mode.speech_output else [],
        history=history,
        system_prompt=task.item.system,
        reply_ids=reply,
        chain_ids=chain if mode.is_chain else None,
    )
    text = tokenizer.decode(reply, skip_special_tokens=True)
    sample.reply_text = text
    return Rollout(task, sample, text, len(prompt), n_steps, complete)


def rollout_example(builder: SequenceBuilder, rollout: Rollout) -> Example:
    """The layout of a rollout with targets on the sampled tokens only.

    `builder.example` closes a reply the generator cut (max_new_steps) with the tokens a finished
    reply ends with (<|audio_bos|>, <|im_end|>, eos) and pads finished text with <|sil|>; neither
    was sampled (the generator forces <|sil|>), so their targets are dropped here and the
    sequence log-prob covers exactly the drawn text tokens and speech codes.
    """
    example = builder.example(rollout.sample)
    end = rollout.prompt_length - 1 + rollout.steps  # first position past the generated steps
    example.text_targets[end:] = IGNORE
    example.speech_targets[end:] = IGNORE
    example.text_targets[example.text_targets == builder.ids["sil"]] = IGNORE
    return example


def rollout_seed(seed: int, step: int, rank: int, slot: int, sample: int) -> int:
    """Sampling seed of one reply: fixed by (seed, step, rank, prompt slot, sample), never by RNG state."""
    return random.Random(f"{seed}:{step}:{rank}:{slot}:{sample}").getrandbits(62)


def step_tasks(tasks: list[Task], seed: int, step: int, per_step: int, runtime: Runtime) -> list[Task]:
    """The prompts of `step` (1-based) on this rank: consecutive slots of seeded per-epoch shuffles."""
    n = len(tasks)
    first = ((step - 1) * runtime.world_size + runtime.rank) * per_step
    chosen = []
    for slot in range(first, first + per_step):
        epoch, position = divmod(slot, n)
        order = list(range(n))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        chosen.append(tasks[order[position]])
    return chosen


# ---- recipe --------------------------------------------------------------------------------------


def run(cfg: GSPOConfig, desc: str = "gspo") -> Path | None:
    """Trains and returns the final checkpoint directory (None on ranks other than 0)."""
    runtime = make_runtime(cfg.device, cfg.deepspeed, cfg.seed)
    out = Path(cfg.output_dir)
    if runtime.is_main:
        save_config(cfg, out / "config.yaml")
    reward_fn: RewardFn = load_reward(cfg.reward)
    tasks = build_tasks(read_manifest(cfg.train_manifest), cfg.modes)
    if not tasks:
        raise ValueError(f"{cfg.train_manifest}: no item with `answers` can be asked in modes {cfg.modes}")

    ckpt = load_init(cfg.init, runtime)
    model = ckpt.model
    trainable, frozen = freeze(model, cfg.freeze)
    log.info("trainable parameters %d, frozen %d; %d prompts", trainable, frozen, len(tasks))
    builder = SequenceBuilder(model.config, ckpt.tokenizer)
    features = user_audio_features(ckpt, cfg.mel_cache)
    collate = ExampleCollator.for_builder(builder)
    trainer = make_trainer(
        SequenceScorer(model),
        runtime,
        max_steps=cfg.max_steps * cfg.ppo_epochs,
        peak_lr=cfg.peak_lr,
        final_lr=cfg.final_lr,
        warmup_fraction=cfg.warmup_fraction,
        weight_decay=cfg.weight_decay,
        grad_clip=cfg.grad_clip,
        precision=cfg.precision,
        deepspeed=cfg.deepspeed,
    )
    generator = DrVoiceGenerator(model)

    def collect(step: int) -> list[Rollout]:
        model.eval()
        rollouts = []
        with autocast(runtime, cfg.precision):
            for slot, task in enumerate(step_tasks(tasks, cfg.seed, step, cfg.prompts_per_step, runtime)):
                prompt, user, history = task_prompt(task, builder, features)
                prompt.mels = [m.to(runtime.device) for m in prompt.mels]
                for g in range(cfg.group_size):
                    sampling = SamplingConfig(
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        top_k=cfg.top_k,
                        speech_temperature=cfg.speech_temperature,
                        seed=rollout_seed(cfg.seed, step, runtime.rank, slot, g),
                        max_new_steps=cfg.max_new_steps,
                    )
                    r = sample_reply(generator, ckpt.tokenizer, task, prompt, user, history, sampling)
                    r.reward = checked_reward(reward_fn, r.reply_text, task.item)
                    rollouts.append(r)
        model.train()
        return rollouts

    step = 0
    state = latest_state(out) if cfg.resume else None
    if state is not None:
        step, _ = trainer.load_state(state)
        log.info("resumed from %s (step %d)", state, step)
    metrics = MetricsLogger(out) if runtime.is_main else None
    if metrics is not None:
        metrics.truncate_after(step + 1)
    bar = tqdm(total=cfg.max_steps, initial=step, desc=desc, disable=not runtime.is_main, dynamic_ncols=True)
    start = time.perf_counter()
    while step < cfg.max_steps:
        step += 1
        t0 = time.perf_counter()
        rollouts = collect(step)
        rollout_s = time.perf_counter() - t0
        rewards = torch.tensor([r.reward for r in rollouts], device=runtime.device)  # (N,)
        batch = collate([rollout_example(builder, r) for r in rollouts]).to(runtime.device)
        mask = torch.ones(len(rollouts), 1, dtype=torch.bool, device=runtime.device)
        old = None
        losses, clipped, ratios, norms = [], [], [], []
        for _ in range(cfg.ppo_epochs):
            with autocast(runtime, cfg.precision):
                lp = trainer.model(batch)
            new = (lp.total / lp.count.clamp(min=1))[:, None]  # (N, 1) mean_t log pi over text + speech
            old = new.detach() if old is None else old  # the sampling policy: the first forward
            o = gspo_objective(new, old, mask, rewards, cfg.group_size, cfg.clip_low, cfg.clip_high)
            norms.append(trainer.step(o.loss))
            losses.append(float(o.loss.detach()))
            clipped.append(float(o.clip_fraction))
            ratios.append(o.ratios)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:  # every rank joins the all-reduce
            all_ratios = torch.cat(ratios)
            groups = rewards.view(-1, cfg.group_size)
            scalars = {
                "loss": sum(losses) / len(losses),
                "mean_reward": float(rewards.mean()),
                "reward_std": float(rewards.std(unbiased=False)),
                "groups_with_signal": float((groups != groups[:, :1]).any(dim=1).float().mean()),
                "clip_fraction": sum(clipped) / len(clipped),
                "ratio_mean": float(all_ratios.mean()),
                "ratio_min": float(all_ratios.min()),
                "ratio_max": float(all_ratios.max()),
                "reply_text_tokens": sum(len(r.sample.reply_ids) for r in rollouts) / len(rollouts),
                "reply_speech_tokens": sum(len(r.sample.reply_speech) for r in rollouts) / len(rollouts),
                "complete_fraction": sum(r.complete for r in rollouts) / len(rollouts),
            }
            scalars = {k: runtime.all_reduce_mean(v) for k, v in scalars.items()}
            scalars.update(lr=trainer.lr, grad_norm=sum(norms) / len(norms), rollout_s=rollout_s)
            if metrics is not None:
                metrics.log(step, **scalars, elapsed_s=time.perf_counter() - start)
                bar.set_postfix(reward=f"{scalars['mean_reward']:.3f}")
                first = rollouts[0]
                log.info(
                    "step %d: %s (%s) -> %r, reward %.2f",
                    step,
                    first.task.item.id,
                    first.task.mode,
                    first.reply_text,
                    first.reward,
                )
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            trainer.save_state(out, step, {}, keep=cfg.keep_states)
    bar.close()
    if metrics is not None:
        metrics.plot("reward.png", keys=("mean_reward", "loss", "clip_fraction", "ratio_mean"))
        metrics.close()
    extra = {"recipe": desc, "init": cfg.init, "reward": cfg.reward, "group_size": cfg.group_size}
    return save_final(out / "final", ckpt, runtime, {**extra, "steps": cfg.max_steps})


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = run(parse_config(GSPOConfig, argv, __doc__))
    if path is not None:
        print(f"final checkpoint: {path}")


if __name__ == "__main__":
    main()
