"""Generation speed of the same model at group size 1 and 5 (S2M, end to end to a waveform).

    python -m benchmarks.generate --json

Prints one JSON object per group size: group_size, llm_steps_per_audio_second, time_to_first_audio_ms,
real_time_factor, ms_per_llm_step, parameters (plus audio_seconds and replies).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from tqdm import tqdm

from benchmarks.common import demo_size_model, fit_codec, speech
from core.engine import ChatRequest, VoiceChatEngine
from core.generate import DrVoiceGenerator
from core.modes import MODES
from core.sampling import SamplingConfig
from core.types import Done


def measure(group_size: int, codec, replies: int, reply_seconds: float, threads: int) -> dict:
    torch.set_num_threads(threads)
    prompts = tuple(m.system_prompt for m in MODES.values())
    model, tokenizer = demo_size_model(group_size, codec.codebook_size, extra_texts=prompts)
    engine = VoiceChatEngine(model, tokenizer, codec, checkpoint_id=f"bench-k{group_size}")
    steps = int(reply_seconds * 25 / group_size)
    sampling = SamplingConfig(speech_temperature=1.0, temperature=1.0, seed=0, max_new_steps=steps)
    question = speech("what is three plus four?", voice="kal")
    list(engine.stream(ChatRequest("S2M", audio=question, sampling=sampling)))  # warm-up
    ttfa, total, audio, llm_steps = [], 0.0, 0.0, 0
    for i in tqdm(range(replies), desc=f"k={group_size} replies", leave=False):
        s = SamplingConfig(**{**sampling.to_dict(), "seed": i})
        done = [
            e for e in engine.stream(ChatRequest("S2M", audio=question, sampling=s)) if isinstance(e, Done)
        ][0]
        t = done.timings
        ttfa.append(t.time_to_first_audio)
        total += t.total_time
        audio += t.audio_seconds
        llm_steps += t.llm_steps
    # model-only cost of one LLM step (its k SRH steps included), no codec
    prompt = engine.build_prompt(ChatRequest("S2M", audio=question))
    gen = DrVoiceGenerator(model)
    start = time.perf_counter()
    n = sum(1 for _ in gen.stream(prompt, "S2M", sampling))
    ms_per_step = (time.perf_counter() - start) * 1000 / n
    return {
        "group_size": group_size,
        "llm_steps_per_audio_second": round(llm_steps / audio, 3),
        "time_to_first_audio_ms": round(1000 * sorted(ttfa)[len(ttfa) // 2], 1),
        "real_time_factor": round(total / audio, 4),
        "ms_per_llm_step": round(ms_per_step, 2),
        "parameters": model.num_parameters(),
        "audio_seconds": round(audio, 2),
        "replies": replies,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group-sizes", default="1,5", help="comma-separated group sizes k (default 1,5)")
    p.add_argument("--replies", type=int, default=5, help="S2M replies per group size (median TTFA)")
    p.add_argument("--reply-seconds", type=float, default=8.0, help="speech length per reply (step limit)")
    p.add_argument("--units", type=int, default=1024, help="units codec codebook size (demo: 1024)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--json", action="store_true", help="print one JSON object per line (default: a table)")
    args = p.parse_args(argv)
    codec = fit_codec(args.units, seconds=args.units / 25 * 1.5)
    rows = [
        measure(int(k), codec, args.replies, args.reply_seconds, args.threads)
        for k in args.group_sizes.split(",")
    ]
    for row in rows:
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
