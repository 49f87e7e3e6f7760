"""SCHEDULES: the closed registry of learning-rate schedules a spec may name (`train.schedule`).

Time `t` counts what has been completed before the current step, as Keras does: optimizer steps
(0 at the first step) or epochs (0 during the first epoch), chosen by the schedule's `unit`. The
optimizer's `lr` is lr0, the schedule's starting (for 1cycle: peak) rate. Adding a schedule = one
entry here + one test. This module is pure Python: the spec imports it without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from dnntrick.spec.schema import ScheduleSpec


@dataclass(frozen=True)
class Clock:
    """Where training is when a step starts."""

    step: int  # optimizer steps completed in the whole run
    epoch: int  # epochs completed
    steps_per_epoch: int
    epochs: int

    def t(self, unit: str) -> int:
        return self.step if unit == "step" else self.epoch

    def total(self, unit: str) -> int:
        return self.steps_per_epoch * self.epochs if unit == "step" else self.epochs


class Args:
    """A schedule spec's arguments, with the registry entry's defaults filled in."""

    def __init__(self, spec: ScheduleSpec, lr: float):
        self.spec, self.lr0 = spec, lr
        self.defaults = SCHEDULES[spec.name].defaults

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.spec, name)
        return self.defaults.get(name) if value is None else value


def exponential(a: Args, c: Clock) -> float:
    """lr0 · decay_rate^(t / period); `staircase` floors t / period (the seed: 0.1^(step/10000))."""
    exponent = c.t(a.unit) / a.period
    return a.lr0 * a.decay_rate ** (math.floor(exponent) if a.staircase else exponent)


def power(a: Args, c: Clock) -> float:
    """lr0 / (1 + t / period)^power: Keras SGD(decay=d) and InverseTimeDecay with period = 1/d."""
    return a.lr0 / (1 + c.t(a.unit) / a.period) ** a.power


def piecewise(a: Args, c: Clock) -> float:
    """lr0 until t reaches boundaries[0], then values[0] until boundaries[1], and so on."""
    passed = sum(1 for b in a.boundaries if c.t(a.unit) >= b)
    return a.lr0 if passed == 0 else a.values[passed - 1]


def one_cycle(a: Args, c: Clock) -> float:
    """The book's 1cycle (2nd/3rd ed. OneCycleScheduler), per step: start_lr → lr0 linearly over
    the first half of the steps before the final ones, back to start_lr over the second half,
    then start_lr → final_lr over the final steps (default: a tenth of the run, plus one)."""
    total = c.total("step")
    start = a.start_lr if a.start_lr is not None else a.lr0 / 10
    final = a.final_lr if a.final_lr is not None else start / 1000
    last = a.final_steps if a.final_steps is not None else total // 10 + 1
    half = max((total - last) // 2, 1)
    t = c.step
    if t < half:
        return start + (a.lr0 - start) * t / half
    if t < 2 * half:
        return a.lr0 + (start - a.lr0) * (t - half) / half
    return start + (final - start) * (t - 2 * half) / max(total - 2 * half, 1)


def cosine(a: Args, c: Clock) -> float:
    """Linear warm-up lr0·(t+1)/warmup for t < warmup, then a half cosine from lr0 to min_lr
    over the rest of the run."""
    t, total, warm = c.t(a.unit), c.total(a.unit), a.warmup
    if t < warm:
        return a.lr0 * (t + 1) / warm
    progress = min((t - warm) / max(total - warm, 1), 1.0)
    return a.min_lr + (a.lr0 - a.min_lr) * (1 + math.cos(math.pi * progress)) / 2


@dataclass(frozen=True)
class Schedule:
    # lr for the step about to run; None: the lr changes only at epoch ends (performance)
    rate: Callable[[Args, Clock], float] | None
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def args(self) -> set[str]:
        return set(self.defaults)


SCHEDULES: dict[str, Schedule] = {
    "exponential": Schedule(
        exponential, {"decay_rate": 0.1, "period": 10_000, "unit": "step", "staircase": False}
    ),
    "power": Schedule(power, {"period": 10_000, "power": 1.0, "unit": "step"}),
    "piecewise": Schedule(piecewise, {"boundaries": None, "values": None, "unit": "epoch"}),
    # Keras ReduceLROnPlateau's defaults (the book: factor 0.5, patience 5)
    "performance": Schedule(
        None,
        {"monitor": "val_loss", "factor": 0.1, "patience": 10, "min_delta": 1e-4, "min_lr": 0.0},
    ),
    "one_cycle": Schedule(one_cycle, {"start_lr": None, "final_lr": None, "final_steps": None}),
    "cosine": Schedule(cosine, {"warmup": 0, "min_lr": 0.0, "unit": "step"}),
}


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
        if self.rate is None or self.args is None:
            return self.current
        clock = Clock(step, step // self.steps_per_epoch, self.steps_per_epoch, self.epochs)
        return self.rate(self.args, clock)

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
        import torch

        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", float(group["lr"]))  # first seen: the group's lr0
            value = lr * (group["initial_lr"] / self.lr0)  # exactly lr for groups at lr0
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)
            else:
                group["lr"] = value

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
