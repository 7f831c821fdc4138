"""Training data: manifests (FORMATS.md), the tokenization step, CoM-Mixing, datasets and batching.

Flow: `read_manifest` -> `python -m training.data.tokenize` (reply speech -> 25 Hz codes, user
speech -> cached log-mels) -> `SpeechTextDataset` (CoM-Mixing variants, paper §3.3) ->
`LengthBucketSampler` + `ExampleCollator` -> `core.sequence.Batch`.
"""

from training.data.collate import (
    ExampleCollator,
    LengthBucketSampler,
    SpeechTextDataset,
    collate_examples,
)
from training.data.com_mixing import (
    ALL_MODES,
    CoMMixingConfig,
    Variant,
    expand,
    make_sample,
    missing_input,
    plan_variants,
    preference_samples,
    select_modes,
)
from training.data.manifest import (
    HistoryEntry,
    ManifestError,
    ManifestItem,
    PreferenceHistoryEntry,
    PreferencePair,
    PreferencePrompt,
    PreferenceResponse,
    read_manifest,
    read_preference_pairs,
    write_manifest,
)
from training.data.mel_cache import MelCache, load_user_mels

# The tokenize step is imported lazily: eager import would make `python -m training.data.tokenize`
# warn that the module was imported before it ran.
_LAZY = {"precompute_mels", "tokenize_manifest", "load_speech_tokenizer"}


def __getattr__(name: str):
    if name in _LAZY:
        from training.data import tokenize

        return getattr(tokenize, name)
    raise AttributeError(f"module 'training.data' has no attribute {name!r}")


__all__ = [
    "ALL_MODES",
    "CoMMixingConfig",
    "ExampleCollator",
    "HistoryEntry",
    "LengthBucketSampler",
    "ManifestError",
    "ManifestItem",
    "MelCache",
    "PreferenceHistoryEntry",
    "PreferencePair",
    "PreferencePrompt",
    "PreferenceResponse",
    "SpeechTextDataset",
    "Variant",
    "collate_examples",
    "expand",
    "load_speech_tokenizer",
    "load_user_mels",
    "make_sample",
    "missing_input",
    "plan_variants",
    "precompute_mels",
    "preference_samples",
    "read_manifest",
    "read_preference_pairs",
    "select_modes",
    "tokenize_manifest",
    "write_manifest",
]
