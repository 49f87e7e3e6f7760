"""Data-parallel training under torchrun: `torchrun --nproc-per-node N -m dnntrick train SPEC`.

torchrun starts N copies of `dnntrick train` and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT. Each copy (rank):
- joins the process group (gloo on the CPU, nccl on CUDA, one GPU per rank: cuda:LOCAL_RANK);
- holds the whole data set and draws the same data order (the same seed), then trains on its
  1/N share of every global batch: train.batch_size stays the GLOBAL batch size, so N ranks take
  the same optimizer steps as one process;
- wraps the model in DistributedDataParallel, which averages the gradients of the shares. A share
  larger or smaller than 1/N (the last, uneven batch) has its gradient weighted by its size, so the
  averaged gradient is the global batch's mean gradient, as in one process;
- evaluates its share of the validation/test rows; loss and correct sums are all-reduced;
- rank 0 alone prints and writes the run directory; the other ranks' RunDir writes nothing.
Without torchrun (WORLD_SIZE unset or 1) every hook here does nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dnntrick.errors import DnntrickError, UsageError
from dnntrick.spec.schema import TrainSpec
from dnntrick.training.report import Reporter
from dnntrick.training.rundir import RunDir

AGREE_EVERY = 10  # steps between the ranks' checks for an interrupt (a tiny all-reduce)


def launched() -> bool:
    """True inside a multi-process torchrun launch."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the duration (nothing outside torchrun). `device`: the
    spec's resolved device; CUDA means nccl and this rank's GPU, else gloo."""
    if not launched():
        yield
        return
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise UsageError(
                f"WORLD_SIZE is set but {name} is not: start data-parallel runs with "
                "`torchrun --nproc-per-node N -m dnntrick train SPEC`"
            )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on CUDA, each rank trains on its own GPU: cuda:LOCAL_RANK."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def describe() -> dict[str, str]:
    """The launch, for the run header and summary ({} in one process)."""
    if not active():
        return {}
    return {"ranks": f"{world_size()} ({dist.get_backend()})"}


def check(spec: TrainSpec, n: int) -> None:
    """What torchrun cannot run, refused before the run directory exists."""
    if world_size() > 1 and spec.cuda_graphs:  # DDP's gradient all-reduce is not in the graph
        raise UsageError(
            "train.cuda_graphs: not supported under torchrun; set train.cuda_graphs: false"
        )
    check_batches(n, spec.batch_size)


def check_batches(n: int, batch_size: int) -> None:
    """Every rank needs a row of every batch: a last batch smaller than the rank count can't be
    shared (an empty share has no mean loss)."""
    last = n % batch_size
    if 0 < last < world_size():
        raise UsageError(
            f"train.batch_size {batch_size} leaves a last batch of {last} image(s) for "
            f"{world_size()} ranks; pick a batch size that leaves at least one per rank"
        )


def seed_ranks(seed: int) -> None:
    """Ranks > 0 draw dropout masks from their own stream (rank 0 keeps the one-process stream);
    the weights were already drawn, identically, from `seed` on every rank."""
    if rank() > 0:
        torch.manual_seed(seed * 1_000_003 + rank())


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` on the way back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class DataParallel:
    """The training loop's view of the ranks: `forward` (the model itself in one process, its
    DDP wrapper under torchrun), `shard` a global batch, `sum` running sums across ranks, `agree`
    on a flag. In one process the step gets the model itself and no shard: nothing of this runs
    inside it."""

    def __init__(self, model: nn.Module):
        self.model, self.ranks, self.weight = model, world_size(), 1.0
        self.forward: Callable[[torch.Tensor], torch.Tensor] = model
        if self.ranks > 1:
            device = next(model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
            self.forward = self.weighted_forward

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of the global batch `idx` [B] (torchrun only)."""
        mine = idx.tensor_split(self.ranks)[rank()]
        # DDP averages the shares' mean gradients; weighting each by its size × ranks / B makes
        # that average the global batch's mean gradient (weight 1 when B divides evenly)
        self.weight = len(mine) * self.ranks / len(idx)
        return mine

    def weighted_forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.ddp(x)
        return logits if self.weight == 1.0 else _ScaleGrad.apply(logits, self.weight)

    def sum(self, *sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return sum_across(*sums)

    def agreed_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss every rank's finite check sees: the mean of the ranks' losses (NaN if any
        is), so all ranks skip or stop at the same step (the finite watch calls it under
        torchrun)."""
        return sum_across(loss.detach().clone())[0] / self.ranks

    def agree(self, flag: bool, step: int | None = None) -> bool:
        """Whether any rank raised `flag` (e.g. an interrupt). Ranks compare every
        AGREE_EVERY steps and at each epoch end (`step` None), so they all stop at one place."""
        if self.ranks == 1:
            return flag
        if step is not None and (step + 1) % AGREE_EVERY:
            return False
        device = next(self.model.parameters()).device
        votes = torch.tensor(int(flag), device=device)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return bool(votes.item())

    def resumed_sums(self, *sums: torch.Tensor) -> None:
        """A checkpoint taken mid-epoch holds the sums of all ranks: rank 0 carries them on,
        the others start from zero (they are summed again at the epoch end)."""
        if self.ranks > 1 and rank() > 0:
            for tensor in sums:
                tensor.zero_()


def sum_across(*sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All-reduce (sum) each tensor over the ranks, in place; returns them (as given alone)."""
    if active():
        for tensor in sums:
            dist.all_reduce(tensor)
    return sums


def eval_share(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of evaluation rows x [N, F], y [N] (all of them in one
    process). Batch norm's running statistics are rank 0's (DDP syncs them only at each forward,
    and each rank then updates them on its own share): they are broadcast first."""
    if not active():
        return x, y
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    me, ranks = rank(), world_size()
    return x.tensor_split(ranks)[me], y.tensor_split(ranks)[me]


class SilentRunDir(RunDir):
    """The run directory as ranks > 0 see it: rank 0's path, nothing written."""

    def write_spec(self, spec_yaml: str, source: str | None, overrides: list[str]) -> None: ...

    def append_metrics(self, row: dict[str, Any]) -> None: ...

    def restore_metrics(self, rows: list[dict[str, Any]]) -> None: ...

    def write_summary(self, summary: dict[str, Any]) -> None: ...

    def write_stopped(self, status: str, message: str) -> None: ...

    def save_weights(
        self, state: dict[str, Any], metadata: dict[str, str] | None = None
    ) -> None: ...

    def save_preprocessing(self, divisor: float, mean: Any = None, std: Any = None) -> None: ...


def main_run_dir(make: Callable[[], Path]) -> RunDir:
    """Rank 0 creates the run directory; the others learn its path (or rank 0's error)."""
    if not active():
        return RunDir(make())
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = make()
        except DnntrickError as err:
            box[0] = err
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], DnntrickError):
        raise box[0]
    return RunDir(box[0]) if is_main() else SilentRunDir(box[0])


class _Rank0Progress(Reporter):
    """Rank 0's reporter: its running loss covers its 1/N share of the rows seen so far."""

    def __init__(self, inner: Reporter, ranks: int):
        self.inner, self.ranks = inner, ranks

    def start(self, title: str, details: dict[str, Any]) -> None:
        self.inner.start(title, details)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.inner.epoch_start(epoch, epochs, steps)

    def progress(self, step: int, samples_per_second: float, loss: float) -> None:
        self.inner.progress(step, samples_per_second, loss * self.ranks)  # ≈ the global mean

    def epoch_end(self, row: dict[str, Any], samples_per_second: float) -> None:
        self.inner.epoch_end(row, samples_per_second)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def finish(self, summary: dict[str, Any]) -> None:
        self.inner.finish(summary)


def rank_reporter(reporter: Reporter) -> Reporter:
    """Rank 0 reports (its progress loss scaled to the whole batch); the other ranks are silent."""
    if not active():
        return reporter
    return _Rank0Progress(reporter, world_size()) if is_main() else Reporter()
