"""What a run needs, built from a spec in one place: device, data, model, prepare hook
(transfer or pretraining), optimizer, data-order generator and augmenter.

`dnntrick train` (dnntrick/runner.py), `diagnose` and `lr-find` all start here, so a probe or a
range test sees exactly the weights and data a run of the same spec and seed would. Everything
that can fail on bad input happens here, before any run directory exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from dnntrick.data.datasets import Splits, load_splits
from dnntrick.errors import UsageError
from dnntrick.spec.limits import Sizes, check_start
from dnntrick.spec.schema import Spec
from dnntrick.training import distributed
from dnntrick.training.guard import set_determinism
from dnntrick.training.model import build_model
from dnntrick.training.report import Reporter
from dnntrick.tricks.augment import Augmenter, build_augmenter
from dnntrick.tricks.optimizers import build_optimizer


@dataclass
class Prepared:
    """What the loop trains once a prepare hook (transfer, pretraining) has set the model up.

    `model` may be a suffix of the built model (sharing its layers) and `data` its cached inputs.
    """

    model: torch.nn.Module
    data: Splits
    summary: dict[str, Any] = field(default_factory=dict)  # extra keys for summary.json
    after_epoch: Callable[[int, torch.optim.Optimizer], None] | None = None


# A prepare hook: (spec, the built model, its data, reporter) -> what the loop trains
Prepare = Callable[[Spec, torch.nn.Module, Splits, Reporter], Prepared]


@dataclass
class Built:
    """A spec's run, ready to train. `model` is the whole model (what is saved); `prepared` is
    what trains (the model itself, or a transfer's trainable suffix on its cached inputs)."""

    spec: Spec
    device: torch.device
    data: Splits
    model: torch.nn.Module
    prepared: Prepared
    optimizer: torch.optim.Optimizer | None  # None when built for a probe (no training)
    generator: torch.Generator  # the data order: its own stream, seeded by spec.seed
    augment: Augmenter | None
    warnings: list[str] = field(default_factory=list)  # start-up warnings, for the reporter


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu. Asking for an absent device is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r}: CUDA is not available here; use device: cpu (or auto)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name!r}: MPS is not available here; use device: cpu")
    return device


# `train.threads: auto` on its own: one thread, at every batch size. On a 2-vCPU VM
# (bench/README.md#threads) the book's MLP ran 1.37x / 1.65x / 1.86x as fast with 2 threads as
# with 1 at batch 50 / 200 / 1000 on idle cores, 0.47x-0.78x with two busy processes beside it
# and 0.06x-0.14x on very busy cores (OpenMP's threads wait for descheduled ones): a gain when
# the machine is idle against a many-fold loss when it is not; and one count whatever the load
# keeps a run's numbers the same (thread counts change sums in the last bits).
AUTO_THREADS = 1


def resolve_threads(setting: int | Literal["auto"], inherited: int | None = None) -> int:
    """The torch thread count of a run: an explicit train.threads wins. `auto` keeps a count
    that the process's launcher chose: `inherited` (compare's workers pass theirs), the
    OMP_NUM_THREADS torch started with, torchrun's ranks; else AUTO_THREADS."""
    if setting != "auto":
        return int(setting)
    if inherited is not None:
        return inherited
    if os.environ.get("OMP_NUM_THREADS") or distributed.launched():
        return torch.get_num_threads()
    return AUTO_THREADS


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """torch's intra-op thread count set to `n` inside the block and put back after it (a
    notebook's own torch work keeps its threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def check_batch_norm_batches(spec: Spec, n: int) -> None:
    """Batch norm in training needs two rows per batch (the variance of one is undefined): a
    batch size of 1, or a last batch of 1, is refused before anything runs."""
    bs = spec.train.batch_size
    if spec.model.norm is None or not (bs == 1 or n % bs == 1 or n == 1):
        return
    raise UsageError(
        f"model.norm: batch norm needs at least 2 images per training batch, but "
        f"train.batch_size {bs} with {n:,} training images leaves a batch of 1; pick another "
        "train.batch_size (or data.train_limit)"
    )


def build(
    spec: Spec,
    reporter: Reporter | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    prepare: Prepare | None = None,
    train: bool = True,
) -> Built:
    """Build `spec`'s run. `arrays`: the data set's decoded arrays when the caller has them
    already (e.g. from Ray's object store), else read from disk. `prepare` (the runner passes the
    spec's transfer/pretrain hook) runs after the model is built. train=False builds for a probe:
    no prepare hook, no optimizer (building one imports torch._dynamo, about a second)."""
    set_determinism(spec.train.deterministic)  # before CUDA starts (cuBLAS reads its env once)
    device = distributed.local_device(resolve_device(spec.device))
    if train and spec.train.cuda_graphs and device.type != "cuda":  # auto found no GPU
        raise UsageError(
            f"train.cuda_graphs: needs a CUDA device (device {spec.device!r} is {device}); "
            "set train.cuda_graphs: false"
        )
    torch.manual_seed(spec.seed)  # weights (and any dropout) draw from torch's global RNG
    data = load_splits(spec.data, device, arrays)
    sizes = Sizes(
        len(data.x_train), len(data.x_val), len(data.x_test), data.in_features, data.n_classes
    )
    warnings = check_start(spec, sizes, str(device))  # memory, time, lr: before allocating
    check_batch_norm_batches(spec, len(data.x_train))
    model = build_model(spec.model, data.in_features, data.n_classes).to(device)
    prepared = prepare(spec, model, data, reporter or Reporter()) if prepare and train else None
    prepared = prepared or Prepared(model, data)
    optimizer = None
    if train:
        trainable = [p for p in prepared.model.parameters() if p.requires_grad]  # frozen: out
        optimizer = build_optimizer(
            spec.train.optimizer, trainable, device.type, capturable=spec.train.cuda_graphs
        )
    generator = torch.Generator().manual_seed(spec.seed)  # data order: its own stream
    augment = build_augmenter(
        spec.data.augment, data.in_features, spec.seed, device, data.pixel_mean, data.pixel_std
    )
    return Built(spec, device, data, model, prepared, optimizer, generator, augment, warnings)
