"""Interrupt and resume: Ctrl-C/SIGTERM save a checkpoint and exit 130/143; `--resume` continues
bitwise as if the run had never stopped; a changed spec is refused unless --force."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from tests.conftest import (
    REPO,
    RESUME_SPEC,
    assert_same_run,
    make_tiny_idx,
    rows,
    signal_at,
    write_spec,
)

SPEC = RESUME_SPEC


@pytest.fixture
def spec_path(tmp_path: Path, tiny_root: Path) -> Path:
    return write_spec(tmp_path, SPEC.format(root=tiny_root))


@pytest.fixture
def reference(tmp_path: Path, spec_path: Path) -> Path:
    return run_spec(load_spec(spec_path), out=tmp_path / "reference").run_dir


@pytest.mark.parametrize(
    ("call", "training", "where"),
    [
        (1, False, "epoch-0001"),  # during epoch 1's evaluation: saved at the epoch boundary
        (2, False, "epoch-0002"),
        (13, True, "epoch-0001-step-000003"),  # mid-epoch: after step 3 of epoch 2 (10 steps each)
    ],
)
def test_interrupt_then_resume_is_bitwise(
    cli, monkeypatch, tmp_path: Path, spec_path: Path, reference: Path, call, training, where
):
    signal_at(monkeypatch, call, training)
    code, _, err = cli("train", str(spec_path), "--out", str(tmp_path / "runs"), "-q")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "runs").iterdir()
    assert code == 130
    assert f"interrupted (SIGINT); checkpoint saved: {run_dir}/checkpoints/{where}.pt" in err
    assert f"resume with: dnntrick train --resume {run_dir}" in err
    assert not (run_dir / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    code, out, err = cli("train", "--resume", str(run_dir), "-q")
    assert code == 0, err
    assert str(run_dir) in out
    assert_same_run(reference, run_dir)


def test_sigterm_exits_143_and_a_second_signal_exits_at_once(
    cli, monkeypatch, tmp_path: Path, spec_path: Path
):
    signal_at(monkeypatch, 2, False, signal.SIGTERM)
    code, _, err = cli("train", str(spec_path), "--out", str(tmp_path / "a"), "-q")
    assert code == 143 and "interrupted (SIGTERM); checkpoint saved" in err

    # two Ctrl-C in epoch 2's evaluation: the second stops before epoch 2's checkpoint
    signal_at(monkeypatch, 2, False, signal.SIGINT, times=2)
    code, _, err = cli("train", str(spec_path), "--out", str(tmp_path / "b"), "-q")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "b").iterdir()
    assert code == 130 and "interrupted again (SIGINT): stopped at once" in err
    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert files == ["epoch-0001.pt", "epoch-0001.safetensors"]  # whole, no temp files
    code, _, err = cli("train", "--resume", str(run_dir), "-q")
    assert code == 0, err


def test_changed_spec_is_refused_unless_forced(cli, monkeypatch, tmp_path: Path, spec_path: Path):
    signal_at(monkeypatch, 1, False)
    cli("train", str(spec_path), "--out", str(tmp_path / "runs"), "-q")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "runs").iterdir()
    before = (run_dir / "metrics.jsonl").read_text()
    code, _, err = cli("train", "--resume", str(run_dir), "train.epochs=4", "seed=6", "-q")
    assert code == 2
    assert "the spec differs from the checkpoint's (seed: 5 → 6; train.epochs: 3 → 4)" in err
    assert "--force" in err and (run_dir / "metrics.jsonl").read_text() == before

    code, _, err = cli("train", "--resume", str(run_dir), "train.epochs=4", "--force", "-q")
    assert code == 0, err
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2, 3, 4]
    assert "epochs: 4" in (run_dir / "spec.yaml").read_text()  # the spec it finished with

    code, _, err = cli("train", "--resume", str(run_dir), "-q")
    assert code == 2 and "already finished" in err
    code, _, err = cli("train", "--resume", str(tmp_path / "runs"), "-q")
    assert code == 2 and "not a run directory (no spec.yaml)" in err


def test_corrupted_checkpoint_through_the_cli(cli, monkeypatch, tmp_path: Path, spec_path: Path):
    signal_at(monkeypatch, 1, True)  # interrupted after step 1
    cli("train", str(spec_path), "--out", str(tmp_path / "runs"), "-q")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "runs").iterdir()
    [pt] = (run_dir / "checkpoints").glob("*.pt")
    pt.write_bytes(pt.read_bytes()[:100])
    code, out, err = cli("train", "--resume", str(run_dir), "-q")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{pt}: corrupted (" in err and "no earlier good checkpoint" in err


@pytest.mark.integration
def test_sigint_to_a_real_process_then_resume_is_bitwise(tmp_path: Path):
    """The done-when test: a real `dnntrick train` process, SIGINT once an epoch is written."""
    root = make_tiny_idx(tmp_path / "data", n_train=1500, n_test=200)
    spec = write_spec(
        tmp_path,
        SPEC.format(root=root)
        .replace("epochs: 3", "epochs: 12")
        .replace("batch_size: 50", "batch_size: 20"),
    )
    # one thread: on a busy machine, competing OpenMP threads make each step 10-100x slower
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dnntrick", "train", str(spec), "-q"]
    proc = subprocess.Popen(
        [*command, "--out", str(tmp_path / "runs")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        metrics: list[Path] = []
        while not metrics or not metrics[0].read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
            metrics = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir = metrics[0].parent
    assert proc.returncode == 130, err
    assert f"resume with: dnntrick train --resume {run_dir}" in err
    epochs_done = len(rows(run_dir))
    assert 1 <= epochs_done < 12 and list((run_dir / "checkpoints").glob("*.pt"))

    resumed = subprocess.run(
        [sys.executable, "-m", "dnntrick", "train", "--resume", str(run_dir), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run(
        [*command, "--out", str(tmp_path / "whole")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert whole.returncode == 0, whole.stderr
    [reference] = (tmp_path / "whole").iterdir()
    assert_same_run(reference, run_dir)
    a, b = load_file(reference / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and len(rows(run_dir)) == 12


def test_mid_epoch_resume_with_dropout_batch_norm_and_clipping_is_bitwise(
    cli, monkeypatch, tmp_path: Path, tiny_root: Path
):
    """Dropout masks (global RNG), BN running statistics (model buffers) and the clipping norm
    sums (the epoch's grad_norm_* columns) all continue exactly."""
    text = (
        SPEC.format(root=tiny_root).replace(
            "activation: rrelu}",
            "activation: elu, norm: {name: batch}, dropout: {rate: 0.3}}",
        )
        + "  clip: {by: global_norm, threshold: 0.5}\n"
    )
    spec = write_spec(tmp_path, text)
    code, _, err = cli("train", str(spec), "--out", str(tmp_path / "whole"), "-q")
    assert code == 0, err
    [reference] = (tmp_path / "whole").iterdir()
    assert "grad_norm_mean" in rows(reference)[0]

    signal_at(monkeypatch, 16, True)  # after step 6 of epoch 2
    code, _, err = cli("train", str(spec), "--out", str(tmp_path / "runs"), "-q")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "runs").iterdir()
    assert code == 130 and "epoch-0001-step-000006.pt" in err
    code, _, err = cli("train", "--resume", str(run_dir), "-q")
    assert code == 0, err
    assert_same_run(reference, run_dir)


