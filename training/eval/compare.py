"""Paired comparison of two evaluation runs on the same items: is a difference more than noise?

    python -m training.eval.compare before.jsonl after.jsonl [--json]

Both files are `python -m training.eval --out` results. For every mode both runs hold, only the items
both answered count. Per measure (text accuracy; for speaking modes also speech accuracy, i.e. the
judge's transcript) it reports both accuracies, their difference with a 95% interval for paired
proportions, how many items only one run got right, and the exact two-sided McNemar p-value on
those discordant items. On 640 items a change of a point or two is often a handful of items the
judge reads differently (a change of the audio below 1e-4 flipped seven T2M items of the demo), so
look at the p-value before reading a small difference as better or worse. Both the interval and the
test take the items as independent; items that share a reply text (the test split repeats small
talk) are not, so a difference carried by one reply is weaker than they say.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

from training.eval.harness import ItemResult, read_results

MEASURES = (("text", "text_correct"), ("speech", "speech_correct"))


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: discordant pairs split as a fair coin would split them."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Accuracy of two paired runs, their difference (b - a) with a 95% interval, discordant counts."""
    n = len(a)
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    diff = (only_b - only_a) / n
    # variance of a difference of paired proportions: (b01 + b10 - (b01 - b10)^2 / n) / n^2
    half = 1.96 * math.sqrt(max(0.0, only_a + only_b - (only_b - only_a) ** 2 / n)) / n
    return {
        "n": n,
        "a": sum(a) / n,
        "b": sum(b) / n,
        "difference": diff,
        "ci95": [diff - half, diff + half],
        "only_a": only_a,
        "only_b": only_b,
        "p_value": mcnemar_p(only_a, only_b),
    }


def compare(a: list[ItemResult], b: list[ItemResult]) -> dict:
    """{mode: {"n", "only_in_a", "only_in_b", "text": paired(...), "speech": paired(...)}}.

    Speech is compared where both runs judged speech (`speech_correct` not None) for the item.
    """
    index_a = {(r.mode, r.id): r for r in a}
    index_b = {(r.mode, r.id): r for r in b}
    modes = [m for m in dict.fromkeys(r.mode for r in a) if any(r.mode == m for r in b)]
    report = {}
    for mode in modes:
        keys_a = {k for k in index_a if k[0] == mode}
        keys_b = {k for k in index_b if k[0] == mode}
        both = sorted(keys_a & keys_b)
        entry: dict = {"n": len(both), "only_in_a": len(keys_a - keys_b), "only_in_b": len(keys_b - keys_a)}
        for name, field in MEASURES:
            pairs = [(getattr(index_a[k], field), getattr(index_b[k], field)) for k in both]
            pairs = [(bool(x), bool(y)) for x, y in pairs if x is not None and y is not None]
            if pairs:
                entry[name] = paired([x for x, _ in pairs], [y for _, y in pairs])
        report[mode] = entry
    return report


def format_comparison(report: dict) -> str:
    lines = [
        "| mode | measure | n | A (%) | B (%) | B - A (points, 95% interval) | only A | only B | p |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for mode, entry in report.items():
        for name, _ in MEASURES:
            if name not in entry:
                continue
            e = entry[name]
            lo, hi = (100 * x for x in e["ci95"])
            lines.append(
                f"| {mode} | {name} | {e['n']} | {100 * e['a']:.1f} | {100 * e['b']:.1f} | "
                f"{100 * e['difference']:+.1f} ({lo:+.1f} to {hi:+.1f}) | {e['only_a']} | {e['only_b']} | "
                f"{e['p_value']:.3g} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m training.eval.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", help="per-item results of run A (training.eval --out)")
    parser.add_argument("b", help="per-item results of run B, the same items")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        report = compare(read_results(args.a), read_results(args.b))
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if not report:
        parser.error("the two files share no mode")
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(format_comparison(report) + "\n")
    return report


if __name__ == "__main__":
    main()
