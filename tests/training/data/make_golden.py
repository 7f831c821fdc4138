"""Golden CoM-Mixing layouts: one speech-to-speech item -> the seven variants of Table 1.

`test_com_mixing.py` compares `golden_records()` with the JSON files in `golden/`. Regenerate them
ONLY when the sequence layout deliberately changes (core/sequence.py, core/modes.py, CoM-Mixing),
then review the diff of golden/ like code:

    .venv/bin/python tests/training/data/make_golden.py

Each file stores, for one mode: the system prompt, the decoded input tokens, the decoded text
targets (positions with a target, in order), the speech target groups and the positions that
carry a loss.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core.config import small_config  # noqa: E402
from core.modes import MODE_NAMES  # noqa: E402
from core.sequence import IGNORE, SequenceBuilder  # noqa: E402
from core.text_tokenizer import SpecialTokenIds, train_bpe_tokenizer  # noqa: E402
from training.data.com_mixing import expand  # noqa: E402
from training.data.manifest import ManifestItem  # noqa: E402

GOLDEN_DIR = HERE / "golden"
SPEECH_VOCAB = 40  # speech codes 0..39; bos 40, eos 41, pad 42
CORPUS = [
    "hello there, how can I help you today?",
    "what is three plus four? three plus four is seven.",
    "the capital of france is paris.",
    "thank you, goodbye!",
] * 4
USER_AUDIO = Path("/golden/user.wav")  # never read: the features come from `fake_mels`


def make_tokenizer():
    return train_bpe_tokenizer(CORPUS, vocab_size=320)


def make_builder(tokenizer, **overrides) -> SequenceBuilder:
    ids = SpecialTokenIds.from_tokenizer(tokenizer).to_dict()
    config = small_config(
        ids,
        len(tokenizer),
        SPEECH_VOCAB,
        llm_hidden=32,
        llm_layers=1,
        llm_heads=2,
        srh_hidden=32,
        srh_layers=1,
        srh_heads=2,
        encoder_state=32,
        encoder_layers=1,
        **overrides,
    )
    return SequenceBuilder(config, tokenizer)


def fake_mels(path: Path) -> torch.Tensor:
    """1.2 s of log-mel-like features (80, 120): 60 encoder frames -> 6 <|AUDIO|> positions."""
    return torch.linspace(-1.0, 1.0, 80 * 120).reshape(80, 120)


def golden_item() -> ManifestItem:
    return ManifestItem(
        id="golden-0",
        text="what is three plus four?",
        audio=USER_AUDIO,
        reply_text="three plus four is seven.",
        reply_tokens=[(7 * i + 3) % SPEECH_VOCAB for i in range(48)],  # 48 codes + eos = 10 groups of 5
    )


def golden_records(tokenizer, builder: SequenceBuilder) -> dict[str, dict]:
    """mode -> the layout record of that variant of `golden_item()`."""
    records = {}
    for sample in expand(golden_item(), audio_features=fake_mels):
        example = builder.example(sample)
        has_target = (example.text_targets != IGNORE) | (example.speech_targets != IGNORE).any(-1)
        positions = has_target.nonzero().flatten().tolist()
        text_targets = example.text_targets[example.text_targets != IGNORE].tolist()
        speech_rows = (example.speech_targets != IGNORE).any(-1)
        records[sample.mode] = {
            "mode": sample.mode,
            "system_prompt": sample.system_prompt or builder_mode_prompt(sample.mode),
            "input_text": tokenizer.decode(example.input_ids.tolist(), skip_special_tokens=False),
            "text_targets": tokenizer.decode(text_targets, skip_special_tokens=False),
            "speech_targets": example.speech_targets[speech_rows].tolist(),
            "speech_inputs": example.speech_inputs[example.speech_input_mask].tolist(),
            "num_positions": len(example),
            "target_positions": [positions[0], positions[-1]] if positions else [],
            "num_mels": len(example.mels),
        }
    return records


def builder_mode_prompt(mode: str) -> str:
    from core.modes import get_mode

    return get_mode(mode).system_prompt


def dump_record(record: dict) -> str:
    """JSON with one field per line (readable diffs when the layout changes)."""
    fields = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in record.items()]
    return "{\n" + ",\n".join(fields) + "\n}\n"


def main() -> None:
    tokenizer = make_tokenizer()
    records = golden_records(tokenizer, make_builder(tokenizer))
    assert list(records) == list(MODE_NAMES), records.keys()
    GOLDEN_DIR.mkdir(exist_ok=True)
    for mode, record in records.items():
        path = GOLDEN_DIR / f"com_mixing_{mode}.json"
        path.write_text(dump_record(record), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
