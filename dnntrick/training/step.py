"""One training step, in one function: `train_step`.

    forward → loss (+ ℓ1/ℓ2 penalty) → finite check → backward → clip → optimizer step → max-norm
    → add to the running sums

Everything that trains calls it: the epoch loop (eagerly, or captured once in a CUDA graph and
replayed), autoencoder pretraining (with a reconstruction loss) and the lr range test.
`dnntrick diagnose` uses its first half, `forward_loss`, without the update.

Rules for code that joins the step (the hooks of tricks/regularization.StepTricks: penalty,
clipping, max-norm) so that it works captured in a CUDA graph too:
- no reads back to the host (no .item(), no `if tensor:`), and running state kept in device
  tensors changed in place: a graph records the step once and replays it, so Python-side counters
  would not advance and a host read is an error;
- work between steps (lr schedules) changes tensors the graph reads in place: training/lr.set_lr
  fills a tensor lr (the optimizer is built with capturable=True under graphs);
- augmentation draws from its own generator per batch: eager steps only (the spec refuses
  data.augment with train.cuda_graphs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from dnntrick.errors import UsageError

if TYPE_CHECKING:
    from dnntrick.spec.schema import TrainSpec
    from dnntrick.training.guard import FiniteWatch
    from dnntrick.tricks.regularization import StepTricks

Forward = Callable[[torch.Tensor], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepParts:
    """What every step of a run uses. `forward` is the model (under torchrun, its DDP wrapper);
    `loss` maps (outputs, targets) to the batch's mean loss."""

    forward: Forward
    optimizer: torch.optim.Optimizer
    loss: Loss = field(default_factory=lambda: F.cross_entropy)  # looked up when built
    tricks: StepTricks | None = None
    watch: FiniteWatch | None = None
    precision: str = "fp32"


