"""The demo pipeline's data stage (`python -m training.recipes.demo --stop_after prepare`).

`prepare` writes into the work folder: the text tokenizer and the random tiny LLM (new builds only),
the units codec (fitted on the assistant replies of the train split, or copied from
--continue_from), reply tokens and cached user log-mels of every split, and the speech stages'
manifests: `speech_train.tokens.jsonl` (train, + train_extra with --extra_voices, + paraphrases
with --paraphrases),
`ear_train.tokens.jsonl` (--general_speech: those + the general-English sentences, for the encoder
CTC, and with --general_tokenizer, whose BPE learns those sentences too, for the adapter CTC) and
`question_words_train.tokens.jsonl` (--question_words: the speech stages' manifest + the training
questions' words in new orders, for both CTC stages; `ear_train` holds them too).
`with_numeracy` adds --numeracy_items text-only arithmetic items to a manifest (T2T stages),
`with_counterfactual` --counterfactual_items replies whose speech alone is a target (T2M/S2M).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from training.data.counterfactual import SPLIT as COUNTERFACTUAL_SPLIT
from training.data.numeracy import FILE as NUMERACY_FILE
from training.data.paraphrases import SPLIT as PARAPHRASE_SPLIT

if TYPE_CHECKING:
    from training.recipes.demo import DemoConfig

log = logging.getLogger(__name__)

SPEECH_TRAIN = "speech_train.tokens.jsonl"  # train (+ train_extra) (+ paraphrases)
# --general_speech: the speech stages' manifest + general (+ the question words)
EAR_TRAIN = "ear_train.tokens.jsonl"
QUESTION_WORDS_TRAIN = "question_words_train.tokens.jsonl"  # --question_words: the same + question words
NUMERACY_SPLIT = NUMERACY_FILE.removesuffix(".jsonl")  # the corpus's numeracy.jsonl, as a split
NUMERACY_TOKENS = f"{NUMERACY_SPLIT}.tokens.jsonl"  # written by `prepare` when its replies are spoken


def speech_manifest(cfg: DemoConfig, work: Path) -> Path:
    """The speech stages' training manifest (ctc, adapter, align, cocktail): train, + train_extra
    with --extra_voices, + paraphrases with --paraphrases."""
    return work / (SPEECH_TRAIN if cfg.extra_voices or cfg.paraphrases else "train.tokens.jsonl")


def general_manifest(corpus: Path, words: str = "english") -> Path:
    """The corpus's general-English sentences (`training.data.general_speech`), or with `words`
    "questions" its question-word sentences; an error naming the command that writes them when they
    are missing."""
    from training.data.general_speech import SPLITS

    path = corpus / f"{SPLITS[words]}.jsonl"
    if not path.is_file():
        flag, extra = (
            ("--question_words", " --words questions") if words == "questions" else ("--general_speech", "")
        )
        raise FileNotFoundError(
            f"{flag}: {path} is missing; add it with python -m training.data.general_speech "
            f"--corpus {corpus}{extra}"
        )
    return path


def ctc_manifests(cfg: DemoConfig, work: Path) -> tuple[Path, Path]:
    """The training manifests of the encoder CTC and of the adapter CTC stages (written by `prepare`):
    the speech stages' manifest, + the general sentences (--general_speech; the adapter's only with
    --general_tokenizer), + the question-word sentences (--question_words, both)."""
    speech = speech_manifest(cfg, work)
    words = work / QUESTION_WORDS_TRAIN if cfg.question_words else speech
    encoder = work / EAR_TRAIN if cfg.general_speech else words
    return encoder, (work / EAR_TRAIN if cfg.general_tokenizer else words)


def with_numeracy(cfg: DemoConfig, manifest: str) -> str:
    """`manifest` followed by the first --numeracy_items items of the corpus's numeracy.jsonl
    (`training.data.numeracy`: T2T samples; T2M ones too where their replies are spoken, S2T ones
    where their questions are, which `prepare` then tokenised to numeracy.tokens.jsonl beside
    `manifest`), written beside it (audio paths stay relative to the
    same folder); `manifest` itself when --numeracy_items is 0."""
    if not cfg.numeracy_items:
        return manifest
    source = Path(cfg.corpus) / NUMERACY_FILE
    if not source.is_file():
        raise FileNotFoundError(
            f"--numeracy_items: {source} is missing; add it with python -m training.data.numeracy --corpus {cfg.corpus}"
        )
    spoken = Path(manifest).parent / NUMERACY_TOKENS
    source = spoken if spoken.is_file() else source
    lines = [line for line in source.read_text().splitlines() if line.strip()]
    if len(lines) < cfg.numeracy_items:
        raise ValueError(f"--numeracy_items {cfg.numeracy_items}: {source} holds only {len(lines)} items")
    return _joined(manifest, lines[: cfg.numeracy_items], f"numeracy{cfg.numeracy_items}")


def with_counterfactual(cfg: DemoConfig, manifest: str) -> str:
    """`manifest` followed by the first --counterfactual_items items of counterfactual.tokens.jsonl
    (`training.data.counterfactual`, tokenised by `prepare` beside `manifest`), written beside it;
    `manifest` itself when --counterfactual_items is 0."""
    if not cfg.counterfactual_items:
        return manifest
    base = Path(manifest)
    lines = [x for x in (base.parent / f"{COUNTERFACTUAL_SPLIT}.tokens.jsonl").read_text().splitlines() if x]
    if len(lines) < cfg.counterfactual_items:
        raise ValueError(f"--counterfactual_items {cfg.counterfactual_items}: only {len(lines)} items")
    return _joined(manifest, lines[: cfg.counterfactual_items], f"counterfactual{cfg.counterfactual_items}")


def _joined(manifest: str, lines: list[str], tag: str) -> str:
    """`manifest` followed by `lines`, written beside it as <name>.<tag>.jsonl (audio paths stay
    relative to the same folder)."""
    base = Path(manifest)
    text = base.read_text()
    out = base.with_name(f"{base.name.removesuffix('.jsonl')}.{tag}.jsonl")
    out.write_text(text + ("" if not text or text.endswith("\n") else "\n") + "\n".join(lines) + "\n")
    return str(out)


def _rendered_numeracy(corpus: Path) -> bool:
    """Whether the corpus's numeracy items have audio: their replies spoken (`training.data.numeracy
    --speak`) or their questions (`--ask`)."""
    import json

    source = corpus / NUMERACY_FILE
    if not source.is_file():
        return False
    with source.open() as f:
        first = f.readline()
    item = json.loads(first) if first.strip() else {}
    return bool(item.get("reply_audio") or item.get("audio"))


def refit_decoder(cfg: DemoConfig, corpus: Path, codec_dir: Path) -> None:
    """--codec_assistant_speech: a wider decoder trained on the train replies (each round(sqrt(n)) times
    for the n training items saying it) and the assistant-voice general sentences (once; `refit.json`
    in the codec folder records it). Units are unchanged, so the reply tokens (and a --continue_from
    model) stay valid."""
    import json

    from core.codec.units import UnitsCodec
    from core.codec.units_cli import read_manifest_audio
    from training.data.assistant_speech import SPLIT as ASSISTANT_SPLIT

    marker = codec_dir / "refit.json"
    if marker.is_file():
        return
    extra = corpus / f"{ASSISTANT_SPLIT}.jsonl"
    if not extra.is_file():
        raise FileNotFoundError(
            f"--codec_assistant_speech: {corpus / ASSISTANT_SPLIT}.jsonl is missing; add it with "
            f"python -m training.data.assistant_speech --corpus {corpus}"
        )
    replies = read_manifest_audio(corpus / "train.jsonl", repeat="sqrt")  # small talk weighs more
    waves = replies + read_manifest_audio(extra, key="audio")
    log.info("refitting the codec's decoder on %d assistant-voice recordings", len(waves))
    codec = UnitsCodec.load(codec_dir)
    codec.refit_decoder(waves, cfg.codec_refit_steps, seed=cfg.seed, progress=True)
    codec.save(codec_dir)
    marker.write_text(json.dumps({"recordings": len(waves), "steps": cfg.codec_refit_steps}) + "\n")


def _require(corpus: Path, split: str, flag: str, how: str) -> None:
    """FileNotFoundError naming `flag` and `how` to make the file when the corpus has no <split>.jsonl."""
    if not (corpus / f"{split}.jsonl").is_file():
        raise FileNotFoundError(f"{flag}: {corpus / split}.jsonl is missing; {how}")


def prepare(cfg: DemoConfig, work: Path) -> None:
    from transformers import AutoModelForCausalLM

    from core.codec.units import UnitsCodec
    from core.config import qwen2_config_dict
    from core.modes import MODES
    from core.srh import build_transformers_config
    from core.text_tokenizer import train_bpe_tokenizer
    from training.data import MelCache, read_manifest, write_manifest
    from training.data.general_speech import QUESTION_WORDS_SPLIT
    from training.data.general_speech import SPLIT as GENERAL_SPLIT
    from training.data.synth_plan import EXTRA_SPLIT
    from training.data.tokenize import precompute_mels, tokenize_manifest

    corpus = Path(cfg.corpus)
    train = read_manifest(corpus / "train.jsonl")
    llm_dir = work / "tiny_llm"
    if not cfg.continue_from and not (llm_dir / "config.json").is_file():
        texts = [t for item in train for t in (item.text or "", item.reply_text)]
        texts += [m.system_prompt for m in MODES.values()] * 20
        if cfg.general_tokenizer:  # the BPE learns the general words too, so the adapter CTC fits them
            texts += [item.text for item in read_manifest(general_manifest(corpus)) if item.text]
        tokenizer = train_bpe_tokenizer(texts, cfg.text_vocab_size)
        hf = build_transformers_config(
            qwen2_config_dict(
                len(tokenizer), cfg.llm_hidden, cfg.llm_layers, cfg.llm_heads, max_positions=4096
            )
        )
        torch.manual_seed(cfg.seed)
        AutoModelForCausalLM.from_config(hf).save_pretrained(llm_dir)
        tokenizer.save_pretrained(llm_dir)
    codec_dir = work / "codec"
    if cfg.continue_from and not (codec_dir / "units_codec.json").is_file():
        source = Path(cfg.continue_from) / "codec"
        if not (source / "units_codec.json").is_file():
            raise FileNotFoundError(f"--continue_from {cfg.continue_from} holds no units codec ({source})")
        shutil.copytree(source, codec_dir)  # the checkpoint's own units: its SRH was trained on them
    if not (codec_dir / "units_codec.json").is_file():
        from core.audio import load_audio

        replies = sorted({item.reply_audio for item in train if item.reply_audio})
        waves = [load_audio(p, min_seconds=0.0, silence_threshold_dbfs=None) for p in replies]
        log.info("fitting the units codec on %d assistant replies", len(waves))
        codec = UnitsCodec.fit(
            waves, cfg.num_units, seed=cfg.seed, decoder_steps=cfg.codec_decoder_steps, progress=True
        )
        codec.save(codec_dir)
    if cfg.codec_assistant_speech:
        refit_decoder(cfg, corpus, codec_dir)
    codec = UnitsCodec.load(codec_dir)
    cache = MelCache(work / "mels", 80)
    splits = ["train", "validation", "test", "multiturn"]
    if cfg.extra_voices:
        _require(
            corpus,
            EXTRA_SPLIT,
            "--extra_voices",
            "build the corpus with python -m training.data.synth "
            "--extra-voice-copies 1 (existing files are kept)",
        )
        splits.append(EXTRA_SPLIT)
    if cfg.paraphrases:
        _require(
            corpus,
            PARAPHRASE_SPLIT,
            "--paraphrases",
            f"add it with python -m training.data.paraphrases --corpus {corpus}",
        )
        splits.append(PARAPHRASE_SPLIT)
    if cfg.general_speech:
        general_manifest(corpus)
        splits.append(GENERAL_SPLIT)
    if cfg.question_words:
        general_manifest(corpus, "questions")
        splits.append(QUESTION_WORDS_SPLIT)
    if cfg.numeracy_items and _rendered_numeracy(corpus):
        splits.append(NUMERACY_SPLIT)  # numeracy --speak / --ask: reply tokens (T2M), question mels (S2T)
    if cfg.counterfactual_items:
        _require(
            corpus,
            COUNTERFACTUAL_SPLIT,
            "--counterfactual_items",
            f"add it with python -m training.data.counterfactual --corpus {corpus}",
        )
        splits.append(COUNTERFACTUAL_SPLIT)
    for split in splits:
        target = work / f"{split}.tokens.jsonl"
        if target.is_file():
            continue
        items = tokenize_manifest(read_manifest(corpus / f"{split}.jsonl"), codec, progress=True)
        precompute_mels(items, cache, progress=True)
        write_manifest(items, target)
    if cfg.extra_voices or cfg.paraphrases:  # the speech stages' manifest: train, then the extra items
        names = ["train"] + [EXTRA_SPLIT] * cfg.extra_voices + [PARAPHRASE_SPLIT] * cfg.paraphrases
        (work / SPEECH_TRAIN).write_text("".join((work / f"{s}.tokens.jsonl").read_text() for s in names))
    words = [work / f"{QUESTION_WORDS_SPLIT}.tokens.jsonl"] if cfg.question_words else []
    if cfg.question_words:  # the ear's CTC manifest: the speech stages' items, then the question words
        (work / QUESTION_WORDS_TRAIN).write_text(
            "".join(p.read_text() for p in [speech_manifest(cfg, work), *words])
        )
    if cfg.general_speech:  # the same with the general speech between them
        parts = [speech_manifest(cfg, work), work / f"{GENERAL_SPLIT}.tokens.jsonl", *words]
        (work / EAR_TRAIN).write_text("".join(p.read_text() for p in parts))
