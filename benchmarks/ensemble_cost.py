"""What hearing a spoken question several ways (`audio_views`) and the text guide (`text_guide`) cost.

    python -m benchmarks.ensemble_cost --manifest data/corpus/test.jsonl --settings 1:0,3:0,3:0.5

Answers the same spoken questions of a manifest (every n-th item) with each setting
(`views:guide`) in turn, the settings rotated question by question so that a machine whose speed
drifts slows every setting alike, and prints per setting the pooled real-time factor (generation
time over the seconds of speech, as `training.eval` reports it), the mean time to first audio, and
both relative to the first setting. The replies are not scored: `python -m training.eval
--audio-views N --text-guide w` measures what the settings buy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm


def parse_settings(text: str) -> list[tuple[int, float]]:
    """'1:0,3:0.5' -> [(1, 0.0), (3, 0.5)] (audio views, text guide weight)."""
    out = []
    for part in text.split(","):
        views, _, guide = part.strip().partition(":")
        out.append((int(views), float(guide or 0)))
    return out


def measure(checkpoint: str, audios: list[Path], mode: str, settings: list[tuple[int, float]]) -> list[dict]:
    from core.engine import ChatRequest, VoiceChatEngine
    from core.sampling import SamplingConfig

    engine = VoiceChatEngine.from_pretrained(checkpoint)
    engine.warm_up()  # first-call costs
    time_s = [0.0] * len(settings)
    speech_s = [0.0] * len(settings)
    first_audio = [[] for _ in settings]
    for i, audio in enumerate(tqdm(audios, desc="questions")):
        for j in [(i + s) % len(settings) for s in range(len(settings))]:
            views, guide = settings[j]
            sampling = SamplingConfig(audio_views=views, text_guide=guide)
            t = engine.chat(ChatRequest(mode, audio=str(audio), sampling=sampling))[0].timings
            time_s[j] += t.total_time
            speech_s[j] += t.audio_seconds
            if t.time_to_first_audio is not None:
                first_audio[j].append(t.time_to_first_audio * 1000)
    rows = []
    for j, (views, guide) in enumerate(settings):
        rtf = time_s[j] / max(speech_s[j], 1e-9)
        ttfa = sum(first_audio[j]) / max(len(first_audio[j]), 1)
        rows.append(
            {
                "audio_views": views,
                "text_guide": guide,
                "real_time_factor": round(rtf, 4),
                "time_to_first_audio_ms": round(ttfa, 1),
            }
        )
    for row in rows:
        row["rtf_vs_first"] = round(row["real_time_factor"] / rows[0]["real_time_factor"], 3)
        row["ttfa_vs_first"] = round(row["time_to_first_audio_ms"] / rows[0]["time_to_first_audio_ms"], 3)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--checkpoint", default="checkpoints/demo", help="checkpoint directory (default: the demo)"
    )
    p.add_argument(
        "--manifest", type=Path, required=True, help="manifest with 'audio' paths (relative to it)"
    )
    p.add_argument(
        "--questions", type=int, default=40, help="spoken questions, spread over the manifest (default 40)"
    )
    p.add_argument("--mode", default="S2M", help="a speech-input mode (default S2M)")
    p.add_argument(
        "--settings", default="1:0,3:0,1:0.5,3:0.5", help="views:guide pairs, the first the baseline"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (default: a table)")
    args = p.parse_args(argv)
    from core.modes import get_mode

    if not get_mode(args.mode).speech_input:
        p.error(
            f"--mode {args.mode} answers text: audio views need a speech-input mode (S2M, S2T, STC, SAC, SUC)"
        )
    torch.set_num_threads(args.threads)
    lines = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    step = max(1, len(lines) // args.questions)
    audios = [args.manifest.parent / item["audio"] for item in lines[::step][: args.questions]]
    rows = measure(args.checkpoint, audios, args.mode, parse_settings(args.settings))
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print("| views | guide | real-time factor | first audio (ms) | RTF / first | first audio / first |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['audio_views']} | {r['text_guide']} | {r['real_time_factor']} | {r['time_to_first_audio_ms']} "
            f"| {r['rtf_vs_first']} | {r['ttfa_vs_first']} |"
        )


if __name__ == "__main__":
    main()
