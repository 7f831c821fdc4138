"""How many concurrent chat sessions the app sustains, and the latency users see.

Starts ``app.py`` on a checkpoint (loopback only, a throw-away database), then for each number of
sessions N runs N ``gradio_client`` clients at once, each doing ``--turns`` chat turns through the
``/chat`` endpoint, and reports errors, turn latency and time to first text / first audio as a
client sees them (first progress result carrying reply text / generated audio). Optionally
(``--browser``) measures the same two times in Debian chromium, from the click on Send to the reply
text appearing and to the streamed ``<audio>`` element having data. Bounded by ``--time-limit``.

    python benchmarks/app_concurrency.py --tiny                          # tiny test checkpoint (~15 s to build)
    python benchmarks/app_concurrency.py --checkpoint checkpoints/demo --sessions 1,2,4,8 --browser
    python benchmarks/app_concurrency.py --tiny --concurrency 1,2 --out runs/app_concurrency.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint", default=str(ROOT / "checkpoints" / "demo"), help="checkpoint dir or hub id"
    )
    source.add_argument(
        "--tiny", action="store_true", help="build and use the tiny checkpoint of the app tests"
    )
    parser.add_argument(
        "--sessions", default="1,2,4,8", help="numbers of concurrent sessions to try (comma list)"
    )
    parser.add_argument("--turns", type=int, default=3, help="chat turns per session")
    parser.add_argument("--concurrency", default="1", help="app --concurrency values to try (comma list)")
    parser.add_argument(
        "--mode", default="S2M", help="chat mode (speech modes send --audio, text modes --text)"
    )
    parser.add_argument("--audio", default=None, help="question WAV (default: flite speech of --text)")
    parser.add_argument("--text", default="what is three plus four?", help="the question")
    parser.add_argument("--max-new-steps", type=int, default=200, help="sampling max_new_steps per turn")
    parser.add_argument("--app-threads", type=int, default=1, help="torch threads of the app process")
    parser.add_argument("--browser", action="store_true", help="also measure first text / audio in chromium")
    parser.add_argument("--browser-repeats", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=600, help="stop starting new runs after this (s)")
    parser.add_argument("--request-timeout", type=float, default=180, help="per chat turn (s)")
    parser.add_argument("--out", default=None, help="write all measurements as JSON here")
    return parser.parse_args(argv)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(checkpoint: str, concurrency: int, threads: int, folder: Path) -> tuple[subprocess.Popen, str]:
    """Runs app.py on 127.0.0.1; returns (process, url) once the page answers."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("DRVOICE_ADMIN_TOKEN", None)
    command = [sys.executable, str(ROOT / "app.py"), "--checkpoint", checkpoint, "--host", "127.0.0.1",
               "--port", str(port), "--concurrency", str(concurrency), "--threads", str(threads),
               "--data-dir", str(folder / f"data-{port}"), "--queue-size", "256"]  # fmt: skip
    log = folder / f"app-{port}.log"
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url, started = f"http://127.0.0.1:{port}/", time.perf_counter()
    while time.perf_counter() - started < 120:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}; see {log}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            print(f"app up in {time.perf_counter() - started:.1f} s at {url} (--concurrency {concurrency})")
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("app.py did not answer within 120 s")


def one_turn(client, args, audio, conversation_id: str = "") -> dict:
    """One /chat call; client-side times are measured from submit."""
    from gradio_client import handle_file

    speech = args.mode.upper() in ("S2M", "S2T", "STC", "SAC", "SUC")
    started = time.perf_counter()
    first_text = first_audio = None
    try:
        job = client.submit(
            None if speech else args.text,
            handle_file(audio) if speech else None,
            args.mode, conversation_id, "", {"max_new_steps": args.max_new_steps}, api_name="/chat",
        )  # fmt: skip
        result = None
        for result, _ in job:
            now = time.perf_counter() - started
            if first_text is None and result["reply_text"]:
                first_text = now
            if first_audio is None and result["audio_seconds"] > 0:
                first_audio = now
        result = job.result(timeout=args.request_timeout)[0]
        ok = result["status"] == "done"
        return {"ok": ok, "error": None if ok else result["error"] or result["status"],
                "total_s": time.perf_counter() - started, "first_text_s": first_text, "first_audio_s": first_audio,
                "server": result["timings"], "conversation_id": result["conversation_id"]}  # fmt: skip
    except Exception as error:  # counted as an error of this level
        return {
            "ok": False,
            "error": f"{type(error).__name__}: {error}",
            "total_s": time.perf_counter() - started,
        }


