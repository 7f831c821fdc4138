"""Where a spoken reply's time goes, and what the lean decode path and background audio save.

    python -m benchmarks.decode_speed --checkpoint checkpoints/demo --json

Answers the same typed questions (T2M, greedy) with each engine setting in turn, several rounds
interleaved so that a busy machine slows every setting alike, and prints one JSON object per
setting: decode path ("lean": core/kv_decoder.py, "cached": transformers with a KV cache), the
lean path's product precision (fp32: the weights; fp16: float16 copies, the CPU default), background
audio (the codec on a worker thread) on or off, the median over rounds of the real-time factor and
of the mean time to first audio, the model-only real-time factor (generation without the codec) and
the codec-only one (decoding the same tokens offline, reply by reply and as one long reply, where
the codec's growing hops pay off). Settings of one precision give the same tokens and the same audio
(the benchmark checks that); fp16 rows report how many replies kept every speech token of fp32
(`same_tokens_as_fp32`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

QUESTIONS = [
    "What is the next number after fifty two?",
    "What is three plus four?",
    "What is the capital of France?",
    "Which day comes after Monday?",
    "What is the opposite of hot?",
    "Which month comes before June?",
    "Hello!",
    "What is your name?",
    "How much is seven times eight?",
    "Thank you!",
]


def questions_from(manifest: Path | None, n: int) -> list[str]:
    if manifest is None:
        return QUESTIONS[:n]
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    step = max(1, len(lines) // n)
    return [item["text"] for item in lines[::step][:n]]


def answer(engine, question: str):
    from core.engine import ChatRequest
    from core.types import AudioChunk, Done

    events = list(engine.stream(ChatRequest("T2M", text=question)))
    done = next(e for e in events if isinstance(e, Done))
    audio = [e.samples for e in events if isinstance(e, AudioChunk)]
    return done, (np.concatenate(audio) if audio else np.zeros(0, np.float32))


def measure(checkpoint: str, questions: list[str], rounds: int, threads: int) -> list[dict]:
    from core.engine import ChatRequest, VoiceChatEngine
    from core.sampling import SamplingConfig

    torch.set_num_threads(threads)
    engine = VoiceChatEngine.from_pretrained(checkpoint)
    paths = [("cached", "fp32"), ("lean", "fp32"), ("lean", "fp16")]
    settings = [(d, m, b) for d, m in paths for b in (False, True)]

    def use(decode: str, matmul: str, background: bool) -> None:
        engine.decode, engine.matmul, engine.background_audio = decode, matmul, background

    use("lean", "fp16", True)
    answer(engine, questions[0])  # warm-up
    rtf = {s: [] for s in settings}
    ttfa = {s: [] for s in settings}
    # per precision: question index -> (speech tokens, audio)
    reference: dict[str, dict[int, tuple[list[int], np.ndarray]]] = {"fp32": {}, "fp16": {}}
    for _ in tqdm(range(rounds), desc="rounds"):
        for setting in settings:
            use(*setting)
            total = audio = 0.0
            firsts = []
            ref = reference[setting[1]]
            for i, q in enumerate(questions):
                done, wav = answer(engine, q)
                if i not in ref:
                    ref[i] = (done.speech_tokens, wav)
                elif done.speech_tokens != ref[i][0] or not np.array_equal(wav, ref[i][1]):
                    raise RuntimeError(f"setting {setting} changed the reply to {q!r}")
                total += done.timings.total_time
                audio += done.timings.audio_seconds
                firsts.append(done.timings.time_to_first_audio or 0.0)
            rtf[setting].append(total / audio)
            ttfa[setting].append(1000 * float(np.mean(firsts)))
    seconds = {
        m: sum(len(t) for t, _ in ref.values()) / engine.codec.token_rate for m, ref in reference.items()
    }
    same = sum(reference["fp16"][i][0] == reference["fp32"][i][0] for i in reference["fp32"])
    prompts = [engine.build_prompt(ChatRequest("T2M", text=q)) for q in questions]
    model_only = {}
    for decode, matmul in paths:
        runs = []
        for _ in range(rounds):
            start = time.perf_counter()
            for prompt in prompts:
                for _step in engine.generator.stream(
                    prompt, "T2M", SamplingConfig(), decode=decode, matmul=matmul
                ):
                    pass
            runs.append((time.perf_counter() - start) / seconds[matmul])
        model_only[decode, matmul] = statistics.median(runs)
    codec_runs, codec_long_runs = [], []
    replies = [tokens for tokens, _ in reference["fp32"].values()]
    for _ in range(rounds):
        start = time.perf_counter()
        for tokens in replies:
            engine.codec.decode(tokens)
        codec_runs.append((time.perf_counter() - start) / seconds["fp32"])
        start = time.perf_counter()
        engine.codec.decode([t for tokens in replies for t in tokens])  # as one long reply
        codec_long_runs.append((time.perf_counter() - start) / seconds["fp32"])
    return [
        {
            "decode": d,
            "matmul": m,
            "background_audio": b,
            "real_time_factor": round(statistics.median(rtf[(d, m, b)]), 4),
            "time_to_first_audio_ms": round(statistics.median(ttfa[(d, m, b)]), 1),
            "model_only_real_time_factor": round(model_only[d, m], 4),
            "codec_only_real_time_factor": round(statistics.median(codec_runs), 4),
            "codec_one_long_reply_real_time_factor": round(statistics.median(codec_long_runs), 4),
            "audio_seconds": round(seconds[m], 2),
            **({"same_tokens_as_fp32": f"{same}/{len(questions)}"} if m == "fp16" else {}),
            "replies": len(questions),
            "rounds": rounds,
            "threads": threads,
        }
        for d, m, b in settings
    ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--checkpoint", default="checkpoints/demo", help="checkpoint directory (default: the demo)"
    )
    p.add_argument("--manifest", type=Path, help="take the typed questions from this manifest's 'text'")
    p.add_argument("--questions", type=int, default=10, help="questions per round (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (default: a table)")
    args = p.parse_args(argv)
    rows = measure(args.checkpoint, questions_from(args.manifest, args.questions), args.rounds, args.threads)
    for row in rows:
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
