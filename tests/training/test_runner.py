"""Training end to end on the tiny data set: the run directory, determinism, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dnntrick.errors import DataError
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from tests.conftest import tiny_overrides, write_spec

SPEC = """\
name: tiny
seed: 3
model: {hidden: [32, 16], activation: elu}
train: {epochs: 3, batch_size: 50, optimizer: {name: adam, lr: 0.003}}
"""
SUMMARY_KEYS = {
    "name",
    "dataset",
    "test_accuracy",
    "test_loss",
    "best_val_accuracy",
    "best_epoch",
    "epochs_run",
    "stopped_early",
    "train_seconds",
    "samples_per_second",
    "parameters",
    "device",
    "seed",
    "versions",
    "git_sha",
}
METRIC_KEYS = {
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "lr_mean",
    "seconds",
}


def run(tmp_path: Path, tiny_root: Path, extra: list[str] | None = None, text: str = SPEC):
    spec = load_spec(write_spec(tmp_path, text), tiny_overrides(tiny_root, 3) + (extra or []))
    return run_spec(spec, out=tmp_path / "runs", overrides=extra or [])


def test_run_directory_files_and_keys(tmp_path: Path, tiny_root: Path):
    result = run(tmp_path, tiny_root, ["train.epochs=3"])
    files = sorted(p.name for p in result.run_dir.iterdir())
    assert files == [
        "checkpoints",
        "metrics.jsonl",
        "model.safetensors",
        "preprocessing.safetensors",
        "spec.yaml",
        "summary.json",
    ]
    from safetensors import safe_open

    with safe_open(str(result.run_dir / "preprocessing.safetensors"), framework="pt") as f:
        assert f.metadata() == {"divisor": "255.0"} and list(f.keys()) == []  # no standardize
    best = f"epoch-{result.summary['best_epoch']:04d}"  # the last and the best epoch are kept
    kept = {p.name for p in (result.run_dir / "checkpoints").iterdir()}
    assert kept == {
        f"{name}.{ext}" for name in {best, "epoch-0003"} for ext in ("pt", "safetensors")
    }
    assert result.run_dir.parent == tmp_path / "runs"
    assert result.run_dir.name.startswith("tiny-")
    rows = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(set(r) == METRIC_KEYS for r in rows)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert (
        summary["epochs_run"] == 3 and summary["parameters"] == 784 * 32 + 32 + 32 * 16 + 16 + 170
    )
    assert summary["overrides"] == ["train.epochs=3"]
    assert summary["test_accuracy"] > 0.5  # the tiny set is easy: chance is 0.1
    weights = load_file(result.run_dir / "model.safetensors")
    assert set(weights) == {
        f"{n}.{p}" for n in ("hidden1", "hidden2", "outputs") for p in ("weight", "bias")
    }
    torch.testing.assert_close(weights["hidden1.weight"], result.model.hidden1.weight.detach())
    spec_text = (result.run_dir / "spec.yaml").read_text()
    assert "overrides: train.epochs=3" in spec_text and "epochs: 3" in spec_text
    assert not list(result.run_dir.glob(".*tmp"))  # atomic writes leave no temp files


def test_same_seed_same_metrics(tmp_path: Path, tiny_root: Path):
    a = run(tmp_path, tiny_root)
    b = run(tmp_path, tiny_root)
    c = run(tmp_path, tiny_root, ["seed=4"])
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.history]
    assert a.run_dir != b.run_dir
    assert a.history[0]["train_loss"] != c.history[0]["train_loss"]


def test_early_stopping_stops_and_restores_best(tmp_path: Path, tiny_root: Path):
    # the tiny set is learnt perfectly within a few epochs: val accuracy stops improving
    result = run(
        tmp_path,
        tiny_root,
        ["train.epochs=30", "train.early_stopping={patience: 2, monitor: val_accuracy}"],
    )
    history = result.history
    accuracies = [r["val_accuracy"] for r in history]
    best = accuracies.index(max(accuracies)) + 1
    losses = [r["val_loss"] for r in history]
    assert result.summary["stopped_early"] is True
    assert len(history) == best + 2 < 30
    assert result.summary["best_epoch"] == best
    assert losses[best - 1] != losses[-1]
    # the restored weights are the best epoch's: evaluating them gives its validation loss
    from dnntrick.data.datasets import load_splits
    from dnntrick.training.loop import evaluate

    spec = load_spec(result.run_dir / "spec.yaml")
    splits = load_splits(spec.data)
    val_loss, _ = evaluate(result.model, splits.x_val, splits.y_val, 1000)
    assert val_loss == pytest.approx(losses[best - 1], rel=1e-5)


def test_failed_start_leaves_no_run_directory(tmp_path: Path):
    spec = load_spec(write_spec(tmp_path, SPEC), ["data.dataset=kmnist"])  # not installed
    with pytest.raises(DataError):
        run_spec(spec, out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_selu_learns_fashion_mnist(tmp_path: Path, fashion_root: Path):
    spec = load_spec(
        Path("experiments/selu.yaml"),
        [f"data.root={fashion_root}", "train.epochs=2", "data.train_limit=20000"],
    )
    result = run_spec(spec, out=tmp_path / "runs")
    assert result.summary["test_accuracy"] > 0.80
