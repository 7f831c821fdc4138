"""Linear warmup + cosine schedule (paper appendix A: 2% warmup, 1e-4 -> 1e-5) and exact resume."""

import math

import pytest
import torch
from torch.testing import assert_close

from training.schedule import build_scheduler, cosine_with_warmup, warmup_steps


def test_warmup_steps():
    """ceil(0.02 * 1000) = 20; ceil(0.02 * 10) = ceil(0.2) = 1; capped at total - 1; 0 without warmup."""
    assert warmup_steps(1000, 0.02) == 20
    assert warmup_steps(10, 0.02) == 1
    assert warmup_steps(3, 0.9) == 2
    assert warmup_steps(100, 0.0) == 0


def test_cosine_with_warmup_hand_computed():
    """total 101, warmup 0.02 -> W = ceil(2.02) = 3, L = 100, cosine over (L - W) = 97 steps.

    step 0: 0; step 1: 1e-4 / 3 = 3.3333e-5; step 2: 6.6667e-5; step 3 (= W): peak 1e-4.
    midpoint step 3 + 48.5 is not an integer; use the cosine at progress (52 - 3)/97 = 0.505155:
    1e-5 + 9e-5 * 0.5 * (1 + cos(pi * 0.505155)) = 1e-5 + 4.5e-5 * (1 - 0.016193) = 5.42713e-5.
    step 100 (last): final 1e-5; past the end (step 150): still 1e-5.
    """
    lr = lambda s: cosine_with_warmup(s, 101, 1e-4, 1e-5, 0.02)  # noqa: E731
    assert lr(0) == 0.0
    assert lr(1) == pytest.approx(1e-4 / 3, rel=1e-12)
    assert lr(2) == pytest.approx(2e-4 / 3, rel=1e-12)
    assert lr(3) == pytest.approx(1e-4, rel=1e-12)
    assert lr(52) == pytest.approx(5.42713e-5, rel=1e-5)
    assert lr(100) == 1e-5
    assert lr(150) == 1e-5


def test_schedule_is_monotone_after_warmup_and_covers_stage_two():
    """Stage 2 of Core-Cocktail: 2e-5 -> 2e-6, non-increasing after the warmup."""
    values = [cosine_with_warmup(s, 500, 2e-5, 2e-6) for s in range(500)]
    num_warmup = warmup_steps(500, 0.02)  # 10
    assert values[num_warmup] == pytest.approx(2e-5)
    assert all(a >= b for a, b in zip(values[num_warmup:-1], values[num_warmup + 1 :], strict=True))
    assert values[-1] == 2e-6
    assert max(values) == pytest.approx(2e-5)


def test_no_warmup_starts_at_peak():
    assert cosine_with_warmup(0, 10, 1e-3, 1e-4, warmup_fraction=0.0) == pytest.approx(1e-3)
    assert cosine_with_warmup(9, 10, 1e-3, 1e-4, warmup_fraction=0.0) == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"step": -1, "total_steps": 10},
        {"step": 0, "total_steps": 0},
        {"step": 0, "total_steps": 10, "warmup_fraction": 1.0},
    ],
)
def test_cosine_with_warmup_validates(kwargs):
    with pytest.raises(ValueError):
        cosine_with_warmup(peak_lr=1e-4, final_lr=1e-5, **kwargs)


def _optimizer(lr=1e-4):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3))]
    return torch.optim.AdamW(params, lr=lr), params


def _train_steps(optimizer, scheduler, params, num_steps):
    lrs = []
    for _ in range(num_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        (params[0] ** 2).sum().backward()
        optimizer.step()
        scheduler.step()
    return lrs


def test_build_scheduler_follows_the_function():
    """The lr the optimizer uses at step s is cosine_with_warmup(s). 5% of 40 steps -> W = 2:
    step 0 uses 0, step 2 the peak 1e-4, the last step (39) final_lr 1e-5."""
    optimizer, params = _optimizer(1e-4)
    scheduler = build_scheduler(optimizer, total_steps=40, peak_lr=1e-4, final_lr=1e-5, warmup_fraction=0.05)
    lrs = _train_steps(optimizer, scheduler, params, 40)
    expected = [cosine_with_warmup(s, 40, 1e-4, 1e-5, 0.05) for s in range(40)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    assert lrs[0] == 0.0
    assert lrs[2] == pytest.approx(1e-4, rel=1e-12)
    assert lrs[39] == pytest.approx(1e-5, rel=1e-12)


def test_scheduler_state_dict_round_trip_resumes_exactly():
    """Train 7 steps, save optimizer + scheduler state, resume into freshly built ones (given a
    *different* total_steps, which the saved state overrides), run 8 more: lrs and parameters equal
    those of an uninterrupted 15-step run.
    """
    kwargs = dict(total_steps=15, peak_lr=1e-2, final_lr=1e-3, warmup_fraction=0.1)
    opt_a, params_a = _optimizer(1e-2)
    sched_a = build_scheduler(opt_a, **kwargs)
    lrs_a = _train_steps(opt_a, sched_a, params_a, 15)

    opt_b, params_b = _optimizer(1e-2)
    sched_b = build_scheduler(opt_b, **kwargs)
    lrs_b = _train_steps(opt_b, sched_b, params_b, 7)
    saved = {
        "params": [p.detach().clone() for p in params_b],
        "optimizer": opt_b.state_dict(),
        "scheduler": sched_b.state_dict(),
    }
    assert saved["scheduler"]["lr_lambdas"][0]["total_steps"] == 15

    opt_c, params_c = _optimizer(1e-2)
    with torch.no_grad():
        params_c[0].copy_(saved["params"][0])
    sched_c = build_scheduler(opt_c, **{**kwargs, "total_steps": 999})
    opt_c.load_state_dict(saved["optimizer"])
    sched_c.load_state_dict(saved["scheduler"])
    assert sched_c.last_epoch == 7
    lrs_c = _train_steps(opt_c, sched_c, params_c, 8)

    assert lrs_b + lrs_c == lrs_a
    assert_close(params_c[0], params_a[0], rtol=0, atol=0)
    assert lrs_a[-1] == pytest.approx(1e-3)
    assert not math.isclose(lrs_a[7], lrs_a[8])


def test_build_scheduler_validates_at_build_time():
    optimizer, _ = _optimizer()
    with pytest.raises(ValueError):
        build_scheduler(optimizer, total_steps=0, peak_lr=1e-4, final_lr=1e-5)
    with pytest.raises(ValueError):
        build_scheduler(optimizer, total_steps=10, peak_lr=0.0, final_lr=0.0)
