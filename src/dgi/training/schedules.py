"""Learning-rate and temperature schedules."""

from __future__ import annotations

import math


def warmup_linear_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up to 1, then linear decay to 0 at `total_steps`."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(total_steps - warmup_steps, 1)
    return max(0.0, 1.0 - (step - warmup_steps) / remaining)


def exponential_anneal(progress: float, start: float, end: float) -> float:
    """tau(progress) = start * (end/start)^progress, progress in [0, 1]: the paper's 1.0 -> 0.1."""
    progress = min(max(progress, 0.0), 1.0)
    return start * math.exp(progress * math.log(end / start))
