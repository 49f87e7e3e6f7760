"""The learning-rate range test (Smith 2015; the book's step before 1cycle).

Train the spec's fresh model for a few hundred steps while the lr grows exponentially from
`start` to `end`, recording the loss of every batch; stop once the loss diverges. The suggested lr
follows the book's rule: a tenth of the lr at which the smoothed loss is lowest. The lr of the
steepest descent of the smoothed loss (fastai's rule) is reported beside it.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dnntrick.errors import UsageError
from dnntrick.spec.schema import Spec
from dnntrick.training.lr import set_lr
from dnntrick.training.step import StepParts, train_step

# β of the bias-corrected moving average of the loss: a window of ~10 steps, so the smoothed curve
# lags the lr by ~10 steps only (fastai's 0.98 lags ~50 steps, a decade of lr over 300 steps)
SMOOTHING = 0.9
SKIP = 10  # first steps left out of the steepest-descent search (the average is still settling)
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum
CHECK_EVERY = 20  # steps between reads of the losses from the device (a sync point)


@dataclass
class LRFind:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    diverged: bool  # stopped because the loss blew up (else ran all its steps)

    @property
    def lowest_lr(self) -> float:
        """The lr at the lowest smoothed loss."""
        return self.lrs[int(np.argmin(self.smoothed))]

    @property
    def suggestion(self) -> float:
        """The book's rule: a tenth of the lr at the lowest smoothed loss, never below the start."""
        return max(self.lowest_lr / 10, self.lrs[0])

    @property
    def steepest_lr(self) -> float:
        """The lr where the smoothed loss falls fastest per decade of lr, up to the minimum."""
        stop = int(np.argmin(self.smoothed)) + 1
        if stop < SKIP + 3:
            return self.lrs[0]
        slope = np.gradient(np.array(self.smoothed[:stop]), np.log10(self.lrs[:stop]))
        return self.lrs[SKIP + int(np.argmin(slope[SKIP:]))]


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average of `losses`."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def first_divergence(losses: list[float]) -> int | None:
    """How many of `losses` to keep when the loss diverged (None if it did not): up to the first
    non-finite loss, or up to and including the first smoothed loss above DIVERGED × the lowest
    before it."""
    for k, loss in enumerate(losses):
        if not math.isfinite(loss):
            return k
    lowest = math.inf
    for k, value in enumerate(smooth(losses)):
        lowest = min(lowest, value)
        if value > DIVERGED * lowest:
            return k + 1
    return None


MAX_STEPS = 100_000  # the book's test is a few hundred steps; 10^9 would never end


def check_range(start: float, end: float, steps: int) -> None:
    if not 0 < start < end or not math.isfinite(end) or start < sys.float_info.min:
        raise UsageError(
            f"--start {start:g} and --end {end:g}: need 0 < start < end, both finite normal "
            "numbers (e.g. 1e-5 and 10)"
        )
    if steps < 10:
        raise UsageError(f"--steps {steps}: need at least 10 steps")
    if steps > MAX_STEPS:
        raise UsageError(f"--steps {steps}: at most {MAX_STEPS:,} (a few hundred is usual)")


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    start: float,
    end: float,
    steps: int,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LRFind:
    """Train for up to `steps` steps with lr = start·(end/start)^(i/(steps-1)), i = 0, 1, ..."""
    check_range(start, end, steps)
    lrs = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    losses = torch.full((steps,), float("nan"), device=x.device)  # read every CHECK_EVERY steps
    order = torch.empty(0, dtype=torch.long)
    parts = StepParts(model, optimizer)  # the training step, without penalties or finite check
    model.train()
    done, diverged = 0, False
    for i, lr in enumerate(lrs):
        if len(order) < batch_size:  # a new pass over the data, in a new seeded order
            order = torch.randperm(len(x), generator=generator)
        idx, order = order[:batch_size].to(x.device), order[batch_size:]
        xb, yb = x[idx], y[idx]
        if augment is not None:
            xb = augment(xb)
        set_lr(optimizer, lr)
        losses[i] = train_step(parts, xb, yb).detach()
        done = i + 1
        if done % CHECK_EVERY == 0 or done == steps:
            seen = losses[:done].tolist()
            if stop := first_divergence(seen):
                done, diverged = stop, True
                break
    if done == 0:
        raise UsageError(f"the loss was not finite at the first step (lr {start:g}); lower --start")
    kept = losses[:done].tolist()
    return LRFind(lrs[:done], kept, smooth(kept), diverged)


def plot(result: LRFind, path: Path, title: str) -> None:
    """Loss (raw and smoothed) against lr on a log axis, with the suggestion marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnntrick.training.rundir import atomic_write

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=0.8, label="batch loss")
    ax.plot(result.lrs, result.smoothed, color="C0", linewidth=2, label="smoothed loss")
    ax.axvline(result.lowest_lr, color="C3", linestyle=":", label=f"lowest {result.lowest_lr:.3g}")
    ax.axvline(
        result.suggestion, color="C2", linestyle="--", label=f"suggested {result.suggestion:.3g}"
    )
    ax.set_xscale("log")
    low = min(min(result.losses), min(result.smoothed))
    high = max(result.smoothed[0], DIVERGED * min(result.smoothed))
    ax.set_ylim(low * 0.9, high * 1.1)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def to_csv(result: LRFind) -> str:
    """step, lr, loss, smoothed_loss: one row per step."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "lr", "loss", "smoothed_loss"])
    for i, row in enumerate(zip(result.lrs, result.losses, result.smoothed, strict=True)):
        writer.writerow([i, *(f"{v:.6g}" for v in row)])
    return out.getvalue()


def find_lr(
    spec: Spec,
    out: Path | str,
    start: float,
    end: float,
    steps: int,
    source: str | None = None,
    overrides: list[str] | None = None,
) -> tuple[LRFind, Path]:
    """Run the range test on the spec's fresh model and training split; write
    out/<name>-lr-find-<time>/ with lr_find.png, lr_find.csv, spec.yaml and summary.json."""
    from dnntrick.spec.config import dump_spec
    from dnntrick.training.build import build
    from dnntrick.training.rundir import RunDir, atomic_write, make_run_dir, write_json

    check_range(start, end, steps)  # before any work
    built = build(spec, prepare=None)  # the spec's fresh model, as `train` would build it
    assert built.optimizer is not None
    result = lr_range_test(
        built.model,
        built.optimizer,
        built.data.x_train,
        built.data.y_train,
        spec.train.batch_size,
        built.generator,
        start,
        end,
        steps,
        built.augment,
    )
    run = RunDir(make_run_dir(out, f"{spec.name}-lr-find"))
    run.write_spec(dump_spec(spec), source, list(overrides or []))
    atomic_write(run.path / "lr_find.csv", to_csv(result).encode())
    plot(
        result,
        run.path / "lr_find.png",
        f"{spec.name}: LR range test ({spec.train.optimizer.name})",
    )
    write_json(
        run.path / "summary.json",
        {
            "name": spec.name,
            "start": start,
            "end": end,
            "steps": steps,
            "steps_run": len(result.lrs),
            "diverged": result.diverged,
            "lowest_loss_lr": result.lowest_lr,
            "steepest_lr": result.steepest_lr,
            "suggested_lr": result.suggestion,
            "rule": "a tenth of the lr at the lowest smoothed loss",
        },
    )
    return result, run.path