class Sums:
    """The epoch's running sums as 0-d device tensors: loss_sum (float32, Σ batch mean loss ×
    batch size) and correct (int64). Changed in place, so a captured graph adds into them too;
    read them once per epoch (a read is a host-device sync)."""

    def __init__(self, device: torch.device, count_correct: bool = True):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.count_correct = count_correct

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss_sum.add_(loss.detach(), alpha=len(targets))
        if self.count_correct:
            self.correct.add_((outputs.detach().argmax(dim=1) == targets).sum())

    def set(self, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        """Start from these values (zeros, or a mid-epoch checkpoint's), copied in place."""
        self.loss_sum.copy_(loss_sum)
        self.correct.copy_(correct)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16: matmuls in bfloat16, weights and optimizer in float32. The cast cache is off
    because a CUDA graph must not keep casts made during capture."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def forward_loss(
    forward: Forward,
    loss_fn: Loss,
    xb: torch.Tensor,
    yb: torch.Tensor,
    tricks: StepTricks | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, loss) of one batch: the forward pass and the loss with its penalty."""
    with autocast(precision, xb.device):
        outputs = forward(xb)
    loss = loss_fn(outputs.float(), yb)  # a float32 loss under bf16 too
    if tricks is not None:
        loss = tricks.add_penalty(loss)
    return outputs, loss


def train_step(
    parts: StepParts,
    xb: torch.Tensor,
    yb: torch.Tensor,
    sums: Sums | None = None,
    epoch: int = 1,
    index: int = 0,
) -> torch.Tensor:
    """One optimizer step on the batch xb [B, F], yb [B] (step `index` of `epoch`, for the finite
    check's messages); returns the batch's loss, a device tensor."""
    outputs, loss = forward_loss(parts.forward, parts.loss, xb, yb, parts.tricks, parts.precision)
    if parts.watch is not None and parts.watch.skip(loss, epoch, index):
        return loss  # skip_step: no update, and the loss stays out of the sums
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if parts.tricks is not None:
        parts.tricks.clip_gradients()  # also adds the pre-clip global norm to device sums
    parts.optimizer.step()
    if parts.tricks is not None:
        parts.tricks.apply_max_norm()
    if sums is not None:
        sums.add(loss, outputs, yb)
    return loss


class EagerStep:
    """step(idx, index): train_step on the rows x[idx], y[idx] of the device-resident split
    (x [N, F], y [N]); augmented when `augment` is given. `shard` (torchrun only) picks this
    rank's share of each global batch."""

    def __init__(
        self,
        parts: StepParts,
        x: torch.Tensor,
        y: torch.Tensor,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        shard: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.parts, self.x, self.y, self.augment, self.shard = parts, x, y, augment, shard
        self.sums = Sums(x.device)
        self.epoch = 1

    def __call__(self, idx: torch.Tensor, index: int = 0) -> None:
        if self.shard is not None:
            idx = self.shard(idx)
        xb = torch.index_select(self.x, 0, idx)  # 5× faster than x[idx] on the CPU
        if self.augment is not None:
            xb = self.augment(xb)
        train_step(self.parts, xb, torch.index_select(self.y, 0, idx), self.sums, self.epoch, index)


class GraphStep(EagerStep):
    """train_step captured in a CUDA graph for full batches of `batch_size`: one launch per step
    instead of a few dozen kernel launches, which is what bounds a small MLP at small batches.

    The first WARMUP full batches are ordinary steps run on a side stream (capture needs the
    optimizer state and autograd's workspaces to exist); the next batch is captured and from then
    on every full batch replays the graph. Inside the graph the batch is gathered by index_select
    from a static index buffer into static input buffers, so a replay only needs the indices
    copied in. A smaller last batch runs eagerly with the same model and optimizer. The finite
    check runs after each replay on the step's (static) loss: on_nonfinite stop still stops at
    the first non-finite loss; skip_step, which must decide before the update, is refused.
    """

    WARMUP = 3

    def __init__(self, parts: StepParts, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        super().__init__(parts, x, y)
        self.batch_size = batch_size
        device = x.device
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.xb = torch.empty((batch_size, *x.shape[1:]), dtype=x.dtype, device=device)
        self.yb = torch.empty(batch_size, dtype=y.dtype, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss = torch.zeros((), device=device)  # the captured step's loss output
        self.warmed = 0
        # inside the graph no host read may happen: the check runs after each replay
        self.unwatched = StepParts(
            parts.forward, parts.optimizer, parts.loss, parts.tricks, None, parts.precision
        )

    def captured_body(self) -> torch.Tensor:
        """What the graph records: gather the batch of self.idx into the static buffers, then
        train_step. Eager when called outside a capture (the warm-up, and the CPU test)."""
        torch.index_select(self.x, 0, self.idx, out=self.xb)
        torch.index_select(self.y, 0, self.idx, out=self.yb)
        return train_step(self.unwatched, self.xb, self.yb, self.sums)

    def __call__(self, idx: torch.Tensor, index: int = 0) -> None:
        if len(idx) != self.batch_size:
            return super().__call__(idx, index)
        self.idx.copy_(idx, non_blocking=True)
        device = self.x.device
        if self.graph is None:
            if self.warmed < self.WARMUP:
                side = torch.cuda.Stream(device=device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    loss = self.captured_body()
                torch.cuda.current_stream(device).wait_stream(side)
                self.warmed += 1
                self._check(loss, index)
                return None
            self.graph = torch.cuda.CUDAGraph()
            self.parts.optimizer.zero_grad(set_to_none=True)  # grads then live in the graph
            with torch.cuda.graph(self.graph):  # records, does not run: the replay below runs it
                self.loss = self.captured_body()
        self.graph.replay()
        self._check(self.loss, index)
        return None

    def _check(self, loss: torch.Tensor, index: int) -> None:
        if self.parts.watch is not None:
            self.parts.watch.skip(loss, self.epoch, index)  # stop mode: records on the device


def make_step(
    parts: StepParts,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: TrainSpec,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    shard: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EagerStep:
    """The step `spec` asks for: captured in a CUDA graph when train.cuda_graphs, else eager."""
    if spec.cuda_graphs:
        if x.device.type != "cuda":
            raise UsageError(
                f"train.cuda_graphs: needs a CUDA device (the run is on {x.device}); "
                "set device: cuda or train.cuda_graphs: false"
            )
        return GraphStep(parts, x, y, spec.batch_size)
    return EagerStep(parts, x, y, augment, shard)
