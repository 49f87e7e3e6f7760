"""`dnntrick runs` and `dnntrick show` (dnntrick/runs.py): statuses, order, the spec's
changes from the defaults, learning curves; files only, no torch."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dnntrick.runs import spec_changes
from tests.conftest import REPO, write_spec

SPEC = """\
name: {name}
device: cpu
data: {{root: {root}, val_size: 100}}
model: {{hidden: [16], activation: elu}}
train: {{epochs: 3, batch_size: 50, optimizer: {{name: adam, lr: 0.003}}}}
"""


def train(out: Path, root: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Train into `out` (errors are the run's outcome, kept) and return the run directory."""
    from dnntrick.errors import DnntrickError
    from dnntrick.runner import run_spec
    from dnntrick.spec.config import load_spec

    before = set(out.iterdir()) if out.exists() else set()
    spec = load_spec(write_spec(out.parent, SPEC.format(name=name, root=root), f"{name}.yaml"))
    with contextlib.suppress(DnntrickError):
        run_spec(spec, out=out)
    monkeypatch.undo()
    [run_dir] = set(out.iterdir()) - before
    return run_dir


def fail_at(monkeypatch: pytest.MonkeyPatch, step: int, how: str) -> None:
    """From training step `step` on, the loss is NaN (how="nan"), or SIGINT arrives ("sigint")."""
    real = torch.nn.functional.cross_entropy
    steps = 0

    def hooked(*args, **kwargs):
        nonlocal steps
        steps += torch.is_grad_enabled()
        loss = real(*args, **kwargs)
        if steps == step and how == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
        return loss * float("nan") if steps >= step and how == "nan" else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", hooked)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_root: Path) -> Path:
    """runs/ with a finished, an interrupted, a diverged and a killed run, and two strays."""
    out = tmp_path_factory.mktemp("built") / "runs"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DNNTRICK_CACHE", str(tmp_path_factory.mktemp("cache")))
        done = train(out, tiny_root, "done", monkeypatch)
        fail_at(monkeypatch, 15, "sigint")  # in epoch 2 (10 steps an epoch)
        stopped = train(out, tiny_root, "stopped", monkeypatch)
        fail_at(monkeypatch, 13, "nan")
        diverged = train(out, tiny_root, "bad", monkeypatch)
    done = done.rename(done.with_name("done-20260101-120000"))
    stopped.rename(stopped.with_name("stopped-20260102-120000"))
    diverged.rename(diverged.with_name("bad-20251231-235959"))
    killed = done.with_name("killed-20260103-080000")  # a process that died without a word
    shutil.copytree(done, killed)
    (killed / "summary.json").unlink()
    (out / "notes").mkdir()  # not a run directory: skipped
    (out / "README.txt").write_text("hello")
    return out


@pytest.fixture
def runs_dir(built: Path, tmp_path: Path) -> Path:
    """A copy of `built` that a test may change."""
    return Path(shutil.copytree(built, tmp_path / "runs"))


def test_runs_lists_newest_first_with_status(cli, runs_dir: Path):
    code, out, err = cli("runs", str(runs_dir), "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(r["name"], r["status"]) for r in listed] == [
        ("done", "failed or running"),  # the killed copy: its spec says name: done
        ("stopped", "interrupted"),
        ("done", "finished"),
        ("bad", "diverged"),
    ]
    assert Path(listed[0]["run_dir"]).name == "killed-20260103-080000"
    summary = json.loads((runs_dir / "done-20260101-120000" / "summary.json").read_text())
    finished = listed[2]
    assert finished["test_accuracy"] == summary["test_accuracy"]
    assert (finished["epochs"], finished["planned_epochs"]) == (3, 3)
    assert finished["device"] == "cpu" and finished["dataset"] == "fashion-mnist"
    assert finished["started"] == "2026-01-01 12:00:00"
    assert (listed[1]["epochs"], listed[1]["test_accuracy"]) == (1, None)
    assert listed[3]["epochs"] == 1  # NaN in epoch 2: one row

    code, out, err = cli("runs", str(runs_dir))
    assert code == 0
    assert err == f"skipped {runs_dir / 'notes'}: an empty folder, not a run directory\n"
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "started", "status"]
    assert "killed-20260103-080000" in lines[1] and "failed or running" in lines[1]
    assert "interrupted" in lines[2] and "1/3" in lines[2]
    assert f"{summary['test_accuracy']:.4f}" in lines[3] and "3/3" in lines[3]
    assert "diverged" in lines[4]
    assert lines[-1] == f"4 run directories in {runs_dir}; 1 skipped (above)"


