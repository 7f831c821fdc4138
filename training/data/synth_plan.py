"""Split planning of the synthetic spoken-QA corpus (pure: nothing is rendered or written).

Decides, deterministically from the seed, which phrasings, operand combos and voices each split may
use, and produces every manifest record (`plan_corpus`); `training.data.synth` renders and writes
them. The split rules are described in that module's docstring.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.data.qa_domain import (
    CONVERSATION_KINDS,
    INTENTS,
    INTENTS_BY_NAME,
    Intent,
    combo_key,
    conversation,
    render,
)
from training.data.tts import ASSISTANT_VOICE, EXTRA_VOICE_SETS, USER_VOICES

SPLITS = ("train", "validation", "test")
EXTRA_SPLIT = "train_extra"  # more training voices (SynthConfig.extra_voice_copies); never evaluated
SIZES = {  # preset: (train items per intent, validation/test items per intent, train conversations)
    "small": (40, 8, 20),
    "full": (400, 40, 200),
}


@dataclass(frozen=True)
class SynthConfig:
    """What to build (the CLI flags of `python -m training.data.synth` set most fields)."""

    out: str  # output folder
    seed: int = 0  # everything random (held-outs, sampling, prosody) derives from it
    per_intent: int = 40  # training items per intent
    eval_per_intent: int = 8  # validation items and test items per intent (each)
    multiturn: int = 20  # training conversations (validation/test get a tenth each, at least 2)
    heldout_voices: tuple[str, ...] = ("flite-rms", "espeak-en-us+f4")  # validation/test only
    heldout_combo_fraction: float = 0.12  # of combos of arithmetic/number intents, kept from train
    rate_range: tuple[float, float] = (0.85, 1.2)  # user speaking-rate factor, uniform
    pitch_range: tuple[float, float] = (0.88, 1.12)  # user pitch factor, uniform
    peak_range: tuple[float, float] = (0.35, 0.95)  # user peak level after normalisation, uniform
    extra_voice_copies: int = 0  # extra renderings of each train item by the extra voices (train_extra)
    # which extra voices (tts.EXTRA_VOICE_SETS), comma-separated: espeak, festival, vocoded; each set
    # renders extra_voice_copies copies of every train item
    extra_voices: str = "espeak"
    workers: int = 2  # parallel TTS processes
    limit: int | None = None  # keep only the first N items (and conversations) of each split

    def __post_init__(self) -> None:
        user_voices = {v.name for v in USER_VOICES}
        unknown = [v for v in self.heldout_voices if v not in user_voices]
        if unknown:
            names = ", ".join(v.name for v in USER_VOICES)
            raise ValueError(f"--heldout-voices: unknown user voice(s) {unknown}; choose from {names}")
        if len(self.heldout_voices) >= len(USER_VOICES):
            raise ValueError("--heldout-voices must leave at least one voice for training")
        if self.per_intent < 1 or self.eval_per_intent < 1:
            raise ValueError("--per-intent and --eval-per-intent must be >= 1")
        if not 0.0 < self.heldout_combo_fraction < 0.5:
            raise ValueError("--heldout-combo-fraction must be in (0, 0.5)")
        if self.extra_voice_copies < 0:
            raise ValueError("--extra-voice-copies must be >= 0")
        sets = self.extra_voice_sets
        if not sets or any(s not in EXTRA_VOICE_SETS for s in sets) or len(set(sets)) < len(sets):
            raise ValueError(
                f"--extra-voices must name distinct sets of {sorted(EXTRA_VOICE_SETS)}, comma-separated, "
                f"got {self.extra_voices!r}"
            )
        if self.workers < 1:
            raise ValueError("--workers must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be >= 1")

    @property
    def extra_voice_sets(self) -> list[str]:
        """The names of --extra-voices, in order."""
        return [name.strip() for name in self.extra_voices.split(",") if name.strip()]


# ----------------------------------------------------------------------------------- planning


@dataclass
class SplitPlan:
    """Which phrasings, combos and voices each split may use."""

    heldout_phrasing: dict[str, int]  # intent -> template index never used in train
    combos: dict[str, dict[str, list[tuple]]]  # intent -> split -> allowed operand tuples
    voices: dict[str, list[str]]  # "train" / "heldout" -> voice names

    def phrasings(self, intent: Intent, split: str) -> list[int]:
        held = self.heldout_phrasing[intent.name]
        indices = range(len(intent.phrasings))
        return [p for p in indices if p != held] if split == "train" else list(indices)


def plan_splits(config: SynthConfig) -> SplitPlan:
    """Draws the held-out phrasings and combos (deterministic given `config.seed`)."""
    heldout_phrasing, combos = {}, {}
    for intent in INTENTS:
        rng = random.Random(f"{config.seed}:phrasing:{intent.name}")
        heldout_phrasing[intent.name] = rng.randrange(len(intent.phrasings))
        every = list(intent.combos)
        if not intent.holdout_combos:
            combos[intent.name] = dict.fromkeys(SPLITS, every)
            continue
        # the two number intents share one draw (same seed string, same key list)
        rng = random.Random(
            f"{config.seed}:combos:{intent.category if intent.category == 'number' else intent.name}"
        )
        keys = sorted({combo_key(intent, c) for c in every})
        rng.shuffle(keys)
        n_held = max(2, round(config.heldout_combo_fraction * len(keys)))
        val_keys, test_keys = set(keys[: n_held // 2]), set(keys[n_held // 2 : n_held])
        combos[intent.name] = {
            "train": [c for c in every if combo_key(intent, c) not in val_keys | test_keys],
            "validation": [c for c in every if combo_key(intent, c) in val_keys],
            "test": [c for c in every if combo_key(intent, c) in test_keys],
        }
    heldout = list(config.heldout_voices)
    voices = {"train": [v.name for v in USER_VOICES if v.name not in heldout], "heldout": heldout}
    return SplitPlan(heldout_phrasing, combos, voices)


def _balanced(rng: random.Random, pool: Sequence) -> Iterator:
    """Endless draws that use every element once per pass, in a fresh random order each pass."""
    pool = list(pool)
    while True:
        order = pool[:]
        rng.shuffle(order)
        yield from order


def _digest(*parts) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()


def reply_audio_path(reply_text: str) -> str:
    """Replies are one fixed voice without variation: one file per distinct reply text."""
    return f"replies/{_digest(ASSISTANT_VOICE.name, reply_text)[:16]}.wav"


def _user_audio_path(split: str, item_id: str, text: str, voice: str, prosody: dict) -> str:
    tag = _digest(voice, prosody["rate"], prosody["pitch"], prosody["peak"], text)[:8]
    return f"audio/{split}/{item_id}_{tag}.wav"


def prosody_config(corpus: str | Path, summary: dict) -> SynthConfig:
    """A SynthConfig with the rate / pitch / peak ranges a built corpus was made with (its corpus.json
    `summary`), for rendering more user speech in the same ranges."""
    ranges = {k: tuple(v) for k, v in summary["config"].items() if k.endswith("_range")}
    return SynthConfig(out=str(corpus), **ranges)


def _prosody(rng: random.Random, config: SynthConfig) -> dict:
    return {
        "rate": round(rng.uniform(*config.rate_range), 3),
        "pitch": round(rng.uniform(*config.pitch_range), 3),
        "peak": round(rng.uniform(*config.peak_range), 3),
    }


def _split_items(config: SynthConfig, plan: SplitPlan, split: str) -> list[dict]:
    n_items = config.per_intent if split == "train" else config.eval_per_intent
    per_intent = []
    for intent in INTENTS:
        rng = random.Random(f"{config.seed}:items:{split}:{intent.name}")
        combos = _balanced(rng, plan.combos[intent.name][split])
        held_p = plan.heldout_phrasing[intent.name]
        train_p = _balanced(rng, plan.phrasings(intent, "train"))
        train_v = _balanced(rng, plan.voices["train"])
        held_v = _balanced(rng, plan.voices["heldout"])
        items = []
        for i in range(n_items):
            operands = next(combos)
            if split == "train":
                phrasing, voice = next(train_p), next(train_v)
            else:  # alternate the factors: (train, train), (held, train), (train, held), (held, held)
                phrasing = held_p if i % 2 else next(train_p)
                voice = next(held_v) if (i // 2) % 2 else next(train_v)
            qa = render(intent, phrasing, operands)
            item_id = f"{split}-{intent.name}-{i:05d}"
            prosody = _prosody(rng, config)
            heldout = []
            if split != "train":
                if intent.holdout_combos:
                    heldout.append("combo")
                if phrasing == held_p:
                    heldout.append("phrasing")
                if voice in plan.voices["heldout"]:
                    heldout.append("voice")
            items.append(
                {
                    "id": item_id,
                    "text": qa.question,
                    "audio": _user_audio_path(split, item_id, qa.question, voice, prosody),
                    "reply_text": qa.reply,
                    "reply_audio": reply_audio_path(qa.reply),
                    "reply_tokens": None,
                    "system": None,
                    "history": [],
                    "answers": list(qa.answers),
                    "category": intent.category,
                    "voice": voice,
                    "intent": intent.name,
                    "phrasing": f"{intent.name}.{phrasing}",
                    "operands": list(operands),
                    "heldout": heldout,
                    "prosody": prosody,
                }
            )
        per_intent.append(items)
    # round-robin over intents, so any prefix (--limit) covers many intents
    return [items[i] for i in range(n_items) for items in per_intent]


def _conversations(config: SynthConfig, plan: SplitPlan, split: str) -> list[dict]:
    count = config.multiturn if split == "train" else max(2, config.multiturn // 10)
    rng = random.Random(f"{config.seed}:multiturn:{split}")
    voices = plan.voices["train"] + (plan.voices["heldout"] if split != "train" else [])
    records = []
    for c in range(count):
        kind = CONVERSATION_KINDS[c % len(CONVERSATION_KINDS)]
        turns = conversation(
            kind,
            rng,
            lambda intent: plan.phrasings(intent, split),
            # training conversations keep out held-out combos; evaluation ones may use any combo
            lambda intent: plan.combos[intent.name]["train"] if split == "train" else list(intent.combos),
        )
        voice = rng.choice(voices)
        conv_id = f"mt-{split}-{c:04d}"
        rendered = []
        for t, turn in enumerate(turns):
            prosody = _prosody(rng, config)
            rendered.append(
                {
                    "text": turn.question,
                    "audio": _user_audio_path(split, f"{conv_id}-t{t}", turn.question, voice, prosody),
                    "reply_text": turn.reply,
                    "reply_audio": reply_audio_path(turn.reply),
                    "prosody": prosody,
                    "turn": turn,
                }
            )
        last = rendered[-1]
        intent = INTENTS_BY_NAME[last["turn"].intent]
        records.append(
            {
                "id": conv_id,
                "split": split,
                "text": last["text"],
                "audio": last["audio"],
                "reply_text": last["reply_text"],
                "reply_audio": last["reply_audio"],
                "reply_tokens": None,
                "system": None,
                "history": [
                    {
                        **{k: r[k] for k in ("text", "audio", "reply_text", "reply_audio")},
                        "intent": r["turn"].intent,
                        "phrasing": r["turn"].phrasing,
                        "operands": list(r["turn"].operands),
                    }
                    for r in rendered[:-1]
                ],
                "answers": list(last["turn"].answers),
                "category": intent.category,
                "voice": voice,
                "intent": intent.name,
                "phrasing": last["turn"].phrasing,
                "operands": list(last["turn"].operands),
                "kind": kind,
                "prosody": last["prosody"],
                "history_prosody": [r["prosody"] for r in rendered[:-1]],
            }
        )
    return records


@dataclass
class CorpusPlan:
    """Everything to write, before any audio is rendered."""

    plan: SplitPlan
    splits: dict[str, list[dict]] = field(default_factory=dict)  # split -> manifest records
    multiturn: list[dict] = field(default_factory=list)


def plan_corpus(config: SynthConfig) -> CorpusPlan:
    """The manifests of the corpus (pure: no files are touched)."""
    plan = plan_splits(config)
    corpus = CorpusPlan(plan)
    for split in SPLITS:
        items = _split_items(config, plan, split)
        conversations = _conversations(config, plan, split)
        if config.limit is not None:
            items, conversations = items[: config.limit], conversations[: config.limit]
        corpus.splits[split] = items
        corpus.multiturn.extend(conversations)
    if config.extra_voice_copies:
        corpus.splits[EXTRA_SPLIT] = _extra_train_items(config, corpus.splits["train"])
    return corpus


def _extra_train_items(config: SynthConfig, train: list[dict]) -> list[dict]:
    """`extra_voice_copies` more renderings of every train item per set of `extra_voices`, each by
    one of the set's voices with its own prosody; ids `<train id>-x<copy>` for the first set and
    `<train id>-x<copy>.<set>` for the others (each set draws from its own random stream, so the
    first set's renderings stay the same when sets are added), otherwise the item unchanged."""
    items = []
    for n, name in enumerate(config.extra_voice_sets):
        rng = random.Random(f"{config.seed}:items:{EXTRA_SPLIT}" + (f":{name}" if n else ""))
        voices = _balanced(rng, [v.name for v in EXTRA_VOICE_SETS[name]])
        for copy in range(1, config.extra_voice_copies + 1):
            for item in train:
                item_id = f"{item['id']}-x{copy}" + (f".{name}" if n else "")
                voice, prosody = next(voices), _prosody(rng, config)
                audio = _user_audio_path(EXTRA_SPLIT, item_id, item["text"], voice, prosody)
                items.append({**item, "id": item_id, "audio": audio, "voice": voice, "prosody": prosody})
    return items
