"""MelCache, SpeechTextDataset (length filter) and batching through a DataLoader."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader

from core.encoder import log_mel
from core.sequence import IGNORE
from core.types import Waveform
from tests.training.data.audio_files import write_lines, write_wav
from training.data.collate import ExampleCollator, LengthBucketSampler, SpeechTextDataset, collate_examples
from training.data.com_mixing import CoMMixingConfig
from training.data.manifest import read_manifest
from training.data.mel_cache import MelCache


@pytest.fixture
def items(tmp_path):
    for i, seconds in enumerate((0.5, 1.0, 2.0)):
        write_wav(tmp_path / f"u{i}.wav", seconds, 200 + 50 * i)
    codes = [[(3 * j + i) % 40 for j in range(n)] for i, n in enumerate((10, 30, 60))]
    lines = [
        {"id": f"q{i}", "text": t, "audio": f"u{i}.wav", "reply_text": r, "reply_tokens": codes[i]}
        for i, (t, r) in enumerate(
            [("hello", "hello there!"), ("what is three plus four?", "seven."), ("thank you", "goodbye!")]
        )
    ]
    lines.append({"id": "text-only", "text": "the capital of france?", "reply_text": "paris."})
    return read_manifest(write_lines(tmp_path / "m.jsonl", lines))


def test_mel_cache_hit_miss_and_invalidation(tmp_path):
    path = write_wav(tmp_path / "a.wav", 0.5)
    cache = MelCache(tmp_path / "cache", n_mels=80)
    assert not cache.contains(path)
    first = cache.get(path)
    assert (cache.hits, cache.misses) == (0, 1) and first.shape == (80, 50)
    import soundfile as sf

    samples, rate = sf.read(str(path), dtype="float32")
    assert torch.allclose(first, log_mel(Waveform(samples, rate), 80))  # the engine's front end

    again = MelCache(tmp_path / "cache", n_mels=80)  # a new process reads the file back
    assert again.frames(path) == 50 and again.misses == 0  # shape from the header only
    assert torch.equal(again(path), first) and (again.hits, again.misses) == (1, 0)
    assert not MelCache(tmp_path / "cache", n_mels=128).contains(path)  # n_mels is part of the key

    write_wav(path, 0.7)  # the recording changed: a miss, never a stale hit
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert not again.contains(path)
    assert again.get(path).shape == (80, 70) and again.misses == 1
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2

    memory = MelCache(None, n_mels=80)
    memory.get(path)
    memory.get(path)
    assert (memory.hits, memory.misses) == (1, 1)
    stand_in = memory.shape_only(path)
    assert stand_in.shape == (80, 70) and stand_in.stride() == (0, 0)


def test_dataset_builds_mixed_examples(items, builder, tmp_path):
    cache = MelCache(tmp_path / "mels", n_mels=80)
    dataset = SpeechTextDataset(items, builder, cache)
    # three full items x 7 modes; the text-only item (no audio, no reply tokens) gives T2T only
    assert len(dataset) == 3 * 7 + 1
    assert [dataset.variant_name(v) for v in dataset.variants[-2:]] == ["q2/SUC", "text-only/T2T"]
    assert cache.misses == 3 and cache.hits == 0  # lengths come from shapes; mels computed once
    for i in range(len(dataset)):
        example = dataset[i]
        assert len(example) == dataset.lengths[i]
        assert len(example.mels) == (1 if dataset.variants[i].mode[0] == "S" else 0)
    assert cache.misses == 3


def test_length_filter(items, builder):
    memory = MelCache(None, n_mels=80)
    full = SpeechTextDataset(items, builder, memory)
    budget = sorted(full.lengths)[len(full) // 2]
    over = sum(n > budget for n in full.lengths)
    dropped = SpeechTextDataset(items, builder, memory, max_positions=budget)
    assert len(dropped) == len(full) - over and max(dropped.lengths) <= budget
    assert len(dropped.over_length_variants) == over
    kept = SpeechTextDataset(items, builder, memory, max_positions=budget, over_length="keep")
    assert len(kept) == len(full) and len(kept.over_length_variants) == over
    with pytest.raises(ValueError, match=r"q\d/\w+: \d+ positions exceed the budget"):
        SpeechTextDataset(items, builder, memory, max_positions=budget, over_length="error")
    assert full.max_positions == builder.config.max_positions == 2048


def test_dataloader_batches(items, builder):
    dataset = SpeechTextDataset(
        items, builder, MelCache(None, n_mels=80), CoMMixingConfig(modes=("S2M", "T2T", "STC"))
    )
    sampler = LengthBucketSampler(dataset.lengths, max_tokens=600, seed=0)
    collator = ExampleCollator.for_builder(builder)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)
    seen = 0
    for batch_indices, batch in zip(sampler.batches(0), loader, strict=True):
        b, length = batch.input_ids.shape
        assert b * length <= 600 and b == len(batch_indices)
        lengths = torch.tensor([dataset.lengths[i] for i in batch_indices])
        assert torch.equal(batch.attention_mask.sum(1), lengths)
        padding = batch.attention_mask == 0
        assert (batch.text_targets[padding] == IGNORE).all()
        assert (batch.speech_targets[padding] == IGNORE).all()
        assert (batch.input_ids[padding] == collator.pad_token_id).all()
        assert len(batch.mels) == sum(dataset.variants[i].mode != "T2T" for i in batch_indices)
        seen += b
    assert seen == len(dataset)
    single = collate_examples([dataset[0]], collator.pad_token_id, collator.speech_pad)
    assert torch.equal(single.text_targets[0], dataset[0].text_targets)


def test_batches_train_the_model(items, builder):
    """A loader batch goes through `DrVoiceModel.forward`: finite losses, gradients on both heads."""
    from core.model import DrVoiceModel

    torch.manual_seed(0)
    model = DrVoiceModel(builder.config)
    dataset = SpeechTextDataset(items[:2], builder, MelCache(None, n_mels=80))
    loader = DataLoader(
        dataset,
        batch_sampler=LengthBucketSampler(dataset.lengths, max_tokens=4096, seed=0),
        collate_fn=ExampleCollator.for_builder(builder),
    )
    batch = next(iter(loader))
    output = model(batch)
    assert torch.isfinite(output.loss) and output.text_tokens > 0 and output.speech_tokens > 0
    output.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.srh.parameters())