def test_a_resumed_run_is_finished(cli, runs_dir: Path):
    stopped = runs_dir / "stopped-20260102-120000"
    assert json.loads((stopped / "stopped.json").read_text())["status"] == "interrupted"
    code, _, err = cli("train", "--resume", str(stopped), "-q")
    assert code == 0, err
    assert not (stopped / "stopped.json").exists()
    code, out, _ = cli("runs", str(runs_dir), "--json")
    assert {r["name"]: r["status"] for r in json.loads(out) if "stopped" in r["run_dir"]} == {
        "stopped": "finished"
    }


def test_runs_of_a_missing_folder_or_a_file_exit_2(cli, tmp_path: Path):
    code, out, err = cli("runs", str(tmp_path / "nope"))
    assert code == 2 and out == ""
    where = "give the folder that holds the run directories"
    assert err == f"error: {tmp_path / 'nope'}: no such folder ({where})\n"
    (tmp_path / "f").write_text("")
    code, _, err = cli("runs", str(tmp_path / "f"))
    assert code == 2 and "is a file, not a folder" in err
    (tmp_path / "empty").mkdir()
    code, out, _ = cli("runs", str(tmp_path / "empty"))
    assert code == 0 and out.strip() == f"0 run directories in {tmp_path / 'empty'}"


def test_show_json_summary_changes_and_history(cli, runs_dir: Path, tiny_root: Path):
    run_dir = runs_dir / "done-20260101-120000"
    code, out, err = cli("show", str(run_dir), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["summary"] == json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert shown["history"] == [json.loads(line) for line in lines]
    changes = {c["key"]: (c["default"], c["value"]) for c in shown["spec_changes"]}
    assert changes == {
        "data.root": (None, str(tiny_root)),
        "data.val_size": (5000, 100),
        "device": ("auto", "cpu"),
        "model.activation.name": ("relu", "elu"),
        "model.hidden": ([300, 100], [16]),
        "train.batch_size": (32, 50),
        "train.epochs": (10, 3),
        "train.optimizer.lr": (0.01, 0.003),
        "train.optimizer.name": ("sgd", "adam"),
    }
    assert shown["status"] == "finished" and shown["stopped"] is None


def test_spec_changes_of_a_section_the_defaults_leave_null():
    spec = {"name": "x", "train": {"schedule": {"name": "exponential", "decay_rate": 0.5}}}
    changes = spec_changes(spec)
    assert {c["key"]: (c["default"], c["value"]) for c in changes if "schedule" in c["key"]} == {
        "train.schedule.name": (None, "exponential"),
        "train.schedule.decay_rate": (None, 0.5),
    }


def test_show_prints_and_plots(cli, runs_dir: Path, tmp_path: Path):
    run_dir = runs_dir / "stopped-20260102-120000"
    png = tmp_path / "curves.png"
    code, out, err = cli("show", str(run_dir), "--plot", str(png))
    assert code == 0, err
    assert "status             interrupted" in out
    assert "stopped            interrupted (SIGINT); checkpoint saved" in out
    assert "model.activation.name  elu  (default relu)" in out
    assert "train.optimizer.name   adam  (default sgd)" in out
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert f"{row['train_loss']:.4f}" in out.splitlines()[-1]
    import matplotlib.image

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(png).shape[:2]
    assert (width, height) == (1210, 462)  # 11 x 4.2 in at 110 dpi


def test_show_refuses_what_is_not_a_run_directory(cli, runs_dir: Path, tmp_path: Path):
    code, out, err = cli("show", str(runs_dir / "notes"))
    assert (
        code == 2
        and out == ""
        and err == f"error: {runs_dir / 'notes'}: an empty folder, not a run directory\n"
    )
    code, _, err = cli("show", str(runs_dir / "done-20260101-120000"), "--plot", "/nope/x.png")
    assert code == 2 and "folder /nope does not exist" in err


def test_runs_and_show_do_not_import_torch(runs_dir: Path):
    probe = (
        "import sys; from dnntrick.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code, file=sys.stderr)\n"
    )
    for args in (["runs", str(runs_dir)], ["show", str(runs_dir / "done-20260101-120000")]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        assert "NO-TORCH 0" in done.stderr, done.stderr
