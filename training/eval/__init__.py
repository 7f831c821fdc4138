"""Evaluation: spoken-QA accuracy per interaction mode (paper Table 4), ASR-WER and speed.

    python -m training.eval --checkpoint DIR --manifest test.jsonl --modes S2M,T2T --json --out items.jsonl

`scoring` holds the text normalisation, answer matching and WER; `asr` the pocketsphinx judge;
`harness` runs a checkpoint over a manifest and summarises; `compare` pits two runs' per-item results
against each other (paired differences, McNemar).
"""

from training.eval.harness import (
    ALL_MODES,
    EvalItem,
    EvalRun,
    Evaluator,
    ItemResult,
    evaluate,
    format_table,
    read_eval_manifest,
    summarize,
    write_results,
)
from training.eval.scoring import contains_answer, normalize, number_to_words, wer, word_errors

__all__ = [
    "ALL_MODES",
    "EvalItem",
    "EvalRun",
    "Evaluator",
    "ItemResult",
    "contains_answer",
    "evaluate",
    "format_table",
    "normalize",
    "number_to_words",
    "read_eval_manifest",
    "summarize",
    "wer",
    "word_errors",
    "write_results",
]
