"""Learning-rate schedules as pure functions of the optimizer step (nanoGPT's ``get_lr``)."""

from __future__ import annotations

import math


def lr_factor(
    step: int,
    *,
    total: int,
    warmup: int = 0,
    schedule: str = "cosine",
    step_size: int = 1,
    power: float = 0.9,
) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based).

    Linear warm-up from ``1/warmup`` to 1 over ``warmup`` steps, then ``cosine`` (to 0 at
    ``total``), ``poly`` (``(1 - t)^power``), ``step`` (×0.1 every ``step_size`` steps) or
    ``constant``.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.1 ** ((step - warmup) // max(step_size, 1))
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** power
    return 0.5 * (1.0 + math.cos(math.pi * progress))
