"""The training loop: one plain function whose order reads top to bottom.

Per step: set the scheduled lr (lr.py), then step.train_step (eager, or a replayed CUDA graph):
forward → loss (+ ℓ1/ℓ2 penalty) → finite check → backward → clip → optimizer step → max-norm →
add to running sums (the tricks themselves live in tricks/). `train_epoch` runs one epoch's steps.
Per epoch: evaluate on the validation split, record a metrics row (lr of the epoch's first step
and mean lr over its steps), let a performance schedule react, check early stopping, write a
checkpoint. A resumed run restores everything the loop draws on (weights, optimizer, data order,
RNGs, early stopping, running sums), so it continues bitwise as if never stopped.
The running sums stay on the device and are read once per epoch (plus a throttled read for the
progress bar, at most a few times a second): no host-device sync per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnntrick.data.datasets import Splits
from dnntrick.spec.schema import EarlyStoppingSpec, TrainSpec
from dnntrick.training.checkpoint import Checkpointer, Loaded, Position
from dnntrick.training.distributed import DataParallel, eval_share, sum_across
from dnntrick.training.guard import FiniteWatch
from dnntrick.training.lr import Scheduler, current_lr
from dnntrick.training.model import eval_mode
from dnntrick.training.report import Reporter
from dnntrick.training.signals import INTERRUPT
from dnntrick.training.step import EagerStep, StepParts, make_step
from dnntrick.tricks.augment import Augmenter
from dnntrick.tricks.regularization import StepTricks

PROGRESS_INTERVAL_S = 0.25  # how often the progress bar may read the running loss (a sync point)


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = 0.0
    stopped_early: bool = False
    train_seconds: float = 0.0
    train_samples: int = 0


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` in eval mode over x [N, F], y [N]."""
    if len(x) == 0:
        return float("nan"), float("nan")
    n = len(x)
    x, y = eval_share(model, x, y)  # under torchrun: this rank's rows, summed across ranks below
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            loss_sum += F.cross_entropy(logits.float(), target, reduction="sum")
            correct += (logits.argmax(dim=1) == target).sum()
    sum_across(loss_sum, correct)
    return loss_sum.item() / n, correct.item() / n  # one sync per evaluation


