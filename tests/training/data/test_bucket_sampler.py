"""LengthBucketSampler: every example once per epoch, batches within the budget, exact resume."""

from __future__ import annotations

import random

import pytest

from training.data.collate import LengthBucketSampler

LENGTHS = [random.Random(0).randint(5, 120) for _ in range(300)]
BUDGET = 400


def make(**kwargs) -> LengthBucketSampler:
    return LengthBucketSampler(LENGTHS, BUDGET, seed=3, chunk_size=64, **kwargs)


def test_every_example_once_per_epoch_under_budget():
    sampler = make()
    for epoch in range(2):
        batches = list(sampler)
        assert sampler.epoch == epoch + 1 and sampler.position == 0  # moved on to the next epoch
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(LENGTHS)))
        assert all(len(b) * max(LENGTHS[i] for i in b) <= BUDGET for b in batches)
    # buckets are tight: padding waste is small compared with random batching
    padded = sum(len(b) * max(LENGTHS[i] for i in b) for b in batches)
    assert padded < 1.25 * sum(LENGTHS)


def test_deterministic_per_seed_and_epoch():
    assert make().batches(0) == make().batches(0)
    assert make().batches(0) != make().batches(1)
    assert make().batches(0) != LengthBucketSampler(LENGTHS, BUDGET, seed=4, chunk_size=64).batches(0)


def test_resume_mid_epoch_gives_the_same_remaining_batches():
    reference = make()
    expected = list(reference) + list(reference)  # epochs 0 and 1

    first = make()
    iterator = iter(first)
    consumed = [next(iterator) for _ in range(7)]
    state = first.state_dict()
    assert (state["epoch"], state["position"]) == (0, 7)
    del iterator, first  # the run is killed

    resumed = make()
    resumed.load_state_dict(state)
    assert len(resumed) == len(reference.batches(0))
    assert consumed + list(resumed) + list(resumed) == expected


def test_resume_with_prefetching_loader_position():
    sampler = make()
    iterator = iter(sampler)
    for _ in range(10):  # a DataLoader prefetched 10, training consumed 6
        next(iterator)
    resumed = make()
    resumed.load_state_dict(sampler.state_dict(position=6))
    assert next(iter(resumed)) == make().batches(0)[6]


def test_state_mismatch_is_refused():
    state = make().state_dict()
    with pytest.raises(ValueError, match="max_tokens"):
        LengthBucketSampler(LENGTHS, BUDGET + 1, seed=3, chunk_size=64).load_state_dict(state)
    with pytest.raises(ValueError, match="num_examples"):
        LengthBucketSampler(LENGTHS[:-1], BUDGET, seed=3, chunk_size=64).load_state_dict(state)


def test_oversized_example_alone_and_batch_cap():
    sampler = LengthBucketSampler([10, 10, 500, 10], 100, seed=0)
    batches = sampler.batches(0)
    assert [2] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    capped = LengthBucketSampler([1] * 10, 100, max_batch_size=3, shuffle=False).batches(0)
    assert capped == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_replicas_share_the_epoch():
    ranks = [make(num_replicas=3, rank=r).batches(0) for r in range(3)]
    assert len({len(b) for b in ranks}) == 1
    covered = {i for batches in ranks for b in batches for i in b}
    assert covered == set(range(len(LENGTHS)))
