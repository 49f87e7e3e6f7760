"""What keeps a run safe while it trains: the non-finite loss watch and deterministic mode; the
Ctrl-C/SIGTERM handling lives in signals.py (torch-free) and is re-exported here. The loop
touches each in one line; the logic lives here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dnntrick.errors import DivergedError
from dnntrick.training.signals import INTERRUPT as INTERRUPT  # re-exported: the loop's import
from dnntrick.training.signals import Interrupt as Interrupt
from dnntrick.training.signals import signals_caught as signals_caught

POLL_INTERVAL_S = 0.25  # how often, on a GPU, the non-finite record is read (a sync point)


def grad_norm(model: nn.Module) -> float | None:
    """Total L2 norm of the gradients now held by `model`, None before the first backward."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0))


class FiniteWatch:
    """Finds the first non-finite loss and stops there (`stop`) or skips its update (`skip_step`).

    `stop` never adds a sync: on the CPU reading the loss is free, so every step is checked; on a
    GPU the step of the first bad loss and the last finite loss are recorded on the device and
    read at most every POLL_INTERVAL_S and at each epoch end, before anything is written — the
    reported step is exact, though a few more (discarded) steps may have run. `skip_step` must
    decide before the update, so on a GPU it reads every loss: one sync per step.
    """

    def __init__(self, mode: str, model: nn.Module, optimizer: Any, steps: int, keeper: Any):
        self.mode, self.model, self.optimizer, self.steps, self.keeper = (
            mode,
            model,
            optimizer,
            steps,
            keeper,
        )
        self.device = next(model.parameters()).device
        self.host_reads = self.device.type == "cpu" or mode == "skip_step"
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.bad_loss = torch.zeros((), device=self.device)
        self.last_finite = torch.full((), math.nan, device=self.device)
        self.next_poll = 0.0
        self.skipped = 0  # steps skipped in the current epoch (skip_step)
        self.seen = 0  # the global step whose loss was looked at last
        # torchrun: the ranks' mean loss, so that every rank skips or stops at the same step
        self.agree: Callable[[torch.Tensor], torch.Tensor] | None = None

    def skip(self, loss: torch.Tensor, epoch: int, step: int) -> bool:
        """Look at this step's loss; True when its update must be skipped. Raises DivergedError
        in `stop` mode once the first non-finite loss is seen."""
        at = self.seen = (epoch - 1) * self.steps + step + 1  # global step, 1-based
        if self.agree is not None:
            loss = self.agree(loss)
        if self.host_reads:
            value = loss.item()  # CPU: a plain read; GPU skip_step: the documented sync
            if math.isfinite(value):
                self.last_finite.fill_(value)
                return False
            if self.mode == "skip_step":
                self.skipped += 1
                return True
            self.first_bad.fill_(at)
            self.bad_loss.fill_(value)
            self.check(mid_step=True)
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        new_bad = ~finite & (self.first_bad < 0)
        self.first_bad = torch.where(new_bad, at, self.first_bad)
        self.bad_loss = torch.where(new_bad, loss, self.bad_loss)
        self.last_finite = torch.where(finite & (self.first_bad < 0), loss, self.last_finite)
        if (now := time.perf_counter()) >= self.next_poll:
            self.next_poll = now + POLL_INTERVAL_S
            self.check(mid_step=True)
        return False

    def check(self, mid_step: bool = False) -> None:
        """Raise DivergedError if a non-finite loss has been recorded (reads the device), or if
        skip_step skipped every step of the epoch. `mid_step`: called between this step's loss
        and its backward, so the gradients held are the previous step's."""
        if self.mode == "skip_step" and self.skipped >= self.steps:
            raise DivergedError(
                f"training diverged: every step of epoch {self.seen // self.steps} had a "
                "non-finite loss (train.on_nonfinite: skip_step); try a lower lr, gradient "
                "clipping or another init"
            )
        first = int(self.first_bad.item())
        if first < 0:
            return
        epoch, step = divmod(first - 1, self.steps)
        norm = grad_norm(self.model)
        lr = self.optimizer.param_groups[0]["lr"]
        last = self.last_finite.item()
        grad_step = self.seen - 1 if mid_step else self.seen
        grads = (
            "no gradient yet" if norm is None else f"gradient norm {norm:.3g} at step {grad_step}"
        )
        kept = (
            f"; the last good checkpoint {self.keeper.last} is untouched"
            if self.keeper.last
            else ""
        )
        raise DivergedError(
            f"training diverged: loss {self.bad_loss.item()} at step {first} (epoch {epoch + 1}, "
            f"step {step + 1} of {self.steps}); last finite loss {last:.4g}, lr {lr:g}, {grads}; "
            "try a lower lr, gradient clipping or another init" + kept
        )


def set_determinism(on: bool) -> None:
    """train.deterministic for this process: deterministic kernels only (an error where none
    exists), cuDNN autotuning off, cuBLAS's fixed workspace. Bitwise repeatable on the same
    machine and software, not across devices or versions. Off restores PyTorch's defaults."""
    if on:
        # cuBLAS reads this once, when CUDA starts: set it before any tensor reaches the GPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    if on or torch.are_deterministic_algorithms_enabled():  # the setter imports torch._inductor
        torch.use_deterministic_algorithms(on)  # (~1 s): only when the flag changes
    torch.backends.cudnn.deterministic = on
