"""`dnntrick lr-find`: the lr grows exponentially, the loss diverges at the top, a PNG is written
and the suggestion is the book's rule (a tenth of the lr at the lowest smoothed loss)."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dnntrick.data.datasets import FILES, read_idx, write_idx
from dnntrick.diagnosis.lr_find import LRFind, first_divergence, smooth
from tests.conftest import make_tiny_idx, write_spec

SPEC = """\
name: finder
seed: 0
model: {hidden: [32]}
train: {batch_size: 50, optimizer: {name: momentum, lr: 0.01}}
"""


@pytest.fixture(scope="module")
def noisy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set with 30% of its training labels random: its loss cannot fall to ~0, so a
    huge lr shows as a blow-up (on the clean set the loss keeps shrinking at any lr)."""
    root = make_tiny_idx(tmp_path_factory.mktemp("noisy"))
    path = root / f"{FILES['train_labels']}.gz"
    labels = read_idx(path).copy()
    rng = np.random.default_rng(0)
    noisy = rng.random(len(labels)) < 0.3
    labels[noisy] = rng.integers(0, 10, int(noisy.sum()))
    write_idx(path, labels)
    return root


@pytest.mark.integration
def test_lr_find_end_to_end(cli, tmp_path: Path, noisy_root: Path):
    spec = write_spec(tmp_path, SPEC)
    code, out, err = cli(
        "lr-find", str(spec), f"data.root={noisy_root}", "data.val_size=100",
        "--start", "1e-4", "--end", "100", "--steps", "120", "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("finder-lr-find-")
    png = (run / "lr_find.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    rows = list(csv.DictReader((run / "lr_find.csv").open()))
    lrs = [float(r["lr"]) for r in rows]
    # exponential growth: a constant ratio between consecutive lrs, 1e-4 → 100 over 119 ratios
    assert lrs[0] == pytest.approx(1e-4)
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert ratios == pytest.approx([1e6 ** (1 / 119)] * len(ratios), rel=1e-4)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["diverged"] is True and len(rows) < 120  # lr 100 blows momentum SGD up
    losses = [float(r["loss"]) for r in rows]
    smoothed = [float(r["smoothed_loss"]) for r in rows]
    assert not math.isfinite(losses[-1]) or smoothed[-1] > 4 * min(smoothed)
    lowest = lrs[smoothed.index(min(smoothed))]
    assert summary["lowest_loss_lr"] == pytest.approx(lowest, rel=1e-4)
    assert summary["suggested_lr"] == pytest.approx(lowest / 10, rel=1e-4)
    assert 1e-4 <= summary["suggested_lr"] <= 100
    assert f"suggested lr: {summary['suggested_lr']:.3g}" in out
    assert str(run / "lr_find.png") in out


def test_bad_range_is_a_usage_error(cli, tmp_path: Path, tiny_root: Path):
    spec = write_spec(tmp_path, SPEC)
    code, _, err = cli(
        "lr-find", str(spec), f"data.root={tiny_root}", "--start", "1", "--end", "0.1",
        "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert code == 2 and "need 0 < start < end" in err
    assert not (tmp_path / "runs").exists()


def test_suggestion_follows_the_books_rule_on_a_known_curve():
    # a loss curve whose minimum is at lr 0.1 exactly: (log10 lr + 1)² + 1
    lrs = [10 ** (-5 + 6 * i / 299) for i in range(300)]
    losses = [(math.log10(lr) + 1) ** 2 + 1 for lr in lrs]
    result = LRFind(lrs, losses, losses, diverged=False)  # unsmoothed: exact
    assert result.lowest_lr == pytest.approx(0.1, rel=0.03)
    assert result.suggestion == pytest.approx(0.01, rel=0.03)
    assert result.steepest_lr < 1e-4  # the parabola is steepest far left


def test_smoothing_and_divergence():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected
    assert first_divergence([1.0, 0.5, float("nan"), 3.0]) == 2
    assert first_divergence([1.0] * 10 + [0.5] * 10) is None
    blowup = [1.0] * 20 + [100.0] * 5
    assert 20 < first_divergence(blowup) <= 25
