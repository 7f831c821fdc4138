"""CoM-Mixing (paper §3.3, Table 1, Table 5): one item -> seven variants, checked against golden files.

The golden files hold the decoded layouts; regenerate them only when the layout deliberately
changes (`python tests/training/data/make_golden.py`, see its docstring).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace

import pytest
import torch

from core.modes import MODE_NAMES
from core.sequence import IGNORE
from tests.training.data.make_golden import GOLDEN_DIR, fake_mels, golden_item, golden_records
from training.data.com_mixing import CoMMixingConfig, expand, plan_variants, select_modes
from training.data.manifest import HistoryEntry

# Table 5 of the paper, verbatim (independent of core/modes.py).
TABLE_5 = {
    "S2M": "You are a helpful assistant and asked to generate both text and speech tokens at the same time.",
    "S2T": "You are a helpful assistant and asked to generate text tokens.",
    "STC": "You are a helpful assistant. Let’s think step by step. Convert speech to text if the query is "
    "speech, think of an appropriate text response, and then convert the response back to both text and "
    "speech tokens at the same time.",
    "SAC": "You are a helpful assistant. Let’s think step by step. Think of an appropriate text response, and "
    "then convert the response back to both text and speech tokens at the same time.",
    "SUC": "You are a helpful assistant. Let’s think step by step. Convert speech to text if the query is "
    "speech, and then think of both appropriate text and speech responses at the same time.",
}
TABLE_5["T2M"], TABLE_5["T2T"] = TABLE_5["S2M"], TABLE_5["S2T"]


def test_seven_variants_match_golden_files(tokenizer, builder):
    records = golden_records(tokenizer, builder)
    assert list(records) == list(MODE_NAMES)
    assert sorted(p.name for p in GOLDEN_DIR.glob("com_mixing_*.json")) == sorted(
        f"com_mixing_{m}.json" for m in MODE_NAMES
    )
    for mode, record in records.items():
        golden = json.loads((GOLDEN_DIR / f"com_mixing_{mode}.json").read_text(encoding="utf-8"))
        assert record == golden, f"{mode} layout changed; see make_golden.py if deliberate"


def test_golden_layouts_follow_table_1_and_table_5():
    """Hand-checkable facts of the golden files (so a bad regeneration cannot slip through)."""
    reply, question = "three plus four is seven.", "what is three plus four?"
    chain = {"STC": f"{question}\n{reply}", "SAC": reply, "SUC": question}
    for mode in MODE_NAMES:
        g = json.loads((GOLDEN_DIR / f"com_mixing_{mode}.json").read_text(encoding="utf-8"))
        assert g["system_prompt"] == TABLE_5[mode]
        assert g["input_text"].startswith(
            f"<|im_start|>system\n{TABLE_5[mode]}<|im_end|>\n<|im_start|>user\n"
        )
        user_turn = g["input_text"].split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
        if mode.startswith("T"):
            assert user_turn == question and g["num_mels"] == 0
        else:  # 120 mel frames -> 60 encoder frames -> 6 positions at 5 Hz
            assert user_turn == "<|AUDIO|>" * 6 and g["num_mels"] == 1
        if mode in ("S2T", "T2T"):
            assert g["text_targets"] == reply + "<|im_end|>" and g["speech_targets"] == []
        else:
            prefix = chain[mode] + "<|audio_bos|>" if mode in chain else ""
            assert g["text_targets"].startswith(prefix + reply + "<|im_end|>")
            codes = [c for group in g["speech_targets"] for c in group]
            assert codes == golden_item().reply_tokens + [41, 42]  # + eos, then pad to a full group
            assert g["speech_inputs"] == g["speech_targets"][:-1]  # eq. (1): group i is fed at step i+1


def test_variants_inputs_and_targets():
    item = golden_item()
    samples = {s.mode: s for s in expand(item, audio_features=fake_mels)}
    assert list(samples) == list(MODE_NAMES)
    for mode, s in samples.items():
        speech_in = mode[0] == "S"
        assert (s.user.mels is not None) == speech_in
        assert s.user.text == (None if speech_in else item.text)
        assert s.reply_text == item.reply_text
        assert s.reply_speech == ([] if mode in ("S2T", "T2T") else item.reply_tokens)
        assert s.system_prompt is None  # SequenceBuilder writes the mode's prompt
    assert (samples["STC"].transcript, samples["STC"].draft) == (item.text, item.reply_text)
    assert (samples["SAC"].transcript, samples["SAC"].draft) == ("", item.reply_text)
    assert (samples["SUC"].transcript, samples["SUC"].draft) == (item.text, None)


def test_system_override(tokenizer, builder):
    item = replace(golden_item(), system="Answer briefly.")
    for sample in expand(item, audio_features=fake_mels):
        assert sample.system_prompt == "Answer briefly."
        text = tokenizer.decode(builder.example(sample).input_ids.tolist(), skip_special_tokens=False)
        assert text.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>")


def test_missing_inputs_skip_modes_and_are_counted():
    item = golden_item()
    skipped = Counter()
    no_audio = replace(item, audio=None)
    no_tokens = replace(item, reply_tokens=None)
    no_text = replace(item, text=None)
    assert select_modes(no_audio, skipped=skipped) == ["T2M", "T2T"]
    assert select_modes(no_tokens, skipped=skipped) == ["S2T", "T2T"]
    assert select_modes(no_text, skipped=skipped) == ["S2M", "S2T", "SAC"]
    assert skipped == Counter(
        {
            **{(m, "no user audio"): 1 for m in ("S2M", "S2T", "STC", "SAC", "SUC")},
            **{(m, "no reply tokens"): 1 for m in ("S2M", "T2M", "STC", "SAC", "SUC")},
            **{(m, "no user text"): 1 for m in ("T2M", "T2T", "STC", "SUC")},
        }
    )
    with pytest.raises(ValueError, match="audio_features"):
        expand(item)  # speech modes need features


def test_ratios_sample_modes_by_weight():
    items = [replace(golden_item(), id=f"q{i}") for i in range(2000)]
    config = CoMMixingConfig(ratios={"S2M": 3, "T2T": 1, "STC": 0})
    plan = plan_variants(items, config)
    assert len(plan) == len(items)  # one variant per item
    counts = Counter(v.mode for v in plan)
    assert set(counts) == {"S2M", "T2T"}
    assert abs(counts["S2M"] / len(plan) - 0.75) < 0.04
    assert plan == plan_variants(items, config)  # deterministic given the seed
    assert plan != plan_variants(items, replace(config, seed=1))
    two = plan_variants(
        items[:50], CoMMixingConfig(ratios={"S2M": 1, "T2T": 1, "SAC": 1}, variants_per_item=2)
    )
    assert all(n == 2 for n in Counter(v.item_index for v in two).values())  # distinct modes per item
    assert len(set(two)) == len(two)
    drawn = select_modes(golden_item(), ratios={"SUC": 1.0}, rng=random.Random(0))
    assert drawn == ["SUC"]


def test_config_validation():
    with pytest.raises(ValueError, match="unknown mode"):
        CoMMixingConfig(modes=("S2M", "X2Y"))
    with pytest.raises(ValueError, match="no positive weight"):
        CoMMixingConfig(modes=("S2M",), ratios={"T2T": 1.0})
    with pytest.raises(ValueError, match="variants_per_item"):
        CoMMixingConfig(variants_per_item=0)
    assert CoMMixingConfig(modes=("s2m",)).modes == ("S2M",)


def test_speech_without_a_reply_makes_transcript_only_chain_samples(tokenizer, builder):
    """A reply-less item (question-word speech) trains the chain phase's transcript and nothing else."""
    item = replace(golden_item(), reply_text="", reply_tokens=None)
    skipped = Counter()
    assert select_modes(item, skipped=skipped) == ["STC", "SUC"]
    assert set(skipped) == {
        (m, "no reply (transcript-only: STC, SUC)") for m in ("S2M", "S2T", "T2M", "T2T", "SAC")
    }
    full = {s.mode: builder.example(s) for s in expand(golden_item(), audio_features=fake_mels)}
    transcript = tokenizer.encode(item.text, add_special_tokens=False)
    for sample in expand(item, audio_features=fake_mels):
        assert sample.transcript_only and sample.transcript == item.text
        example = builder.example(sample)
        prompt = len(builder.prompt(sample.mode, sample.user, sample.history, sample.system_prompt))
        assert example.text_targets[example.text_targets != IGNORE].tolist() == transcript
        assert (example.speech_targets == IGNORE).all() and len(example) == prompt + len(transcript) - 1
        # the same positions and targets as the start of the chain phase of the item with its reply
        reference = full[sample.mode]
        assert torch.equal(example.input_ids, reference.input_ids[: len(example)])
        assert torch.equal(example.text_targets, reference.text_targets[: len(example)])
    assert not any(s.transcript_only for s in expand(golden_item(), audio_features=fake_mels))