def run_level(url: str, sessions: int, args, audio) -> dict:
    """``sessions`` clients at once, each ``args.turns`` turns in one conversation."""
    from gradio_client import Client

    results: list[dict] = []
    lock = threading.Lock()

    def session() -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as error:
            with lock:
                results.append({"ok": False, "error": f"connect: {error}", "total_s": 0.0})
            return
        conversation = ""
        for _ in range(args.turns):
            r = one_turn(client, args, audio, conversation)
            conversation = r.get("conversation_id", conversation) if args.turns > 1 else ""
            with lock:
                results.append(r)

    started = time.perf_counter()
    threads = [threading.Thread(target=session) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.request_timeout * args.turns + 60)
    wall = time.perf_counter() - started
    ok = [r for r in results if r["ok"]]
    return {
        "sessions": sessions,
        "turns": len(results),
        "errors": len(results) - len(ok),
        "error_examples": sorted({r["error"] for r in results if not r["ok"]})[:3],
        "wall_s": wall,
        "turns_per_s": len(ok) / wall if wall else 0.0,
        "total_s": _stats([r["total_s"] for r in ok]),
        "client_first_text_s": _stats([r["first_text_s"] for r in ok if r["first_text_s"] is not None]),
        "client_first_audio_s": _stats([r["first_audio_s"] for r in ok if r["first_audio_s"] is not None]),
        "server_first_text_ms": _stats([r["server"]["time_to_first_text_ms"] for r in ok if r["server"]]),
        "server_first_audio_ms": _stats(
            [
                r["server"]["time_to_first_audio_ms"]
                for r in ok
                if r["server"] and r["server"]["time_to_first_audio_ms"]
            ]
        ),
    }


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return {"median": statistics.median(values), "p95": p95, "max": values[-1], "n": len(values)}


def browser_latency(url: str, args, audio: str) -> list[dict]:
    """Click-to-text and click-to-audio in chromium (the audio element has decodable data)."""
    from playwright.sync_api import sync_playwright

    speech = args.mode.upper() in ("S2M", "S2T", "STC", "SAC", "SUC")
    watch = """() => { const t0 = performance.now(); window.__lat = {};
        const tick = () => {
          const bot = Array.from(document.querySelectorAll('#chatbot [data-testid="bot"]'));
          if (window.__lat.text === undefined && bot.some(b => b.innerText.trim().length > 1)) window.__lat.text = performance.now() - t0;
          const audio = Array.from(document.querySelectorAll('#chat-reply-audio audio'));
          if (window.__lat.audio === undefined && audio.some(a => a.readyState >= 2)) window.__lat.audio = performance.now() - t0;
          if (window.__lat.text === undefined || window.__lat.audio === undefined) setTimeout(tick, 5);
        };
        document.querySelector('#chat-send').click(); tick(); }"""
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page()
        page.set_default_timeout(args.request_timeout * 1000)
        page.goto(url)
        page.wait_for_selector("#chat-send")
        page.locator("#chat-mode label", has_text=f"({args.mode.upper()})").click()
        for _ in range(args.browser_repeats):
            page.click("#chat-new")
            page.wait_for_function("document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length == 0")
            if speech:
                page.click("#chat-audio-in button[aria-label='Upload file']")
                page.set_input_files("#chat-audio-in input[type=file]", audio)
                page.wait_for_selector("#chat-audio-in audio", state="attached")
            else:
                page.fill("#chat-text-in textarea", args.text)
            page.evaluate(watch)
            page.wait_for_function("document.querySelector('#chat-metrics').innerText.length > 0")
            with contextlib.suppress(Exception):  # a text-only mode never gets audio
                page.wait_for_function(
                    "window.__lat.text !== undefined && window.__lat.audio !== undefined", timeout=15000
                )
            lat = page.evaluate("window.__lat")
            out.append({"first_text_ms": lat.get("text"), "first_audio_ms": lat.get("audio")})
            print(f"  browser: first text {_ms(lat.get('text'))}, first audio {_ms(lat.get('audio'))}")
        browser.close()
    return out


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def question_audio(args, folder: Path) -> str:
    if args.audio:
        return args.audio
    if not shutil.which("flite"):
        sys.exit("error: pass --audio QUESTION.wav (flite is not installed to synthesise one)")
    path = folder / "question.wav"
    subprocess.run(["flite", "-voice", "kal", "-t", args.text, "-o", str(path)], check=True)
    return str(path)


