"""Learning-rate schedule of the DrVoice recipes: linear warmup, then cosine annealing (paper appendix A).

The paper warms up over 2% of the steps and anneals with a cosine from 1e-4 to 1e-5 (SRH
pretraining, DrVoice-Small, Core-Cocktail stage 1) or from 2e-5 to 2e-6 (Core-Cocktail stage 2).

Step convention: ``step`` is the 0-based index of the optimizer step about to be taken, the same as
``LambdaLR``'s ``last_epoch`` after ``step`` calls of ``scheduler.step()``. A run of ``total_steps``
steps uses steps ``0 .. total_steps - 1``; step 0 has lr 0 (warmup starts from 0), step ``W`` reaches
``peak_lr`` and step ``total_steps - 1`` uses exactly ``final_lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """``W = ceil(warmup_fraction * total_steps)``, capped at ``total_steps - 1`` so the cosine has a last step.

    e.g. ``warmup_steps(1000, 0.02) == 20`` and ``warmup_steps(10, 0.02) == 1``.
    """
    return min(math.ceil(warmup_fraction * total_steps), total_steps - 1)


def cosine_with_warmup(
    step: int, total_steps: int, peak_lr: float, final_lr: float, warmup_fraction: float = 0.02
) -> float:
    """Learning rate at ``step``: linear warmup from 0, then cosine from ``peak_lr`` to ``final_lr``.

    With ``W = warmup_steps(total_steps, warmup_fraction)`` and ``L = total_steps - 1``::

        step < W:       lr = peak_lr * step / W
        W <= step < L:  lr = final_lr + (peak_lr - final_lr) * 0.5 * (1 + cos(pi * (step - W) / (L - W)))
        step >= L:      lr = final_lr       (also past the end, e.g. a run resumed with extra steps)

    Args:
        step: 0-based optimizer step.
        total_steps: number of optimizer steps of the run, >= 1.
        peak_lr: lr at the end of the warmup (1e-4 in stage 1).
        final_lr: lr of the last step (1e-5 in stage 1).
        warmup_fraction: fraction of ``total_steps`` spent warming up, in [0, 1).

    Returns:
        The learning rate (float).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    if peak_lr < 0 or final_lr < 0:
        raise ValueError(f"learning rates must be >= 0, got peak_lr={peak_lr}, final_lr={final_lr}")

    num_warmup = warmup_steps(total_steps, warmup_fraction)
    last = total_steps - 1
    if step < num_warmup:
        return peak_lr * step / num_warmup
    if step >= last:
        return final_lr
    progress = (step - num_warmup) / (last - num_warmup)  # in [0, 1)
    return final_lr + (peak_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class CosineWithWarmup:
    """Picklable ``LambdaLR`` factor: ``cosine_with_warmup(step, ...) / peak_lr``.

    A callable object rather than a closure so that ``LambdaLR.state_dict()`` saves its fields and
    ``load_state_dict`` restores them (a resumed run follows the saved schedule exactly).
    """

    total_steps: int  # optimizer steps of the run
    peak_lr: float  # lr after warmup
    final_lr: float  # lr of the last step
    warmup_fraction: float  # fraction of total_steps spent warming up

    def __call__(self, step: int) -> float:
        lr = cosine_with_warmup(step, self.total_steps, self.peak_lr, self.final_lr, self.warmup_fraction)
        return lr / self.peak_lr


def build_scheduler(
    optimizer: Optimizer,
    total_steps: int,
    peak_lr: float,
    final_lr: float,
    warmup_fraction: float = 0.02,
) -> LambdaLR:
    """``LambdaLR`` that follows :func:`cosine_with_warmup`.

    The factor is relative to ``peak_lr``: a parameter group built with ``lr=peak_lr`` follows the
    schedule exactly; a group with another lr follows it scaled by ``lr / peak_lr``. Building the
    scheduler sets every group's lr to its step-0 value (0 with warmup). Call ``scheduler.step()``
    after each ``optimizer.step()``.

    Exact resume: build the optimizer and the scheduler as for a fresh run, then
    ``optimizer.load_state_dict(...)`` and ``scheduler.load_state_dict(...)`` (in this order; the
    optimizer state carries each group's current lr, the scheduler state its step and schedule).

    Args:
        optimizer: optimizer whose groups were built with ``lr=peak_lr``.
        total_steps: number of optimizer steps of the run.
        peak_lr: lr after warmup, > 0.
        final_lr: lr of the last step.
        warmup_fraction: fraction of ``total_steps`` spent warming up.

    Returns:
        The scheduler.
    """
    if peak_lr <= 0:
        raise ValueError(f"peak_lr must be > 0, got {peak_lr}")
    factor = CosineWithWarmup(total_steps, peak_lr, final_lr, warmup_fraction)
    factor(0)  # validate the arguments now, not at the first step
    return LambdaLR(optimizer, lr_lambda=factor)
