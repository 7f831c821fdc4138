"""Speech-to-text behaviour distillation: the model answers a recording as it answers its transcript.

    python -m training.recipes.distill --init checkpoints/demo \\
        --train_manifest "[runs/demo/train.tokens.jsonl, runs/demo/question_words.tokens.jsonl]" \\
        --mel_cache runs/demo/mels --output_dir runs/distill --augment true

The teacher is the model itself reading the user's words (T2T), the student the same model hearing
them (S2T). Both are teacher-forced on one reply, the item's reply text or, for a recording without
one, the teacher's own greedy T2T reply (generated once, kept in `teacher_replies.jsonl`), and the
loss is the KL divergence from the teacher's next-token distribution to the student's at every reply
position, <|im_end|> included (the cross-modal distillation of DiVA, Held et al. 2024). The LLM is
frozen, so the teacher does not move and typed replies stay as they are; the speech path learns
(the adapter, and with `--train_whisper` the Whisper encoder). Unlike SFT targets, a teacher reply
exists for any recording with a transcript, speech outside the domain's questions included
(`training.data.general_speech`): the student is taught to read, not to recall answers.

With `--anchor` a recording that has a reply is taught by the starting model hearing it instead (S2T,
frozen copy, the same perturbed log-mels): what the model already answers from speech is kept, and
only the recordings without a reply (new word orders) learn from the text path.

Logged per step: the loss, and `agreement`, the share of reply positions where the student's most
likely token is the teacher's. Single process (no DeepSpeed); items with earlier turns are skipped.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.generate import DrVoiceGenerator
from core.sampling import SamplingConfig
from core.sequence import Batch, Sample, SequenceBuilder, UserInput
from training.cli import arg, parse_config, save_config
from training.data import ExampleCollator, LengthBucketSampler, MelCache, read_manifest
from training.data.augment import AugmentedMels
from training.data.manifest import ManifestItem
from training.recipes.common import (
    LoopSettings,
    freeze,
    load_init,
    make_runtime,
    make_trainer,
    save_final,
    train_loop,
)

log = logging.getLogger(__name__)

TEACHER_MODE, STUDENT_MODE = "T2T", "S2T"


@dataclass
class DistillConfig:
    init: str = arg("", "core checkpoint with a continuous speech encoder (e.g. the demo)")
    train_manifest: list[str] = arg(
        [], "manifests whose user recordings + transcripts are the data ([a, b] or one path)"
    )
    output_dir: str = arg("runs/distill", "metrics.jsonl, loss.png, teacher_replies.jsonl and final/")
    mel_cache: str | None = arg(None, "folder of cached user log-mels")
    max_steps: int = arg(400, "optimiser steps")
    max_tokens: int = arg(8192, "padded LLM positions per batch (student side)")
    max_batch_size: int = arg(16, "recordings per batch")
    peak_lr: float = arg(3e-4, "peak learning rate")
    final_lr: float = arg(3e-5, "learning rate at the last step (cosine)")
    warmup_fraction: float = arg(0.05, "linear warmup as a fraction of max_steps")
    grad_clip: float = arg(1.0, "max gradient norm")
    temperature: float = arg(1.0, "softens both distributions (the loss is scaled by its square)")
    train_whisper: bool = arg(False, "train the Whisper encoder too (default: the adapter only)")
    augment: bool = arg(False, "perturb the student's log-mels afresh each time (tempo, warp, masks)")
    anchor: bool = arg(
        False,
        "a recording with a reply keeps the starting model hearing it (S2T) as its teacher; "
        "only recordings without one learn from T2T",
    )
    teacher_max_tokens: int = arg(40, "longest teacher reply generated for a recording without one")
    seed: int = arg(0, "data order and perturbations")
    log_every: int = arg(10, "steps between metric lines")
    save_every: int = arg(200, "steps between resumable states")
    keep_states: int = arg(2, "resumable states kept on disk")
    resume: bool = arg(True, "continue from the newest state in output_dir")
    device: str = arg("auto", "auto, cpu or cuda")

    def __post_init__(self) -> None:
        if isinstance(self.train_manifest, str):
            self.train_manifest = [self.train_manifest]
        if not self.init or not self.train_manifest:
            raise ValueError("--init and --train_manifest are required")
        if self.max_steps < 1 or self.max_batch_size < 1:
            raise ValueError("--max_steps and --max_batch_size must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")


def recordings(manifests: list[str]) -> list[ManifestItem]:
    """Single-turn items with user speech and its transcript, each recording once."""
    seen, out = set(), []
    for manifest in manifests:
        for item in read_manifest(manifest):
            if item.audio is None or not item.text or item.history or item.audio in seen:
                continue
            seen.add(item.audio)
            out.append(item)
    return out


def teacher_replies(
    items: list[ManifestItem],
    builder: SequenceBuilder,
    generator: DrVoiceGenerator,
    path: Path,
    max_tokens: int,
) -> dict[str, list[int]]:
    """Reply token ids per transcript: the item's reply text, else the teacher's greedy T2T reply.

    Generated replies are appended to `path` (JSONL of {"text", "reply_ids"}) and read back on a rerun.
    """
    replies: dict[str, list[int]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                replies[row["text"]] = row["reply_ids"]
    for item in items:
        if item.reply_text and item.text not in replies:
            replies[item.text] = builder.encode_text(item.reply_text)
    missing = sorted({item.text for item in items} - replies.keys())
    if missing:
        im_end = builder.ids["im_end"]
        sampling = SamplingConfig(max_new_steps=max_tokens + 1)
        with path.open("a") as handle:
            for text in tqdm(missing, desc="teacher replies", dynamic_ncols=True):
                prompt = builder.prompt(TEACHER_MODE, UserInput(text=text))
                ids = []
                for step in generator.stream(prompt, TEACHER_MODE, sampling):
                    if step.text_token == im_end:
                        break
                    ids.append(step.text_token)
                replies[text] = ids
                handle.write(json.dumps({"text": text, "reply_ids": ids}) + "\n")
    return replies


def distillation_loss(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) of (N, V) logits, times temperature squared."""
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    s = F.log_softmax(student.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def run(cfg: DistillConfig) -> Path | None:
    runtime = make_runtime(cfg.device, None, cfg.seed)
    if runtime.world_size > 1:
        raise ValueError("distill runs in one process")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    ckpt = load_init(cfg.init, runtime)
    model = ckpt.model
    if model.encoder is None:
        raise ValueError(f"{cfg.init} has no continuous speech encoder (user_audio is discrete)")
    builder = SequenceBuilder(model.config, ckpt.tokenizer)
    items = recordings(cfg.train_manifest)
    if not items:
        raise ValueError(f"no single-turn item with user audio and text in {', '.join(cfg.train_manifest)}")
    model.eval()
    replies = teacher_replies(
        items, builder, DrVoiceGenerator(model), out / "teacher_replies.jsonl", cfg.teacher_max_tokens
    )
    model.train()
    frozen = [name for name, _ in model.named_children() if name != "encoder"]
    trainable, n_frozen = freeze(model, frozen + ([] if cfg.train_whisper else ["encoder.whisper"]))
    log.info(
        "distilling %s into %s on %d recordings (%d with a generated teacher reply); trainable %d, frozen %d",
        TEACHER_MODE,
        STUDENT_MODE,
        len(items),
        sum(not item.reply_text for item in items),
        trainable,
        n_frozen,
    )
    cache = MelCache(cfg.mel_cache, model.encoder.cfg.n_mels)
    features = AugmentedMels(cache, seed=cfg.seed) if cfg.augment else cache
    n_mels = model.encoder.cfg.n_mels

    def samples(item: ManifestItem, mels: torch.Tensor) -> tuple[Sample, Sample]:
        ids = replies[item.text]
        teacher = Sample(
            TEACHER_MODE, UserInput(text=item.text), "", reply_ids=ids, system_prompt=item.system
        )
        student = Sample(STUDENT_MODE, UserInput(mels=mels), "", reply_ids=ids, system_prompt=item.system)
        return teacher, student

    lengths = [
        len(builder.example(samples(item, torch.zeros(1, 1).expand(n_mels, cache.frames(item.audio)))[1]))
        for item in items
    ]
    sampler = LengthBucketSampler(lengths, cfg.max_tokens, seed=cfg.seed, max_batch_size=cfg.max_batch_size)
    collate = ExampleCollator.for_builder(builder)

    # the starting model, frozen: with --anchor the teacher of recordings that have a reply
    anchor = copy.deepcopy(model).eval().requires_grad_(False) if cfg.anchor else None

    def get_batch(indices: list[int]) -> list[tuple[torch.nn.Module, Batch, Batch]]:
        """(teacher model, teacher batch, student batch) per kind of teacher in the batch; an
        anchored teacher hears the student's own batch."""
        groups: dict[bool, list[tuple[Sample, Sample]]] = {True: [], False: []}
        for i in indices:
            anchored = anchor is not None and bool(items[i].reply_text)
            groups[anchored].append(samples(items[i], features(items[i].audio)))
        out = []
        for anchored, pairs in groups.items():
            if not pairs:
                continue
            student = collate([builder.example(s) for _, s in pairs]).to(runtime.device)
            if anchored:
                out.append((anchor, student, student))
            else:
                teacher = collate([builder.example(t) for t, _ in pairs]).to(runtime.device)
                out.append((model, teacher, student))
        return out

    def loss_fn(batch: list[tuple[torch.nn.Module, Batch, Batch]]) -> dict[str, torch.Tensor]:
        total, agree, rows = 0.0, 0.0, 0
        for teacher_model, teacher_batch, student_batch in batch:
            with torch.no_grad():
                teacher, _ = teacher_model.text_logits(teacher_batch)
            student, _ = model.text_logits(student_batch)
            if teacher.shape != student.shape:
                raise RuntimeError(
                    f"teacher and student reply positions differ: {teacher.shape} vs {student.shape}"
                )
            n = teacher.shape[0]
            total = total + distillation_loss(teacher, student, cfg.temperature) * n
            agree = agree + (teacher.argmax(-1) == student.argmax(-1)).float().sum()
            rows += n
        return {"loss": total / rows, "agreement": agree / rows}

    trainer = make_trainer(
        model,
        runtime,
        max_steps=cfg.max_steps,
        peak_lr=cfg.peak_lr,
        final_lr=cfg.final_lr,
        warmup_fraction=cfg.warmup_fraction,
        weight_decay=0.0,
        grad_clip=cfg.grad_clip,
        precision="fp32",
        deepspeed=None,
    )
    settings = LoopSettings(out, cfg.max_steps, cfg.log_every, cfg.save_every, cfg.keep_states, cfg.resume)
    train_loop(trainer, sampler, get_batch, loss_fn, settings, runtime, "distill")
    extra = {"recipe": "distill", "init": cfg.init, "steps": cfg.max_steps, "augment": cfg.augment}
    return save_final(out / "final", ckpt, runtime, extra)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = run(parse_config(DistillConfig, argv, __doc__))
    if path is not None:
        print(f"final checkpoint: {path}")


if __name__ == "__main__":
    main()