def test_loss_only_on_the_assistant_turn(tokenizer, builder):
    """Targets are IGNORE on the system prompt, the user turn and history (incl. the earlier reply)."""
    item = replace(
        golden_item(),
        history=[HistoryEntry(reply_text="hello there!", text="hello", audio=None)],
    )
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    for sample in expand(item, audio_features=fake_mels):
        example = builder.example(sample)
        ids = example.input_ids.tolist()
        starts = [i for i in range(len(ids)) if ids[i : i + len(header)] == header]
        assert len(starts) == 2  # history reply + the trained turn
        # the prompt (everything the generator is given) carries no loss; its last position
        # predicts the first reply token, and every later position predicts something
        prompt_length = len(builder.prompt(sample.mode, sample.user, sample.history, sample.system_prompt))
        has_target = (example.text_targets != IGNORE) | (example.speech_targets != IGNORE).any(-1)
        assert not has_target[: prompt_length - 1].any(), sample.mode
        assert has_target[prompt_length - 1 :].all(), sample.mode
        assert prompt_length - 1 > starts[-1]  # after the trained turn's assistant header


def test_a_reply_whose_text_is_an_input_only_trains_its_speech_in_t2m_and_s2m(tokenizer, builder):
    """`"text_target": false` (training.data.counterfactual): only S2M / T2M, the same positions,
    inputs and speech targets as the item with its text as a target, and no text target at all."""
    item = replace(golden_item(), extra={"text_target": False})
    skipped = Counter()
    assert select_modes(item, skipped=skipped) == ["S2M", "T2M"]
    assert {mode for mode, _ in skipped} == {"S2T", "T2T", "STC", "SAC", "SUC"}
    full = {s.mode: builder.example(s) for s in expand(golden_item(), audio_features=fake_mels)}
    for sample in expand(item, audio_features=fake_mels):
        assert not sample.text_target
        example, reference = builder.example(sample), full[sample.mode]
        assert (example.text_targets == IGNORE).all()
        assert torch.equal(example.input_ids, reference.input_ids)
        assert torch.equal(example.speech_inputs, reference.speech_inputs)
        assert torch.equal(example.speech_targets, reference.speech_targets)
        assert (reference.text_targets != IGNORE).any()
