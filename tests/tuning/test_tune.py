"""`dnntrick tune` end to end on the tiny data set: the same seed proposes the same trials,
best.yaml is the spec with the best values, pruning stops bad trials and saves epochs, diverged
trials are failed with a value, Ctrl-C keeps the finished trials and --resume completes the study,
and the Python API's object."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from dnntrick.errors import Interrupted
from dnntrick.tuning.api import tune_spec
from dnntrick.tuning.study import resume_tune
from tests.conftest import signal_at, write_spec

pytestmark = pytest.mark.integration

SPEC = """\
name: tiny
seed: 1
data: {{dataset: fashion-mnist, root: {root}, val_size: 100}}
model: {{hidden: [16], activation: relu}}
train: {{epochs: {epochs}, batch_size: 32, optimizer: {{name: sgd, lr: 0.05}}}}
"""
LR = "train.optimizer.lr=loguniform:1e-4:1"
STEPS_PER_EPOCH = 16  # 500 training images in batches of 32


def spec_file(tmp_path: Path, root: Path, epochs: int = 1) -> Path:
    return write_spec(tmp_path, SPEC.format(root=root, epochs=epochs))


def csv_rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((folder / "trials.csv").read_text())))


PROPOSED = ("number", "state", "status", "train.optimizer.lr", "value", "epochs_run")


def test_same_seed_same_trials_and_best_yaml_and_the_api(cli, tmp_path: Path, tiny_root: Path):
    spec = spec_file(tmp_path, tiny_root)
    a, b = (tune_spec(spec, [], [LR], 3, out=tmp_path / d) for d in ("a", "b"))
    rows_a, rows_b = csv_rows(a.folder), csv_rows(b.folder)
    assert [[r[k] for k in PROPOSED] for r in rows_a] == [[r[k] for k in PROPOSED] for r in rows_b]
    assert len({r["train.optimizer.lr"] for r in rows_a}) == 3  # three different proposals
    assert rows_a[0]["train.optimizer.lr"] == "0.05"  # trial 0: the spec's own lr

    best = a.best
    assert best is not None and best["value"] == max(
        float(r["value"]) for r in rows_a if r["state"] == "COMPLETE"
    )
    code, _out, err = cli("check", str(a.folder / "best.yaml"))
    assert code == 0, err
    from dnntrick.spec.config import load_spec

    expected = load_spec(spec, [f"train.optimizer.lr={best['values']['train.optimizer.lr']!r}"])
    assert load_spec(a.folder / "best.yaml") == expected

    document = json.loads((a.folder / "tune.json").read_text())
    assert document["best"] == best and sum(document["counts"].values()) == 3
    assert document["default"]["values"] == {"train.optimizer.lr": 0.05}
    frame = a.trials.to_pandas()
    assert list(frame.index) == [0, 1, 2] and "train.optimizer.lr" in frame.columns
    assert a.study.best_trial.number == best["number"]
    figure = a.plot(tmp_path / "tune.png")
    assert (tmp_path / "tune.png").stat().st_size > 0 and len(figure.axes) == 2


def test_pruning_stops_bad_trials_and_saves_epochs(tmp_path: Path, tiny_root: Path):
    """lr from 1e-4 (barely learns in 4 epochs) to 1: the median pruner stops the slow ones
    after their first epochs; the same study without pruning runs every epoch."""
    spec = spec_file(tmp_path, tiny_root, epochs=4)
    search = ["train.optimizer.lr=loguniform:1e-4:0.3"]
    pruned = tune_spec(spec, [], search, 8, pruner="median", out=tmp_path / "p")
    full = tune_spec(spec, [], search, 8, pruner="none", out=tmp_path / "n")
    states = [r["state"] for r in csv_rows(pruned.folder)]
    assert "PRUNED" in states and "PRUNED" not in [r["state"] for r in csv_rows(full.folder)]
    saved = pruned.document["totals"]["epochs_run"], full.document["totals"]["epochs_run"]
    assert saved[0] < saved[1] == 8 * 4, saved
    assert pruned.best["value"] >= full.best["value"] - 0.05  # the good trials still finish


def test_diverged_trials_fail_with_a_value_and_the_study_goes_on(tmp_path: Path, tiny_root: Path):
    spec = spec_file(tmp_path, tiny_root)
    selu = ["model.activation=selu", "data.standardize=true"]  # diverges at lr 20 (ReLU dies)
    result = tune_spec(spec, selu, ["train.optimizer.lr=choice:20.0,50.0"], 2, out=tmp_path)
    rows = csv_rows(result.folder)
    assert [(r["state"], r["status"]) for r in rows] == [("FAIL", "diverged")] * 2
    assert all(r["value"] != "" for r in rows)
    assert result.best is None and not (result.folder / "best.yaml").exists()
    assert result.document["counts"] == {"FAIL (diverged)": 2}


def test_ctrl_c_keeps_finished_trials_and_resume_completes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_root: Path
):
    spec = spec_file(tmp_path, tiny_root, epochs=2)
    # SIGINT in the 5th step of trial 2 (trials 0 and 1 ran 2 epochs each, none pruned yet)
    signal_at(monkeypatch, 2 * 2 * STEPS_PER_EPOCH + 5, training=True)
    with pytest.raises(Interrupted) as stop:
        tune_spec(spec, [], [LR], 4, out=tmp_path / "runs")
    assert stop.value.exit_code == 130 and "dnntrick tune --resume" in str(stop.value)
    folder = next((tmp_path / "runs").glob("tune-*"))
    before = (folder / "trials.csv").read_text().splitlines()
    assert [r["status"] for r in csv_rows(folder)] == ["ok", "ok", "cut"]

    result = resume_tune(folder)
    after = (folder / "trials.csv").read_text().splitlines()
    assert after[:3] == before[:3]  # header and the finished trials, byte for byte
    rows = csv_rows(folder)
    assert sum(r["status"] != "cut" for r in rows) == 4
    assert rows[3]["train.optimizer.lr"] == rows[2]["train.optimizer.lr"]  # the cut one again
    assert result.study.trials[3].user_attrs["rerun_of"] == 2

    result = resume_tune(folder, trials=5)  # more trials later: the first rows stay
    assert (folder / "trials.csv").read_text().splitlines()[: len(after)] == after
    assert sum(r["status"] != "cut" for r in csv_rows(folder)) == 5
