"""data.standardize with a feature that is constant in the training split: scaled by 1 (as
scikit-learn's StandardScaler does), recorded so, and applied alike by a reopened run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dnntrick
from dnntrick.data.datasets import FILES, read_idx, write_idx
from dnntrick.data.own import splits_from_arrays
from dnntrick.spec.schema import DataSpec
from tests.conftest import make_tiny_idx

SPEC = "model: {hidden: [32]}\ntrain: {epochs: 2, batch_size: 50}\ndevice: cpu\n"


def black_corner_in_training(folder: Path) -> Path:
    """The tiny set with its top row black in every training image and white in every test
    image: what a corner of 500 Fashion-MNIST images (data.train_limit=500) looks like."""
    root = make_tiny_idx(folder)
    for split, value in (("train", 0), ("test", 255)):
        path = root / f"{FILES[split + '_images']}.gz"
        images = read_idx(path).copy()
        images[:, 0, :] = value
        write_idx(path, images)
    return root


@pytest.mark.integration
def test_a_feature_constant_in_training_keeps_the_test_loss_sane(tmp_path: Path):
    root = black_corner_in_training(tmp_path / "data")
    (tmp_path / "s.yaml").write_text(SPEC + f"data: {{root: {root}, val_size: 100}}\n")
    run = dnntrick.train(
        tmp_path / "s.yaml",
        ["data.standardize=true", "data.train_limit=500"],
        out=tmp_path / "runs",
        quiet=True,
    )
    # std + 1e-10 made the white row 1e10 standard deviations out: a test loss of ~1e9
    assert run.summary["test_loss"] < 3.0, run.summary["test_loss"]
    assert run.summary["test_accuracy"] > 0.5
    reopened = dnntrick.load_run(run.run_dir)  # reads preprocessing.safetensors
    assert reopened.std is not None and reopened.mean is not None
    assert torch.equal(reopened.std[0, :28], torch.ones(28))  # recorded as 1: only centred
    assert torch.equal(reopened.mean[0, :28], torch.zeros(28))
    assert bool((reopened.std[0, 28:] != 1).all())  # the varying pixels keep their own std
    raw_x = read_idx(root / f"{FILES['test_images']}.gz")
    raw_y = read_idx(root / f"{FILES['test_labels']}.gz")
    again = reopened.evaluate(raw_x, raw_y)  # raw pixels through the recorded statistics
    assert again["loss"] == pytest.approx(run.summary["test_loss"], rel=1e-4)
    assert again["accuracy"] == pytest.approx(run.summary["test_accuracy"])


def test_constant_features_of_own_data_are_centred_not_divided():
    """A constant 0.3 column (its float32 std is a rounding error, not 0) and a single row."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    x[:, 1] = 0.3
    y = np.arange(40) % 2
    xt = x[:10].copy()
    xt[:, 1] = 1.3
    spec = DataSpec(dataset="arrays", path="-", val_size=0, standardize=True)
    splits = splits_from_arrays(x, y, xt, y[:10], spec=spec)
    assert splits.pixel_std is not None
    assert splits.pixel_std[0, 1].item() == 1.0
    torch.testing.assert_close(splits.x_test[:, 1], torch.ones(10))  # 1.3 - 0.3, not ±1e7
    torch.testing.assert_close(splits.x_train.std(0)[[0, 2, 3]], torch.ones(3))
    one = splits_from_arrays(x[:1], y[:1] * 0 + 1, xt, y[:10], spec=spec)
    assert torch.equal(one.pixel_std, torch.ones(1, 4))  # one row: no NaN std
    assert torch.isfinite(one.x_test).all()