@torch.no_grad()
def mc_evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    samples: int,
    seed: int,
) -> tuple[float, float]:
    """(loss, accuracy) of the softmax averaged over `samples` passes with dropout active and
    everything else (BN) in eval mode. The dropout masks come from `seed` alone."""
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout | nn.AlphaDropout)]
    devices = [x.device] if x.device.type == "cuda" else []
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    # fork_rng: the training RNG stream is left untouched
    with eval_mode(model), eval_mode(*dropouts, training=True), torch.random.fork_rng(devices):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            probs = torch.softmax(model(xb).float(), dim=1)  # [B, classes]
            for _ in range(samples - 1):
                probs += torch.softmax(model(xb).float(), dim=1)
            probs /= samples
            loss_sum += -torch.log(probs.gather(1, yb[:, None]).clamp_min(1e-12)).sum()
            correct += (probs.argmax(dim=1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)  # one sync per evaluation


class EarlyStopping:
    """Tracks the monitored metric; keeps a copy of the best weights when asked to restore them."""

    def __init__(self, spec: EarlyStoppingSpec | None):
        self.spec = spec
        self.monitor = spec.monitor if spec else "val_accuracy"
        self.sign = -1.0 if self.monitor.endswith("loss") else 1.0  # higher is better after sign
        self.best = -float("inf")
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0

    def update(self, epoch: int, row: dict[str, Any], model: nn.Module) -> bool:
        """Record epoch `epoch`; True when training should stop."""
        if self.spec and epoch <= self.spec.start_from_epoch:
            return False
        value = self.sign * row[self.monitor]
        min_delta = self.spec.min_delta if self.spec else 0.0
        if value > self.best + min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            if self.spec and self.spec.restore_best:
                # clones of every parameter and buffer (BN statistics too): restored bitwise
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.spec is not None and self.bad_epochs >= self.spec.patience

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("best", "best_epoch", "best_state", "bad_epochs")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def train_epoch(
    step: EagerStep,
    order: torch.Tensor,
    batch_size: int,
    reporter: Reporter,
    first: int = 0,
    t0: float | None = None,
    after_step: Callable[[int], None] | None = None,
    before_step: Callable[[int], None] | None = None,
) -> None:
    """Steps first, first + 1, … over the batches order[i·bs:(i+1)·bs]; the last, smaller batch
    is kept (PyTorch/Keras convention). Sums accumulate in step.sums (the caller resets or
    restores them). `before_step(i)` runs before step i (the lr schedule),
    `after_step(i)` after it (interrupt handling)."""
    n, bs = len(order), batch_size
    t0 = time.perf_counter() if t0 is None else t0
    next_report = t0 + PROGRESS_INTERVAL_S
    for i in range(first, (n + bs - 1) // bs):
        if before_step is not None:
            before_step(i)
        step(order[i * bs : (i + 1) * bs], i)
        if (now := time.perf_counter()) >= next_report:  # throttled: this reads the device
            done = min((i + 1) * bs, n)
            reporter.progress(i + 1, done / (now - t0), step.sums.loss_sum.item() / done)
            next_report = now + PROGRESS_INTERVAL_S
        if after_step is not None:
            after_step(i)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Splits,
    spec: TrainSpec,
    generator: torch.Generator,
    reporter: Reporter,
    on_epoch_end: Callable[[dict[str, Any]], None] = lambda row: None,
    keeper: Checkpointer | None = None,
    resume: Loaded | None = None,
    augment: Augmenter | None = None,
    on_start: Callable[[], None] = lambda: None,
) -> FitResult:
    """Train `model` on data.x_train for spec.epochs epochs (or until early stopping).

    `keeper` writes checkpoints (every spec.checkpoint_every epochs, and when interrupted);
    `resume` is a checkpoint to continue from; `augment` changes each training batch.
    `on_start` runs once the checkpoint is restored (the last step that can refuse it: a model
    or optimizer it does not fit) and before the first step: the caller's first write."""
    x, y = data.x_train, data.y_train
    n, bs, device = len(x), spec.batch_size, x.device
    steps = (n + bs - 1) // bs  # the last, smaller batch is kept (PyTorch/Keras convention)
    stopper = EarlyStopping(spec.early_stopping)
    tricks = StepTricks(model, spec)
    scheduler = Scheduler(spec.schedule, spec.optimizer.lr, steps, spec.epochs, optimizer)
    result = FitResult()
    keeper = keeper or Checkpointer(None)
    parts_state = {  # what a checkpoint saves and a resumed run restores
        "model": model,
        "optimizer": optimizer,
        "early_stopping": stopper,
        "tricks": tricks,
        "scheduler": scheduler,
        "augment": augment,
    }
    watch = FiniteWatch(spec.on_nonfinite, model, optimizer, steps, keeper)
    parallel = DataParallel(model)  # one process: no-ops around the step; torchrun: DDP
    if parallel.ranks > 1:  # every rank sees the mean loss and stops at the same step
        watch.agree, watch.host_reads = parallel.agreed_loss, True
    parts = StepParts(
        parallel.forward, optimizer, tricks=tricks, watch=watch, precision=spec.precision
    )
    shard = parallel.shard if parallel.ranks > 1 else None
    step = make_step(parts, x, y, spec, augment, shard)
    sums = step.sums
    at = keeper.restore(resume, parts_state, generator, result) if resume else Position()
    on_start()
    model.train()
    # a checkpoint written as early stopping stopped the run resumes into its end, not past it
    last_epoch = at.epoch - 1 if result.stopped_early else spec.epochs
    for epoch in range(at.epoch, last_epoch + 1):
        # The data order comes from dnntrick's own generator (CPU), so it depends on the seed alone.
        order_rng = generator.get_state()  # a mid-epoch checkpoint redraws this epoch's order
        order = torch.randperm(n, generator=generator).to(device, non_blocking=True)
        first_step, loss_sum, correct, spent = at.begin_epoch(epoch, device)
        step.epoch = epoch
        sums.set(loss_sum, correct)
        parallel.resumed_sums(sums.loss_sum, sums.correct)  # torchrun: saved sums count once
        t0 = time.perf_counter() - spent
        first = (epoch - 1) * steps  # global index of the epoch's first step
        lrs = scheduler.epoch_lrs(first, steps) if spec.schedule else [current_lr(optimizer)]
        reporter.epoch_start(epoch, spec.epochs, steps)
        watch.skipped = 0

        def stop_if_interrupted(
            i: int, epoch: int = epoch, t0: float = t0, order_rng: torch.Tensor = order_rng
        ) -> None:
            # Ctrl-C/SIGTERM: checkpoint after this step, then stop (torchrun: all ranks agree)
            if parallel.agree(INTERRUPT.requested, i):
                watch.check()
                parallel.sum(sums.loss_sum, sums.correct)  # the checkpoint holds every rank's
                spent = time.perf_counter() - t0
                here = Position(epoch, i + 1, order_rng, sums.loss_sum, sums.correct, spent)
                raise INTERRUPT.error(keeper.save(here, parts_state, generator, result))

        train_epoch(
            step,
            order,
            bs,
            reporter,
            first_step,
            t0,
            stop_if_interrupted,
            lambda i: scheduler.before_step(first + i),  # noqa: B023 (called within the epoch)
        )
        parallel.sum(sums.loss_sum, sums.correct)  # in place: every rank's share of the epoch
        watch.check()  # nothing non-finite may reach the metrics or a checkpoint
        train_time = time.perf_counter() - t0
        result.train_seconds += train_time
        result.train_samples += n
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": sums.loss_sum.item() / n,
            "train_accuracy": sums.correct.item() / n,
        }
        row["val_loss"], row["val_accuracy"] = evaluate(
            model, data.x_val, data.y_val, spec.eval_batch_size
        )
        row["lr"], row["lr_mean"] = lrs[0], sum(lrs) / len(lrs)
        row.update(tricks.epoch_metrics())
        if spec.on_nonfinite == "skip_step":
            row["skipped_steps"] = watch.skipped
        row["seconds"] = time.perf_counter() - t0
        result.history.append(row)
        on_epoch_end(row)
        reporter.epoch_end(row, samples_per_second=n / train_time)
        scheduler.after_epoch(row)
        stop = bool(len(data.x_val)) and stopper.update(epoch, row, model)
        result.stopped_early = stop
        interrupted = parallel.agree(INTERRUPT.requested)
        if keeper.due(epoch, final=stop or epoch == spec.epochs) or interrupted:
            keeper.save(Position(epoch + 1), parts_state, generator, result, stopper.best_epoch)
        if interrupted:
            raise INTERRUPT.error(keeper.last)
        if stop:
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    result.best_epoch = stopper.best_epoch
    if result.best_epoch:
        result.best_val_accuracy = max(r["val_accuracy"] for r in result.history)
    return result
