"""Accuracy broken down by what a test item holds out of training, by the voice that asked, and by
whether the question has a word that no training question has.

A synthetic corpus item says which factors are unseen in training (`heldout`: any of "combo",
"phrasing", "voice"; an empty list when it is a new recording of something trained on) and who
spoke it (`voice`). A single accuracy mixes these; the breakdown shows where a model fails: new
voices (hearing), new phrasings (language understanding) or new operand combinations (reasoning).

    report["modes"]["S2T"]["by_heldout"] = {"none": {"n": 110, "text_accuracy": 0.86}, "voice": ...}

With the training manifest (`training_vocabulary`), items whose question holds a word never seen in a
training question ("a new word": "Many thanks!" where training only said "thank you") are scored
apart from those made of known words (`by_vocabulary`): a model that hears only the words it was
trained on fails the first group from speech while it may still read them as text.

`format_breakdown` renders one markdown table (rows = modes, columns = groups); `plot_breakdown`
draws the same numbers as grouped bars.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from training.eval.scoring import normalize

NOTHING_HELD_OUT = "none"  # the group of items that hold out nothing (a new recording only)
KNOWN_WORDS, NEW_WORD = "known words", "a new word"  # the by_vocabulary groups, in display order


def question_words(text: str) -> set[str]:
    """The words of a question as the scorer normalises them (lower case, numbers spelled out)."""
    return set(normalize(text, numbers="words").split())


def training_vocabulary(manifest: str | Path) -> frozenset[str]:
    """Every word of the questions (`text`, earlier turns included) of a training manifest."""
    from training.data import read_manifest

    words: set[str] = set()
    for item in read_manifest(manifest, check_files=False):  # only the words are needed
        for text in [item.text, *(turn.text for turn in item.history)]:
            if text:
                words |= question_words(text)
    if not words:
        raise ValueError(f"{manifest}: no question text to take a vocabulary from")
    return frozenset(words)


def new_words(text: str | None, vocabulary: frozenset[str] | None) -> tuple[str, ...] | None:
    """The words of `text` missing from `vocabulary`, sorted; None when either is unknown."""
    if text is None or vocabulary is None:
        return None
    return tuple(sorted(question_words(text) - vocabulary))


def heldout_group(heldout: Iterable[str] | None) -> str | None:
    """["voice", "phrasing"] -> "phrasing+voice"; [] -> "none"; None (not recorded) -> None."""
    if heldout is None:
        return None
    factors = sorted(set(heldout))
    return "+".join(factors) if factors else NOTHING_HELD_OUT


def _group_order(name: str) -> tuple[int, str]:
    """ "none" first, then single factors, then pairs, ... (alphabetical within a size)."""
    return (0, "") if name == NOTHING_HELD_OUT else (name.count("+") + 1, name)


def _sorted_groups(names: Iterable[str], key: str) -> list[str]:
    """Display order of the groups of `key` ("heldout": by `_group_order`; "vocabulary": known words
    first; "voice": by name)."""
    if key == "heldout":
        return sorted(names, key=_group_order)
    if key == "vocabulary":
        present = set(names)
        return [g for g in (KNOWN_WORDS, NEW_WORD) if g in present]
    return sorted(names)


def _group_name(result: Any, key: str) -> str | None:
    if key == "heldout":
        return heldout_group(result.heldout)
    if key == "vocabulary":
        return None if result.new_words is None else (NEW_WORD if result.new_words else KNOWN_WORDS)
    if key == "category":
        return result.category or "none"
    return getattr(result, key)


def group_scores(results: Sequence[Any], key: str, speech: bool) -> dict[str, dict[str, Any]]:
    """Accuracy per value of `key` ("heldout", "voice", "vocabulary" or "category") over results that
    carry it.

    Args:
        results: `ItemResult`s of one mode.
        key: what to group by (for "vocabulary", whether `new_words` is empty); results where it is
            unknown (None) are left out, except for "category", where they form the group "none".
        speech: also report speech accuracy (modes that speak).

    Returns:
        {group: {"n", "text_accuracy"[, "speech_accuracy"]}} in display order; {} when no result
        carries the key.
    """
    groups: dict[str, list[Any]] = defaultdict(list)
    for r in results:
        name = _group_name(r, key)
        if name is not None:
            groups[name].append(r)
    out: dict[str, dict[str, Any]] = {}
    for name in _sorted_groups(groups, key):
        rs = groups[name]
        entry: dict[str, Any] = {"n": len(rs), "text_accuracy": sum(r.text_correct for r in rs) / len(rs)}
        if speech:
            entry["speech_accuracy"] = sum(bool(r.speech_correct) for r in rs) / len(rs)
        out[name] = entry
    return out


def _columns(report: dict[str, Any], field: str) -> list[str]:
    names = {g for entry in report["modes"].values() for g in entry.get(field, {})}
    return _sorted_groups(names, field.removeprefix("by_"))


def format_breakdown(report: dict[str, Any], field: str = "by_heldout") -> str:
    """Markdown table of text accuracy (%) per mode (rows) and group (columns, with n); "" if none."""
    columns = _columns(report, field)
    if not columns:
        return ""
    rows = [
        "| mode | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for mode, entry in report["modes"].items():
        groups = entry.get(field, {})
        cells = [
            f"{100.0 * groups[c]['text_accuracy']:.1f} ({groups[c]['n']})" if c in groups else "–"
            for c in columns
        ]
        rows.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_breakdown(report: dict[str, Any], path: str | Path, field: str = "by_heldout") -> Path:
    """Grouped bars: text accuracy per mode, one bar per group; the overall accuracy as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(report, field)
    modes = list(report["modes"])
    if not columns:
        raise ValueError(f"no item of this report carries its {field[3:]} (a synth corpus manifest does)")
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(min(14.0, 4.0 + 0.18 * len(modes) * len(columns)), 4.0))
    for i, column in enumerate(columns):
        xs, ys = [], []
        for m, mode in enumerate(modes):
            group = report["modes"][mode].get(field, {}).get(column)
            if group is not None:
                xs.append(m - 0.4 + width * (i + 0.5))
                ys.append(100.0 * group["text_accuracy"])
        ax.bar(xs, ys, width, label=column)
    overall = [100.0 * (report["modes"][m]["text_accuracy"] or 0.0) for m in modes]
    ax.scatter(range(len(modes)), overall, color="black", marker="_", s=600, zorder=3, label="all items")
    ax.set_xticks(range(len(modes)), modes)
    ax.set_ylim(0, 100)
    ax.set_ylabel("text accuracy (%)")
    ax.set_title(
        "text accuracy by held-out group" if field == "by_heldout" else f"text accuracy by {field[3:]}"
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
