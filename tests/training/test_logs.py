"""Standard logs (dnntrick/training/logs.py): metrics.csv and TensorBoard events equal
metrics.jsonl, also across a resume; a missing tensorboard package is a one-line exit-2 error."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.training.logs import csv_text, tag
from tests.conftest import write_spec

SPEC = """\
name: logs
device: cpu
data: {{root: {root}, val_size: 100}}
model: {{hidden: [16]}}
train:
  epochs: {epochs}
  batch_size: 50
  optimizer: {{name: adam, lr: 0.003}}
  clip: {{by: global_norm, threshold: 1.0}}
  log: [csv, tensorboard]
"""


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_csv(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def read_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag → [(step, value)] as TensorBoard's own reader sees the folder (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def assert_logs_equal_jsonl(run_dir: Path) -> None:
    rows = jsonl(run_dir)
    assert read_csv(run_dir) == rows  # every column is a scalar here; floats bitwise
    with open(run_dir / "metrics.csv") as handle:
        header = handle.readline().strip().split(",")
    assert header == list(rows[0])  # metrics.jsonl's order: epoch, train_loss, …
    events = read_events(run_dir)
    expected_tags = {tag(k) for k in rows[0] if k != "epoch"} | {"test/loss", "test/accuracy"}
    assert set(events) == expected_tags
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"} <= set(events)
    for key in rows[0]:
        if key == "epoch":
            continue
        expected = [(r["epoch"], float(np.float32(r[key]))) for r in rows]  # float32 in events
        assert events[tag(key)] == expected, key
    summary = json.loads((run_dir / "summary.json").read_text())
    last = rows[-1]["epoch"]
    assert events["test/accuracy"] == [(last, float(np.float32(summary["test_accuracy"])))]
    assert events["test/loss"] == [(last, float(np.float32(summary["test_loss"])))]


def test_csv_and_tensorboard_equal_metrics_jsonl(tmp_path: Path, tiny_root: Path):
    spec = load_spec(write_spec(tmp_path, SPEC.format(root=tiny_root, epochs=3)))
    result = run_spec(spec, out=tmp_path / "runs")
    rows = jsonl(result.run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and "grad_norm_max" in rows[0]
    assert_logs_equal_jsonl(result.run_dir)
    assert len(list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_logs_are_off_by_default(tmp_path: Path, tiny_root: Path):
    text = SPEC.format(root=tiny_root, epochs=1).replace("  log: [csv, tensorboard]\n", "")
    result = run_spec(load_spec(write_spec(tmp_path, text)), out=tmp_path / "runs")
    assert not (result.run_dir / "metrics.csv").exists()
    assert not (result.run_dir / "tensorboard").exists()


def test_a_resumed_run_logs_each_epoch_once(monkeypatch, tmp_path: Path, tiny_root: Path):
    """A crash in epoch 4 with the last checkpoint after epoch 2: the resumed run trains epoch 3
    again; metrics.csv drops the crashed run's epoch 3 and TensorBoard purges it."""
    text = SPEC.format(root=tiny_root, epochs=5) + "  checkpoint_every: 2\n"
    spec = load_spec(write_spec(tmp_path, text))
    real = torch.nn.functional.cross_entropy
    steps = 0

    def crash_in_epoch_4(*args, **kwargs):
        nonlocal steps
        steps += torch.is_grad_enabled()
        if steps > 3 * 10:  # 500 training images, batch 50: 10 steps an epoch
            raise RuntimeError("the machine fell over")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", crash_in_epoch_4)
    with pytest.raises(RuntimeError, match="fell over"):
        run_spec(spec, out=tmp_path / "runs")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "runs").iterdir()
    assert [r["epoch"] for r in read_csv(run_dir)] == [1, 2, 3]
    assert [s for s, _ in read_events(run_dir)["train/loss"]] == [1, 2, 3]

    run_spec(spec, resume=run_dir)
    assert [r["epoch"] for r in jsonl(run_dir)] == [1, 2, 3, 4, 5]
    assert_logs_equal_jsonl(run_dir)  # epoch 3 once, from the resumed run
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_missing_tensorboard_is_one_line_exit_2(cli, monkeypatch, tmp_path: Path, tiny_root):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    path = write_spec(tmp_path, SPEC.format(root=tiny_root, epochs=1))
    code, out, err = cli("train", str(path), "--out", str(tmp_path / "runs"))
    assert code == 2 and out == ""
    assert err == (
        "error: train.log: tensorboard needs the tensorboard package: "
        "pip install 'dnntrick[tensorboard]' (or drop tensorboard from train.log)\n"
    )
    assert not (tmp_path / "runs").exists()  # refused before the run directory
    code, _, _ = cli("train", str(path), "--out", str(tmp_path / "runs"), "train.log=[csv]", "-q")
    assert code == 0 and (next((tmp_path / "runs").iterdir()) / "metrics.csv").exists()


def test_csv_columns_in_order_of_first_appearance_and_nan():
    rows = [
        {"epoch": 1, "train_loss": 0.5, "val_loss": math.nan, "diagnostics": [{"step": 0}]},
        {"epoch": 2, "train_loss": 0.25, "val_loss": 1.0, "skipped_steps": 3},
    ]
    assert csv_text(rows) == ("epoch,train_loss,val_loss,skipped_steps\n1,0.5,nan,\n2,0.25,1.0,3\n")
    assert [tag(k) for k in ("train_loss", "val_accuracy", "lr", "grad_norm_mean")] == [
        "train/loss",
        "val/accuracy",
        "lr",
        "grad_norm_mean",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [("[csv, csv]", "names a log twice"), ("[tensorbord]", "'csv' or 'tensorboard'")],
)
def test_bad_log_lists_are_spec_errors(cli, tmp_path: Path, value: str, message: str):
    path = write_spec(tmp_path, f"train: {{log: {value}}}\n")
    code, _, err = cli("check", str(path))
    assert code == 2 and message in err and "train.log" in err
