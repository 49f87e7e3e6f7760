"""Checkpoint files: what they hold, atomic writes, and hostile or broken files."""

from __future__ import annotations

import builtins
import errno
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dnntrick.errors import CheckpointError, CorruptedError, UnsafeFileError
from dnntrick.training.checkpoint import (
    Checkpointer,
    Position,
    listing,
    load,
    load_latest,
    read_state,
    read_weights,
    rng_state,
    set_rng_state,
)
from dnntrick.training.loop import EarlyStopping, FitResult
from dnntrick.training.resume import spec_diff
from tests.conftest import REPO, write_spec


def parts(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 6)).sum().backward()
    optimizer.step()  # the optimizer now has moments to save
    stopper = EarlyStopping(None)
    stopper.best, stopper.best_epoch, stopper.bad_epochs = 0.5, 2, 1
    stopper.best_state = {k: v.clone() for k, v in model.state_dict().items()}
    return {"model": model, "optimizer": optimizer, "early_stopping": stopper}


def saved(folder: Path, epochs: tuple[int, ...] = (2, 3), best: int = 2) -> Checkpointer:
    keeper = Checkpointer(folder, "name: x\n")
    p, g = parts(), torch.Generator().manual_seed(1)
    for epoch in epochs:
        keeper.save(Position(epoch + 1), p, g, FitResult(history=[{"epoch": epoch}]), best)
    return keeper


def test_round_trip_restores_everything(tmp_path: Path):
    p = parts()
    g = torch.Generator().manual_seed(7)
    g_state = g.get_state()
    torch.manual_seed(11)
    random.seed(12)
    np.random.seed(13)
    keeper = Checkpointer(tmp_path / "checkpoints", "name: x\n")
    result = FitResult(history=[{"epoch": 1, "train_loss": 0.25}], train_seconds=3.0)
    at = Position(2, 7, g_state, torch.tensor(1.5), torch.tensor(9), 0.5)
    keeper.save(at, p, g, result)
    expected = (torch.rand(3), random.random(), np.random.rand())

    q, g2, result2 = parts(seed=99), torch.Generator(), FitResult()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)  # scrambled, then restored
    loaded = load_latest(tmp_path)
    position = keeper.restore(loaded, q, g2, result2)
    assert loaded.path.name == "epoch-0001-step-000007.pt"
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == (
        expected[0].tolist(),
        expected[1],
        expected[2],
    )
    assert torch.equal(g2.get_state(), g_state)
    assert (position.epoch, position.step, position.seconds) == (2, 7, 0.5)
    assert position.loss_sum == 1.5 and position.correct == 9
    for a, b in zip(p["model"].parameters(), q["model"].parameters(), strict=True):
        assert torch.equal(a, b)
    sa, sb = p["optimizer"].state_dict()["state"], q["optimizer"].state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert q["early_stopping"].state_dict()["best_epoch"] == 2
    assert q["early_stopping"].bad_epochs == 1 and result2.train_seconds == 3.0
    assert result2.history == [{"epoch": 1, "train_loss": 0.25}]


def test_scheduler_or_any_state_dict_object_is_saved(tmp_path: Path):
    p = parts()
    p["scheduler"] = torch.optim.lr_scheduler.StepLR(p["optimizer"], step_size=1, gamma=0.5)
    p["optimizer"].step()
    p["scheduler"].step()
    Checkpointer(tmp_path).save(Position(2), p, torch.Generator(), FitResult())
    q = parts()
    q["scheduler"] = torch.optim.lr_scheduler.StepLR(q["optimizer"], step_size=1, gamma=0.5)
    Checkpointer(tmp_path).restore(load(tmp_path, "epoch-0001"), q, torch.Generator(), FitResult())
    assert q["scheduler"].last_epoch == 1 and q["scheduler"].get_last_lr() == [0.005]


def test_keeps_last_and_best_and_no_temp_files(tmp_path: Path):
    saved(tmp_path, epochs=(1, 2, 3, 4), best=2)
    assert listing(tmp_path) == ["epoch-0002", "epoch-0004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0002.pt",
        "epoch-0002.safetensors",
        "epoch-0004.pt",
        "epoch-0004.safetensors",
    ]


def test_rng_state_is_plain_tensors_and_ints():
    state = rng_state()
    torch.save(state, buffer := __import__("io").BytesIO())
    buffer.seek(0)
    back = torch.load(buffer, weights_only=True)  # would fail on any non-plain object
    before = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(back)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == before