def fmt(stats: dict | None, scale: float = 1.0, unit: str = "s") -> str:
    if not stats:
        return "–"
    return f"{stats['median'] * scale:.{0 if unit == 'ms' else 2}f} / {stats['p95'] * scale:.{0 if unit == 'ms' else 2}f}"


def main(argv=None) -> None:
    args = parse_args(argv)
    deadline = time.perf_counter() + args.time_limit
    folder = Path(tempfile.mkdtemp(prefix="drvoice-bench-app-"))
    checkpoint = args.checkpoint
    audio = args.audio
    if args.tiny:
        import torch

        from tests.app.tiny_checkpoint import build_tiny_checkpoint

        torch.set_num_threads(1)
        print("building the tiny checkpoint…")
        path, question = build_tiny_checkpoint(folder)
        checkpoint, audio = str(path), audio or str(question)
    elif not (Path(checkpoint) / "config.json").is_file() and Path(checkpoint).exists():
        sys.exit(f"error: {checkpoint} is not a checkpoint directory; pass --checkpoint or --tiny")
    args.audio = audio
    audio = question_audio(args, folder)
    report = {"checkpoint": checkpoint, "mode": args.mode, "turns_per_session": args.turns, "levels": []}
    for limit in [int(x) for x in args.concurrency.split(",")]:
        if time.perf_counter() > deadline:
            break
        process, url = start_app(checkpoint, limit, args.app_threads, folder)
        try:
            from gradio_client import Client

            one_turn(Client(url, verbose=False), args, audio)  # warm-up (first-call costs)
            if args.browser and "browser" not in report:
                report["browser"] = browser_latency(url, args, audio)
            for n in [int(x) for x in args.sessions.split(",")]:
                if time.perf_counter() > deadline:
                    print(f"time limit reached: skipping {n} sessions and more")
                    break
                level = run_level(url, n, args, audio)
                level["concurrency_limit"] = limit
                report["levels"].append(level)
                print(f"  N={n:3d}: {level['turns']} turns, {level['errors']} errors, {level['turns_per_s']:.2f} turns/s, "
                      f"turn {fmt(level['total_s'])} s, client first text {fmt(level['client_first_text_s'])} s, "
                      f"first audio {fmt(level['client_first_audio_s'])} s (median / p95)")  # fmt: skip
                for example in level["error_examples"]:
                    print(f"      error: {example}")
        finally:
            process.terminate()
            process.wait(30)
    print("\n| limit | N | turns | errors | turns/s | turn s (med/p95) | first text s, client | first audio s, client "
          "| first text ms, server | first audio ms, server |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for lv in report["levels"]:
        print(f"| {lv['concurrency_limit']} | {lv['sessions']} | {lv['turns']} | {lv['errors']} | {lv['turns_per_s']:.2f} "
              f"| {fmt(lv['total_s'])} | {fmt(lv['client_first_text_s'])} | {fmt(lv['client_first_audio_s'])} "
              f"| {fmt(lv['server_first_text_ms'], unit='ms')} | {fmt(lv['server_first_audio_ms'], unit='ms')} |")  # fmt: skip
    if report.get("browser"):
        texts = [b["first_text_ms"] for b in report["browser"] if b["first_text_ms"] is not None]
        audios = [b["first_audio_ms"] for b in report["browser"] if b["first_audio_ms"] is not None]
        print(f"\nbrowser (chromium, {args.mode}): first text median {statistics.median(texts):.0f} ms"
              + (f", first audio median {statistics.median(audios):.0f} ms" if audios else ""))  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
