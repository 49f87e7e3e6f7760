"""The training loop's early stopping: start_from_epoch, and restore_best restoring bitwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dnntrick.data.datasets import load_splits
from dnntrick.spec.schema import DataSpec, ModelSpec, TrainSpec
from dnntrick.training.loop import fit
from dnntrick.training.model import build_model
from dnntrick.training.report import Reporter
from dnntrick.tricks.optimizers import build_optimizer


def train(tiny_root: Path, early_stopping: dict[str, Any], epochs: int = 12):
    """fit() on the tiny set, with a snapshot of the weights at the end of every epoch."""
    data = load_splits(DataSpec(root=str(tiny_root), val_size=100))
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[16]), data.in_features, data.n_classes)
    spec = TrainSpec(
        epochs=epochs,
        batch_size=50,
        optimizer={"name": "momentum", "lr": 0.05},
        early_stopping=early_stopping,
    )
    optimizer = build_optimizer(spec.optimizer, model.parameters(), "cpu")
    snapshots: list[dict[str, torch.Tensor]] = []

    def snapshot(row: dict[str, Any]) -> None:
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    generator = torch.Generator().manual_seed(0)
    result = fit(model, optimizer, data, spec, generator, Reporter(), on_epoch_end=snapshot)
    return result, model, snapshots


def test_restore_best_restores_the_best_epochs_weights_bitwise(tiny_root: Path):
    result, model, snapshots = train(tiny_root, {"patience": 2, "monitor": "val_accuracy"})
    accuracies = [r["val_accuracy"] for r in result.history]
    best = accuracies.index(max(accuracies)) + 1
    assert result.best_epoch == best < len(result.history)
    restored = model.state_dict()
    assert all(torch.equal(restored[k], v) for k, v in snapshots[best - 1].items())
    assert not all(torch.equal(restored[k], v) for k, v in snapshots[-1].items())


def test_without_restore_best_the_last_weights_stay(tiny_root: Path):
    spec = {"patience": 2, "monitor": "val_accuracy", "restore_best": False}
    result, model, snapshots = train(tiny_root, spec)
    assert result.best_epoch < len(result.history)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snapshots[-1].items())


def test_start_from_epoch_ignores_the_first_epochs(tiny_root: Path):
    plain, _, _ = train(tiny_root, {"patience": 1, "monitor": "val_accuracy"})
    late, _, _ = train(tiny_root, {"patience": 1, "monitor": "val_accuracy", "start_from_epoch": 6})
    assert plain.best_epoch <= 6 and len(plain.history) < 8  # stops early without the option
    assert late.best_epoch >= 7  # epochs 1-6 can never be the best
    assert len(late.history) >= 8  # the first epoch watched is 7; patience 1 stops at 8 soonest
