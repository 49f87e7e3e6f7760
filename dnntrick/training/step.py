"""One training step: forward → loss (+ penalty) → finite check → backward → clip → optimizer
step → max-norm → add to the device sums.

`TrainStep` runs it eagerly. `GraphStep` (train.cuda_graphs) captures the same step in a CUDA
graph once and replays it for every full batch: one launch instead of a few dozen kernel launches,
which is what bounds a small MLP at small batch sizes on a GPU.

Rules for code that joins the step (the hooks of regularization.StepTricks: penalty, clipping,
max-norm) so it works under both:
- It must not read tensors back to the host (no .item(), no `if tensor:`) and must keep its
  running state in device tensors changed in place: inside a graph it is recorded once and
  replayed, so Python-side counters would not advance and a host read is an error.
- Work between steps (LR schedules) runs outside the graph and must change tensors the graph
  reads in place: use optimizers.set_lr, which fills a tensor lr (the optimizer is built with
  capturable=True under graphs) instead of replacing it.
- Augmentation (augment.py) draws from its own generator per batch: eager steps only (the spec
  refuses data.augment with train.cuda_graphs).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from dnntrick.spec.schema import TrainSpec
from dnntrick.training.distributed import DataParallel

if TYPE_CHECKING:
    from collections.abc import Callable

    from dnntrick.training.guard import FiniteWatch
    from dnntrick.tricks.regularization import StepTricks


class TrainStep:
    """step(idx): one eager training step on x[idx], y[idx] (x [N, F] and y [N] on the device).

    loss_sum (float32) and correct (int64) are 0-d device tensors summed over the epoch's
    samples; read them once per epoch (reading is a host-device sync).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        precision: str = "fp32",
        tricks: StepTricks | None = None,
        watch: FiniteWatch | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.model, self.optimizer, self.x, self.y = model, optimizer, x, y
        self.tricks, self.watch, self.augment = tricks, watch, augment
        self.epoch = 1  # for the finite check's step numbers
        self.device = x.device
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.precision = precision
        self.parallel = DataParallel(model)  # torchrun: DDP, and this rank's share of each batch

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16: matmuls in bfloat16, weights and optimizer in float32. The cast cache is off
        because a CUDA graph must not keep casts made during capture."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def reset(self) -> None:
        """Zero the sums (in place: a captured graph keeps adding into the same tensors)."""
        self.loss_sum.zero_()
        self.correct.zero_()

    def start_epoch(self, epoch: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        """Begin `epoch` with these sums (zeros, or a mid-epoch checkpoint's), copied in place."""
        self.epoch = epoch
        self.loss_sum.copy_(loss_sum)
        self.correct.copy_(correct)

    def run(
        self, xb: torch.Tensor, yb: torch.Tensor, index: int = 0, watch: FiniteWatch | None = None
    ) -> torch.Tensor:
        """The step itself on one batch (step `index` of the epoch); returns the batch's mean
        loss (a device tensor). `watch` may skip the update of a non-finite loss."""
        tricks = self.tricks
        with self.autocast():
            logits = self.parallel(xb)
        loss = F.cross_entropy(logits.float(), yb)  # float32 loss under bf16 too
        if tricks is not None:
            loss = tricks.add_penalty(loss)
        # torchrun: the check sees all ranks' losses, so every rank skips or stops alike
        if watch is not None and watch.skip(self.parallel.agreed_loss(loss), self.epoch, index):
            return loss  # skip_step: no update, and the loss stays out of the sums
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tricks is not None:
            tricks.clip_gradients()  # also adds the pre-clip global norm to device sums
        self.optimizer.step()
        if tricks is not None:
            tricks.apply_max_norm()
        self.loss_sum.add_(loss.detach(), alpha=len(yb))
        self.correct.add_((logits.detach().argmax(dim=1) == yb).sum())
        return loss

    def __call__(self, idx: torch.Tensor, index: int = 0) -> None:
        idx = self.parallel.shard(idx)  # torchrun: this rank's share of the global batch
        xb = torch.index_select(self.x, 0, idx)  # 5× faster than x[idx] on the CPU
        xb = xb if self.augment is None else self.augment(xb)
        self.run(xb, torch.index_select(self.y, 0, idx), index, self.watch)


class GraphStep(TrainStep):
    """The step captured in a CUDA graph for full batches of `batch_size`.

    The first WARMUP full batches are ordinary steps run on a side stream (capture needs the
    optimizer state and autograd's workspaces to exist); the next batch is captured and then every
    full batch replays the graph. Inside the graph the batch is gathered by index_select from a
    static index buffer into static input buffers, so a replay only needs the indices copied in.
    A smaller last batch runs eagerly with the same model and optimizer. The finite check runs
    after each replay on the step's (static) loss: train.on_nonfinite stop still stops at the
    first non-finite loss; skip_step, which must decide before the update, is refused by the spec.
    """

    WARMUP = 3

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        precision: str = "fp32",
        tricks: StepTricks | None = None,
        watch: FiniteWatch | None = None,
    ):
        super().__init__(model, optimizer, x, y, precision, tricks, watch)
        self.batch_size = batch_size
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.xb = torch.empty((batch_size, *x.shape[1:]), dtype=x.dtype, device=self.device)
        self.yb = torch.empty(batch_size, dtype=y.dtype, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss = torch.zeros((), device=self.device)  # the captured step's loss output
        self.warmed = 0

    def _gather_and_run(self) -> torch.Tensor:
        torch.index_select(self.x, 0, self.idx, out=self.xb)
        torch.index_select(self.y, 0, self.idx, out=self.yb)
        return self.run(self.xb, self.yb)

    def __call__(self, idx: torch.Tensor, index: int = 0) -> None:
        if len(idx) != self.batch_size:
            return super().__call__(idx, index)
        self.idx.copy_(idx, non_blocking=True)
        if self.graph is None:
            if self.warmed < self.WARMUP:
                side = torch.cuda.Stream(device=self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    loss = self._gather_and_run()
                torch.cuda.current_stream(self.device).wait_stream(side)
                self.warmed += 1
                self._check(loss, index)
                return None
            self.graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)  # grads are then allocated in the graph
            with torch.cuda.graph(self.graph):  # records, does not run: the replay below runs it
                self.loss = self._gather_and_run()
        self.graph.replay()
        self._check(self.loss, index)
        return None

    def _check(self, loss: torch.Tensor, index: int) -> None:
        if self.watch is not None:
            self.watch.skip(loss, self.epoch, index)  # stop mode: records on the device


def make_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: TrainSpec,
    tricks: StepTricks | None = None,
    watch: FiniteWatch | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TrainStep:
    """The step `spec` asks for: captured in a CUDA graph when train.cuda_graphs, else eager."""
    if spec.cuda_graphs:
        if x.device.type != "cuda":
            from dnntrick.errors import UsageError

            raise UsageError(
                f"train.cuda_graphs: needs a CUDA device (the run is on {x.device}); "
                "set device: cuda or train.cuda_graphs: false"
            )
        return GraphStep(model, optimizer, x, y, spec.batch_size, spec.precision, tricks, watch)
    return TrainStep(model, optimizer, x, y, spec.precision, tricks, watch, augment)