def test_resume_after_unfreezing_is_bitwise(monkeypatch, tmp_path: Path, tiny_root: Path):
    """Transfer with unfreeze_after: the optimizer gained a parameter group before the
    checkpoint; resuming redoes the unfreezing, then restores that optimizer exactly."""
    from dnntrick.errors import Interrupted

    source = SPEC.format(root=tiny_root).replace("epochs: 3", "epochs: 1")
    source_dir = run_spec(load_spec(write_spec(tmp_path, source, "src.yaml")), tmp_path / "src")
    target = SPEC.format(root=tiny_root) + (
        f'transfer: {{from: {source_dir.run_dir}, reuse: "hidden1", freeze: "hidden1", '
        "unfreeze_after: 1, unfreeze_lr_factor: 0.5}\n"
    )
    spec = load_spec(write_spec(tmp_path, target, "tgt.yaml"))
    reference = run_spec(spec, tmp_path / "whole").run_dir
    signal_at(monkeypatch, 2, False)  # in epoch 2's evaluation, after the unfreezing
    with pytest.raises(Interrupted):
        run_spec(spec, tmp_path / "runs")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "runs").iterdir()
    run_spec(spec, resume=run_dir)
    assert [r["lr"] for r in rows(run_dir)] == [0.003, 0.0015, 0.0015]
    assert_same_run(reference, run_dir)


# ---- a refused resume leaves the run directory exactly as it was ----


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its SHA-256 and mtime (a rewrite with the same bytes shows)."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tamper_weights(run_dir: Path) -> None:
    """A well-formed weights file of the wrong shapes: it loads, then cannot fit the model."""
    from safetensors.torch import save_file

    [weights] = (run_dir / "checkpoints").glob("*.safetensors")
    save_file({"hidden1.weight": torch.zeros(3, 784), "hidden1.bias": torch.zeros(3)}, weights)