class Payload:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path, how: str):
    saved(tmp_path / "ck")
    sentinel = tmp_path / "pwned"
    target = tmp_path / "ck" / "epoch-0003.pt"
    evil = {"format": 1, "payload": Payload(sentinel)}
    if how == "torch.save":
        torch.save(evil, target)
    else:
        target.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(UnsafeFileError) as info:
        read_state(target)
    assert not sentinel.exists()
    assert str(info.value).startswith(f"{target}: refused: it asks to import posix.system")


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_damaged_checkpoint_names_it_and_the_previous_good_one(
    tmp_path: Path, suffix: str, damage: str
):
    folder = tmp_path / "checkpoints"
    saved(folder, epochs=(2, 3), best=2)
    bad = folder / f"epoch-0003.{suffix}"
    data = bad.read_bytes()
    bad.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "random": os.urandom(len(data))}[damage]
    )
    with pytest.raises(CorruptedError) as info:
        load_latest(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{bad}: corrupted (")
    assert f"the previous good checkpoint is {folder / 'epoch-0002.pt'}" in message
    assert load(folder, "epoch-0002").state["epoch"] == 3  # the older one is still good


def test_damaged_weights_file_alone(tmp_path: Path):
    (tmp_path / "w.safetensors").write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":')
    with pytest.raises(CorruptedError, match=r"w.safetensors: corrupted"):
        read_weights(tmp_path / "w.safetensors")


class FullFile:
    """A file on a full disk: part of the data lands, then write raises ENOSPC."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        self.handle.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)


def disk_full(monkeypatch: pytest.MonkeyPatch, when) -> None:
    """Make writes to temp files whose path satisfies `when(path)` fail with ENOSPC."""
    real_open = builtins.open

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        failing = "w" in mode and str(path).endswith(".tmp") and when(str(path))
        return FullFile(handle) if failing else handle

    monkeypatch.setattr(builtins, "open", opener)


def test_disk_full_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "checkpoints"
    keeper = saved(folder, epochs=(1,), best=1)
    disk_full(monkeypatch, lambda path: True)
    with pytest.raises(CheckpointError, match=r"the disk is full; the previous checkpoint .*0001"):
        keeper.save(Position(3), parts(), torch.Generator(), FitResult())
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch-0001.pt",
        "epoch-0001.safetensors",
    ]  # no temp file left
    assert load_latest(tmp_path).path.name == "epoch-0001.pt"


def test_disk_full_while_training_exits_1_and_keeps_the_checkpoint(
    cli, monkeypatch, tmp_path: Path, tiny_root: Path
):
    spec = write_spec(tmp_path, f"data: {{root: {tiny_root}, val_size: 100}}\n"
                      "model: {hidden: [8]}\ntrain: {epochs: 3, batch_size: 100}\n")  # fmt: skip
    writes = 0

    def second_checkpoint(path: str) -> bool:
        nonlocal writes
        writes += "/checkpoints/" in path
        return writes > 2  # the first checkpoint's two files land

    disk_full(monkeypatch, second_checkpoint)
    code, out, err = cli("train", str(spec), "--out", str(tmp_path / "runs"), "-q")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "runs").iterdir()
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"cannot write checkpoint {run_dir}/checkpoints/epoch-0002: the disk is full" in err
    assert f"the previous checkpoint {run_dir}/checkpoints/epoch-0001.pt is intact" in err
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert load_latest(run_dir).state["epoch"] == 2


def test_disk_full_for_run_files_is_one_line(cli, monkeypatch, tmp_path: Path, tiny_root: Path):
    spec = write_spec(tmp_path, f"data: {{root: {tiny_root}, val_size: 100}}\n")
    disk_full(monkeypatch, lambda path: path.endswith("spec.yaml." + str(os.getpid()) + ".tmp"))
    code, _, err = cli("train", str(spec), "--out", str(tmp_path / "runs"), "-q")
    assert code == 1 and err.count("\n") == 1 and "spec.yaml: the disk is full" in err


def test_spec_diff_lists_changed_keys():
    old = "name: a\ntrain:\n  epochs: 3\n  optimizer: {name: sgd, lr: 0.01}\n"
    new = "name: a\ntrain:\n  epochs: 5\n  optimizer: {name: sgd, lr: 0.1}\n"
    assert spec_diff(old, new) == ["train.epochs: 3 → 5", "train.optimizer.lr: 0.01 → 0.1"]


SAVER = """
import sys, torch
from torch import nn
from dnntrick.training.checkpoint import Checkpointer, Position
from dnntrick.training.loop import EarlyStopping, FitResult
model = nn.Linear(2000, 4000)  # 32 MB of weights: a save takes long enough to be caught
parts = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
         "early_stopping": EarlyStopping(None)}
keeper = Checkpointer(__import__("pathlib").Path(sys.argv[1]))
for epoch in range(1, 10_000):
    with torch.no_grad():
        model.bias.fill_(epoch)
    keeper.save(Position(epoch + 1), parts, torch.Generator(), FitResult())
    print(epoch, flush=True)
"""


@pytest.mark.integration
def test_sigkill_during_save_leaves_previous_checkpoint_loadable(tmp_path: Path):
    folder = tmp_path / "checkpoints"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "1"  # one complete checkpoint exists
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tmp") for p in folder.iterdir()):  # a save is under way
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert any(p.name.endswith(".tmp") for p in folder.iterdir())  # killed mid-write
    loaded = load_latest(tmp_path)
    epoch = loaded.state["epoch"] - 1
    assert epoch >= 1 and torch.all(loaded.weights["bias"] == epoch)
    # the next save clears the half-written temp files
    Checkpointer(folder).save(Position(epoch + 2), parts(), torch.Generator(), FitResult())
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())
