"""The learning-rate schedule: a short linear warm-up, then cosine decay (or constant).

It is driven by the share of training done, not by the step count, so that a run with a
time budget anneals over the budget as well.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

WARMUP = 0.03  # share of training spent warming the learning rate up


def schedule_factor(progress: float, kind: Literal["cosine", "constant"]) -> float:
    """Learning-rate factor at ``progress`` in [0, 1]: linear warm-up, then cosine decay."""
    if kind == "constant":
        return 1.0
    if progress < WARMUP:
        return max(progress / WARMUP, 0.01)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - WARMUP) / (1 - WARMUP))))


class LearningRateSchedule:
    """Sets every parameter group's rate to its rate at construction times the schedule factor."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: Literal["cosine", "constant"]) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.base_rates = [group["lr"] for group in optimizer.param_groups]

    def set_progress(self, progress: float) -> None:
        """Apply the rates for ``progress`` (share of training done, in [0, 1])."""
        factor = schedule_factor(progress, self.kind)
        for group, base in zip(self.optimizer.param_groups, self.base_rates):
            group["lr"] = base * factor