REFUSALS = {
    # name: (damage done to the folder first, arguments, what the one line says)
    "changed model": (None, ["model.hidden=[8]"], "the spec differs from the checkpoint's"),
    "changed model, forced": (None, ["model.hidden=[8]", "--force"], "does not fit this spec"),
    "changed optimizer": (None, ["train.optimizer.name=sgd"], "train.optimizer.name: adam → sgd"),
    "changed optimizer, forced": (
        None,
        ["train.optimizer.name=sgd", "--force"],
        "the checkpoint's optimizer is adam, the spec's is sgd",
    ),
    "truncated checkpoint": ("truncate", [], "corrupted ("),
    "weights of another model": ("weights", [], "does not fit this spec's model/optimizer"),
    "missing checkpoint": ("no .pt", [], "no checkpoint to resume from"),
    "missing weights": ("no weights", [], "the weights file is missing"),
    "bad override": (None, ["train.epochs=abc"], "train.epochs"),
    "spec that does not validate": (None, ["model.activation=nosuch"], "model.activation"),
    "data set missing, forced": (None, ["data.root=/nonexistent", "--force"], "/nonexistent"),
    "wrong folder": ("parent", [], "not a run directory (no spec.yaml)"),
}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory, tiny_root: Path) -> Path:
    """A run stopped mid-epoch 2 (checkpoint, metrics.jsonl and .csv, stopped.json) and a
    finished one beside it: the folders every refusal must leave alone."""
    from dnntrick.errors import Interrupted

    tmp = tmp_path_factory.mktemp("stopped")
    spec = load_spec(write_spec(tmp, SPEC.format(root=tiny_root)), ["train.log=[csv]"])
    with pytest.MonkeyPatch.context() as monkeypatch:
        signal_at(monkeypatch, 13, True)  # after step 3 of epoch 2
        with pytest.raises(Interrupted):
            run_spec(spec, out=tmp / "stopped")
    run_spec(spec, out=tmp / "finished")
    return tmp


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_resume_changes_nothing(cli, tmp_path: Path, stopped_run: Path, case: str):
    damage, args, message = REFUSALS[case]
    shutil.copytree(stopped_run / "stopped", tmp_path / "runs")
    [run_dir] = (tmp_path / "runs").iterdir()
    assert (run_dir / "stopped.json").exists() and (run_dir / "metrics.csv").exists()
    folder = run_dir / "checkpoints"
    if damage == "truncate":
        [pt] = folder.glob("*.pt")
        pt.write_bytes(pt.read_bytes()[:200])
    elif damage == "weights":
        _tamper_weights(run_dir)
    elif damage in ("no .pt", "no weights"):
        for path in folder.glob("*.pt" if damage == "no .pt" else "*.safetensors"):
            path.unlink()
    target = tmp_path / "runs" if damage == "parent" else run_dir
    before = snapshot(tmp_path / "runs")
    code, out, err = cli("train", "--resume", str(target), *args, "-q")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err
    assert snapshot(tmp_path / "runs") == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the run already finished"),
        (["model.hidden=[8]", "--force"], "does not fit this spec's model"),
        (["train.optimizer.name=sgd", "--force"], "the checkpoint's optimizer is adam"),
    ],
)
def test_a_refused_resume_of_a_finished_run_changes_nothing(
    cli, tmp_path: Path, stopped_run: Path, args: list[str], message: str
):
    shutil.copytree(stopped_run / "finished", tmp_path / "runs")
    [run_dir] = (tmp_path / "runs").iterdir()
    before = snapshot(run_dir)
    code, out, err = cli("train", "--resume", str(run_dir), *args, "-q")
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert snapshot(run_dir) == before


def test_forced_resume_trains_with_the_new_hyperparameters(cli, tmp_path: Path, stopped_run: Path):
    """--force with a lower lr: the epochs after the checkpoint use it (the checkpoint's
    optimizer state keeps its moments, not its lr)."""
    shutil.copytree(stopped_run / "stopped", tmp_path / "runs")
    [run_dir] = (tmp_path / "runs").iterdir()
    code, _, err = cli(
        "train", "--resume", str(run_dir), "train.optimizer.lr=0.0001", "--force", "-q"
    )
    assert code == 0, err
    assert [r["lr"] for r in rows(run_dir)] == [0.003, 0.0001, 0.0001]
    assert not (run_dir / "stopped.json").exists()


def test_a_checkpoint_of_an_older_version_resumes_without_force(
    cli, tmp_path: Path, stopped_run: Path
):
    """A checkpoint written before a spec field existed (here train.threads, at its default)
    holds the same spec: resumed without --force, it ends as the uninterrupted run."""
    shutil.copytree(stopped_run / "stopped", tmp_path / "runs")
    [run_dir] = (tmp_path / "runs").iterdir()
    [pt] = (run_dir / "checkpoints").glob("*.pt")
    state = torch.load(pt, weights_only=True)
    assert "  threads: auto\n" in state["spec"]
    state["spec"] = state["spec"].replace("  threads: auto\n", "")
    torch.save(state, pt)
    code, _, err = cli("train", "--resume", str(run_dir), "-q")
    assert code == 0, err
    [finished] = (stopped_run / "finished").iterdir()
    assert_same_run(run_dir, finished)
