"""The learning rate of a run: every write of an optimizer's lr goes through `set_lr`.

`Scheduler` applies a schedule of tricks/schedules.py (SCHEDULES) step by step and epoch by epoch;
transfer's unfreezing and the lr range test write through `set_lr` too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from dnntrick.spec.schema import ScheduleSpec
from dnntrick.tricks.schedules import SCHEDULES, Args, lr_at


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first parameter group's lr as a float (it is a tensor when capturable)."""
    return float(optimizer.param_groups[0]["lr"])


def set_lr(optimizer: torch.optim.Optimizer, lr: float | Callable[[dict[str, Any]], float]) -> None:
    """Set every parameter group's lr to `lr`, or to lr(group). A tensor lr (a capturable
    optimizer, under CUDA graphs) is filled in place, so a captured step reads the new value."""
    for group in optimizer.param_groups:
        value = lr(group) if callable(lr) else lr
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


class Scheduler:
    """Sets the optimizer's lr before each step and after each epoch; `None` spec = constant lr.

    Every parameter group is scaled by the same factor lr(t) / lr0, so groups that start with
    their own rates keep their ratios. A tensor lr (a capturable optimizer under CUDA graphs) is
    filled in place, so a captured step sees the new value.
    """

    def __init__(
        self,
        spec: ScheduleSpec | None,
        lr0: float,
        steps_per_epoch: int,
        epochs: int,
        optimizer: torch.optim.Optimizer,
    ):
        self.spec, self.lr0, self.optimizer = spec, lr0, optimizer
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.args = Args(spec, lr0) if spec is not None else None
        self.rate = SCHEDULES[spec.name].rate if spec is not None else None
        self.current = lr0  # performance: the lr after the cuts so far
        self.best = math.inf  # performance: best monitored value, sign-adjusted (lower is better)
        self.bad_epochs = 0

    def lr_at(self, step: int) -> float:
        """The lr of global step `step` (0-based), without setting it."""
        if self.args is None:
            return self.current
        lr = lr_at(self.args, step, self.steps_per_epoch, self.epochs)
        return self.current if lr is None else lr

    def epoch_lrs(self, first: int, steps: int) -> list[float]:
        """The lr of each of the `steps` steps from global step `first` (host floats)."""
        return [self.lr_at(first + i) for i in range(steps)]

    def before_step(self, step: int) -> None:
        """Set the lr for global step `step` (0-based)."""
        if self.rate is not None:
            self._set(self.lr_at(step))

    def after_epoch(self, row: dict[str, Any]) -> None:
        """Performance scheduling (Keras ReduceLROnPlateau without cooldown): after `patience`
        epochs whose monitored value did not beat the best by min_delta, lr ← max(lr·factor,
        min_lr)."""
        if self.spec is None or self.spec.name != "performance" or self.args is None:
            return
        a = self.args
        value = row[a.monitor] * (-1.0 if a.monitor.endswith("accuracy") else 1.0)
        if value < self.best - a.min_delta:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= a.patience:
            self.current = max(self.current * a.factor, a.min_lr)
            self._set(self.current)
            self.bad_epochs = 0

    def _set(self, lr: float) -> None:
        def scaled(group: dict[str, Any]) -> float:
            group.setdefault("initial_lr", float(group["lr"]))  # first seen: the group's lr0
            return lr * (group["initial_lr"] / self.lr0)  # exactly lr for groups at lr0

        set_lr(self.optimizer, scaled)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (per-step schedules are functions of the step alone)."""
        return {"current": self.current, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current, self.best, self.bad_epochs = (
            state["current"],
            state["best"],
            state["bad_epochs"],
        )
        if self.spec is not None and self.spec.name == "performance":
            self._set(self.current)
