"""The three training loops the benchmark times, built for the same model, optimizer, batches
and data order, so they compute the same losses (tests/bench/test_bench.py checks that):

(a) `TorchvisionLoop`: the usual hand-written loop: torchvision's FashionMNIST Dataset with
    ToTensor, a Subset for the training split, a DataLoader (num_workers=0), nn.Sequential, Adam.
(b) `TensorLoop`: the fast hand-written loop: the split preloaded as one float tensor, batches by
    index from a permutation, the same nn.Sequential and Adam.
(c) `DnntrickLoop`: dnntrick's production path: build_model, build_optimizer, make_step and
    loop.train_epoch, exactly what `dnntrick train` runs for each epoch.

Each loop's `run(n_batches)` trains on the next n_batches batches of its own endless stream of
epochs (a new permutation from its own seeded generator at each epoch start) and returns the mean
training loss over them, read once at the end.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dnntrick.data.datasets import FILES, Splits, load_arrays, load_splits, write_idx
from dnntrick.spec.schema import Spec
from dnntrick.training.checkpoint import Checkpointer
from dnntrick.training.guard import FiniteWatch
from dnntrick.training.loop import train_epoch
from dnntrick.training.model import build_model
from dnntrick.training.report import Reporter
from dnntrick.training.step import StepParts, make_step
from dnntrick.tricks.optimizers import build_optimizer
from dnntrick.tricks.regularization import StepTricks


@dataclass(frozen=True)
class Setup:
    """What all three loops share: data set, widths, batch size, seed (the book's MLP by default:
    784-300-100-10 ELU, He-normal init, Adam lr 0.001, Fashion-MNIST minus the last 5000)."""

    hidden: tuple[int, ...] = (300, 100)
    batch_size: int = 50
    seed: int = 42
    root: str | None = None  # folder of the IDX files; None = dnntrick's lookup
    val_size: int = 5000
    lr: float = 0.001
    overrides: dict[str, object] = field(default_factory=dict)

    def spec(self) -> Spec:
        return Spec.model_validate(
            {
                "name": "bench",
                "seed": self.seed,
                "device": "cpu",
                "data": {
                    "dataset": "fashion-mnist",
                    "root": self.root,
                    "val_size": self.val_size,
                    "val_from": "last",
                },
                "model": {"hidden": list(self.hidden), "activation": "elu", "init": "he_normal"},
                "train": {
                    "batch_size": self.batch_size,
                    "optimizer": {"name": "adam", "lr": self.lr},
                    **self.overrides,
                },
            }
        )


def dnntrick_model(setup: Setup, splits: Splits) -> nn.Module:
    """dnntrick's MLP, initialized from the setup's seed (the same weights for every loop)."""
    spec = setup.spec()
    torch.manual_seed(spec.seed)
    return build_model(spec.model, splits.in_features, splits.n_classes)


def plain_mlp(setup: Setup, splits: Splits) -> nn.Sequential:
    """The hand-written model: nn.Sequential(Linear, ELU, …, Linear) with dnntrick's init."""
    layers: list[nn.Module] = []
    width = splits.in_features
    for units in setup.hidden:
        layers += [nn.Linear(width, units), nn.ELU()]
        width = units
    layers.append(nn.Linear(width, splits.n_classes))
    plain = nn.Sequential(*layers)
    source = [m for m in dnntrick_model(setup, splits).modules() if isinstance(m, nn.Linear)]
    targets = [m for m in plain if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for src, dst in zip(source, targets, strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return plain


def permutations(n: int, seed: int) -> Iterator[torch.Tensor]:
    """An endless stream of epoch permutations, drawn as dnntrick's fit() draws them."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randperm(n, generator=generator)


class SeededSampler(torch.utils.data.Sampler[int]):
    """The DataLoader's shuffle, but from the same generator stream as (b) and (c)."""

    def __init__(self, n: int, seed: int):
        self.n, self.stream = n, permutations(n, seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(next(self.stream).tolist())


class TensorLoop:
    """(b) The whole training split as one float tensor; batches are index slices."""

    name = "tensor"
    samples = 0  # trained on so far

    def __init__(self, setup: Setup, splits: Splits):
        self.x, self.y, self.bs = splits.x_train, splits.y_train, setup.batch_size
        self.model = plain_mlp(setup, splits)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=setup.lr)
        self.batches = self._batches(permutations(len(self.x), setup.seed))

    def _batches(self, stream: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        for order in stream:
            yield from order.split(self.bs)

    def run(self, n_batches: int) -> float:
        model, optimizer = self.model, self.optimizer
        loss_sum, seen = torch.zeros(()), 0
        for _ in range(n_batches):
            idx = next(self.batches)
            xb, yb = self.x[idx], self.y[idx]
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        self.samples += seen
        return loss_sum.item() / seen


def torchvision_root(setup: Setup, folder: Path) -> Path:
    """Write the data set's decoded arrays as raw IDX files in the layout torchvision's
    FashionMNIST(root) expects (root/FashionMNIST/raw/…, uncompressed); returns root."""
    arrays = load_arrays("fashion-mnist", setup.root)
    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for key, stem in FILES.items():
        write_idx(raw / stem, np.asarray(arrays[key]))
    return folder


class TorchvisionLoop:
    """(a) torchvision.datasets.FashionMNIST + ToTensor per sample + DataLoader, the usual way."""

    name = "torchvision"
    samples = 0

    def __init__(self, setup: Setup, splits: Splits, root: Path):
        from torchvision import datasets, transforms

        full = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
        n_train = len(full) - setup.val_size  # val_from: last, as in (b) and (c)
        train = torch.utils.data.Subset(full, range(n_train))
        self.loader = torch.utils.data.DataLoader(
            train,
            batch_size=setup.batch_size,
            sampler=SeededSampler(n_train, setup.seed),
            num_workers=0,
        )
        self.model = plain_mlp(setup, splits)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=setup.lr)
        self.batches = self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.loader

    def run(self, n_batches: int) -> float:
        model, optimizer = self.model, self.optimizer
        loss_sum, seen = torch.zeros(()), 0
        for _ in range(n_batches):
            xb, yb = next(self.batches)
            loss = F.cross_entropy(model(xb.flatten(1)), yb)  # [B, 1, 28, 28] -> [B, 784]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(yb)
            seen += len(yb)
        self.samples += seen
        return loss_sum.item() / seen


class DnntrickLoop:
    """(c) dnntrick's production step and epoch loop (loop.train_epoch over make_step)."""

    name = "dnntrick"
    samples = 0

    def __init__(self, setup: Setup, splits: Splits):
        spec = setup.spec()
        self.bs, self.train_spec = setup.batch_size, spec.train
        self.model = dnntrick_model(setup, splits)
        self.optimizer = build_optimizer(spec.train.optimizer, self.model.parameters(), "cpu")
        # the hooks fit() builds around the step: tricks (none are on here) and the finite check
        tricks = StepTricks(self.model, spec.train)
        steps = -(-len(splits.x_train) // self.bs)
        watch = FiniteWatch(
            spec.train.on_nonfinite, self.model, self.optimizer, steps, Checkpointer(None)
        )
        parts = StepParts(self.model, self.optimizer, tricks=tricks, watch=watch)
        self.step = make_step(parts, splits.x_train, splits.y_train, spec.train)
        self.reporter = Reporter()
        self.stream = permutations(len(splits.x_train), setup.seed)
        self.order = next(self.stream)
        self.pos = 0  # next unused position in self.order (a multiple of the batch size)

    def run(self, n_batches: int) -> float:
        self.model.train()
        loss_sum, seen = 0.0, 0
        while n_batches > 0:
            if self.pos >= len(self.order):
                self.order, self.pos = next(self.stream), 0
            take = min(n_batches * self.bs, len(self.order) - self.pos)  # within this epoch
            segment = self.order[self.pos : self.pos + take]
            self.step.sums.set(torch.zeros(()), torch.zeros((), dtype=torch.long))
            train_epoch(self.step, segment, self.bs, self.reporter)
            loss_sum += self.step.sums.loss_sum.item()
            seen += len(segment)
            self.pos += take
            n_batches -= (take + self.bs - 1) // self.bs
        self.samples += seen
        return loss_sum / seen


def build_loops(
    setup: Setup, splits: Splits | None = None, workdir: Path | None = None
) -> list[TorchvisionLoop | TensorLoop | DnntrickLoop]:
    """The three loops (a), (b), (c) for `setup`; torchvision's files go under `workdir`."""
    splits = splits or load_splits(setup.spec().data, "cpu")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="dnntrick-bench-"))
    root = workdir / "torchvision"
    if not (root / "FashionMNIST" / "raw" / FILES["train_images"]).is_file():
        torchvision_root(setup, root)
    return [
        TorchvisionLoop(setup, splits, root),
        TensorLoop(setup, splits),
        DnntrickLoop(setup, splits),
    ]
