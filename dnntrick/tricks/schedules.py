"""SCHEDULES: the closed registry of learning-rate schedules a spec may name (`train.schedule`).

Time `t` counts what has been completed before the current step, as Keras does: optimizer steps
(0 at the first step) or epochs (0 during the first epoch), chosen by the schedule's `unit`. The
optimizer's `lr` is lr0, the schedule's starting (for 1cycle: peak) rate. Adding a schedule = one
entry here + one test. This module is pure Python: the spec imports it without importing torch,
and it imports nothing of dnntrick's. training/lr.py applies a schedule to an optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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

    def __init__(self, spec: Any, lr: float):  # a spec.schema.ScheduleSpec (not imported: no cycle)
        self.spec, self.lr0 = spec, lr
        self.defaults = SCHEDULES[spec.name].defaults

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.spec, name)
        return self.defaults.get(name) if value is None else value


def exponential(a: Args, c: Clock) -> float:
    """lr0 · decay_rate^(t / period); `staircase` floors t / period (the book: 0.1^(step/10000))."""
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


def lr_at(args: Args, step: int, steps_per_epoch: int, epochs: int) -> float | None:
    """The lr of global step `step` (0-based) under the schedule of `args`; None for a schedule
    that changes the lr only at epoch ends (performance)."""
    rate = SCHEDULES[args.spec.name].rate
    if rate is None:
        return None
    return rate(args, Clock(step, step // steps_per_epoch, steps_per_epoch, epochs))
