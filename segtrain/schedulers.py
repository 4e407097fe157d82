"""Learning-rate schedules stepped every iteration; ``total_steps`` comes from the Trainer."""

from __future__ import annotations

import bisect
import math
from typing import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def _warmup_factor(step: int, warmup_steps: int, warmup_ratio: float) -> float:
    return warmup_ratio + (1 - warmup_ratio) * step / warmup_steps


def poly(
    optimizer: Optimizer,
    total_steps: int,
    power: float = 0.9,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.1,
) -> LRScheduler:
    """DeepLab's "poly" policy: lr * (1 - step / total_steps) ** power, per iteration."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup_factor(step, warmup_steps, warmup_ratio)
        return max(0.0, 1 - step / max(total_steps, 1)) ** power

    return LambdaLR(optimizer, factor)


def cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.1,
    min_factor: float = 0.0,
) -> LRScheduler:
    """Linear warm-up, then cosine decay to ``min_factor * lr`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup_factor(step, warmup_steps, warmup_ratio)
        progress = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def step(
    optimizer: Optimizer,
    total_steps: int,
    milestones: Sequence[int] = (),
    every: int | None = None,
    gamma: float = 0.1,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.1,
) -> LRScheduler:
    """The step policy: lr times ``gamma`` at each of ``milestones`` (iterations; Mask R-CNN's 120k of
    160k), or every ``every`` iterations (DeepLab v1's x0.1 per 2,000), after an optional linear warm-up."""
    marks = sorted(milestones)

    def factor(iteration: int) -> float:
        if iteration < warmup_steps:
            return _warmup_factor(iteration, warmup_steps, warmup_ratio)
        drops = iteration // every if every else bisect.bisect_right(marks, iteration)
        return gamma**drops

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int) -> LRScheduler:
    return LambdaLR(optimizer, lambda step: 1.0)
