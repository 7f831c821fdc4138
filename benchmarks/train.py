"""Training throughput of the same model at group size 1 and 5 (paper §5 / appendix C: k = 5 costs
about half the GPU hours of k = 1).

    python -m benchmarks.train --json

Synthetic S2M samples: fake user log-mels (`--user-seconds`), a reply sentence, and random 25 Hz
speech tokens for a `--reply-seconds` reply; a fixed batch of `--batch-size` samples. After
`--warmup` optimiser steps (AdamW, gradient clipping), `--steps` steps per group size are timed,
interleaved between the group sizes (a shared CPU slows all alike); the median counts. Prints one JSON
object per group size: group_size, audio_seconds_per_second (seconds of assistant speech trained
on per second of training), llm_positions_per_sample, plus samples_per_second, ms_per_step,
parameters, and cost_relative_to_k1 (training time per audio second over k = 1's; paper: ~0.5 at
k = 5) when k = 1 is among the group sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from benchmarks.common import SENTENCES, demo_size_model
from core.modes import MODES
from core.sequence import Sample, SequenceBuilder, UserInput
from training.data import ExampleCollator

SPEECH_RATE = 25  # speech tokens per second of the assistant's reply


def synthetic_batch(model, tokenizer, batch_size: int, reply_seconds: float, user_seconds: float, seed: int):
    """A collated batch of S2M samples (fake mels, random 25 Hz reply tokens)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    n_mels = cfg.encoder["n_mels"]
    samples = [
        Sample(
            mode="S2M",
            user=UserInput(mels=torch.randn(n_mels, int(user_seconds * 100), generator=g) * 0.5),
            reply_text=SENTENCES[i % len(SENTENCES)],
            reply_speech=torch.randint(
                0, cfg.speech_vocab_size, (int(reply_seconds * SPEECH_RATE),), generator=g
            ).tolist(),
        )
        for i in range(batch_size)
    ]
    builder = SequenceBuilder(cfg, tokenizer)
    examples = [builder.example(s) for s in samples]
    return ExampleCollator.for_builder(builder)(examples), sum(len(e) for e in examples) / len(examples)


@dataclass
class Setup:
    """One group size's model, optimiser and fixed batch."""

    group_size: int
    model: torch.nn.Module
    batch: object  # core.sequence.Batch
    positions: float  # mean LLM positions per sample
    optimizer: torch.optim.Optimizer
    step_seconds: list[float]

    def step(self) -> float:
        """One optimiser step (forward, backward, clip, AdamW); returns its wall time in seconds."""
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        self.model(self.batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return time.perf_counter() - start


def setup(group_size: int, args: argparse.Namespace) -> Setup:
    # the Table 5 prompts join the tokenizer's text so the system prompt is ~1 token per word
    prompts = tuple(m.system_prompt for m in MODES.values())
    model, tokenizer = demo_size_model(group_size, args.units, seed=args.seed, extra_texts=prompts)
    model.train()
    batch, positions = synthetic_batch(
        model, tokenizer, args.batch_size, args.reply_seconds, args.user_seconds, args.seed
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    return Setup(group_size, model, batch, positions, optimizer, [])


def measure(group_sizes: list[int], args: argparse.Namespace) -> list[dict]:
    """Warm-up, then `args.steps` timed steps per group size, interleaved (k=1, k=5, k=1, ...) so
    that other jobs on a shared CPU slow every group size alike; the median step time counts."""
    torch.set_num_threads(args.threads)
    setups = [setup(k, args) for k in group_sizes]
    for s in setups:
        for _ in range(args.warmup):
            s.step()
    for _ in tqdm(range(args.steps), desc="timed rounds", leave=False):
        for s in setups:
            s.step_seconds.append(s.step())
    rows = []
    for s in setups:
        step_s = statistics.median(s.step_seconds)
        rows.append(
            {
                "group_size": s.group_size,
                "audio_seconds_per_second": round(args.batch_size * args.reply_seconds / step_s, 3),
                "llm_positions_per_sample": round(s.positions, 1),
                "samples_per_second": round(args.batch_size / step_s, 3),
                "ms_per_step": round(1000 * step_s, 1),
                "parameters": s.model.num_parameters(),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "threads": args.threads,
            }
        )
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group-sizes", default="1,5", help="comma-separated group sizes k (default 1,5)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per optimiser step")
    p.add_argument(
        "--steps", type=int, default=10, help="timed optimiser steps per group size (median counts)"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed optimiser steps first")
    p.add_argument(
        "--reply-seconds", type=float, default=4.0, help="assistant speech per sample (25 Hz tokens)"
    )
    p.add_argument("--user-seconds", type=float, default=3.0, help="user speech per sample (fake log-mels)")
    p.add_argument("--units", type=int, default=1024, help="speech vocabulary (demo units codec: 1024)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 when the CPU is shared)")
    p.add_argument("--seed", type=int, default=0, help="seeds the model and the synthetic data")
    p.add_argument("--json", action="store_true", help="print one JSON object per line (default: a table)")
    args = p.parse_args(argv)
    rows = measure([int(k) for k in args.group_sizes.split(",")], args)
    base = next((r for r in rows if r["group_size"] == 1), None)
    for row in rows:
        if base is not None:  # training seconds per second of audio, relative to k = 1
            row["cost_relative_to_k1"] = round(
                base["audio_seconds_per_second"] / row["audio_seconds_per_second"], 3
            )
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
