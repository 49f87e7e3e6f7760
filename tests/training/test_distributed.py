"""`torchrun --nproc-per-node 2 -m dnntrick train`: two gloo ranks on the CPU train like one process
(same global batch, uneven shares weighted), rank 0 alone writes and prints; the hooks do nothing
outside torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dnntrick.errors import UsageError
from dnntrick.spec.schema import Spec
from dnntrick.training import distributed
from dnntrick.training.distributed import DataParallel, SilentRunDir, check_batches, sum_across
from tests.conftest import REPO, write_spec

# batch 51 splits 26/25 between two ranks (and the last batch of 41 into 21/20): the shares'
# gradients must be weighted by their sizes to give one process's step
SPEC = """\
name: tiny
seed: 5
data: {{root: {root}, val_size: 100}}
model: {{hidden: [16], activation: relu}}
train: {{epochs: 3, batch_size: {batch}, optimizer: {{name: sgd, lr: 0.05}}}}
"""


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.run(
        [*command, "--nproc-per-node", "2", "-m", "dnntrick", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.integration
def test_two_gloo_ranks_train_like_one_process(cli, tmp_path: Path, tiny_root: Path):
    spec = write_spec(tmp_path, SPEC.format(root=tiny_root, batch=51))
    done = torchrun("train", str(spec), "--out", str(tmp_path / "two"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("tiny: test_accuracy=") == 1  # rank 0 alone prints
    (run_dir,) = (tmp_path / "two").iterdir()  # and writes: one run directory
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ranks"] == "2 (gloo)" and summary["run_dir"] == str(run_dir)
    assert (run_dir / "model.safetensors").stat().st_size > 0

    code, _, err = cli("train", str(spec), "--out", str(tmp_path / "one"), "--quiet")
    assert code == 0, err
    (one_dir,) = (tmp_path / "one").iterdir()
    one = json.loads((one_dir / "summary.json").read_text())
    two_rows, one_rows = _metrics(run_dir), _metrics(one_dir)
    assert len(two_rows) == len(one_rows) == 3
    for two_row, one_row in zip(two_rows, one_rows, strict=True):
        # the same steps on the same batches: equal up to float summation order
        for key in ("train_loss", "val_loss"):
            assert two_row[key] == pytest.approx(one_row[key], rel=1e-5), key
        for key in ("train_accuracy", "val_accuracy"):
            assert two_row[key] == pytest.approx(one_row[key], abs=0.003), key
    assert one_rows[-1]["train_loss"] < one_rows[0]["train_loss"] - 0.5  # it did learn
    assert summary["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=0.006)
    assert summary["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)

    # checkpoints under torchrun: rank 0 writes them; a resumed run (all ranks load) continues
    # 2 epochs to the 3 of the uninterrupted runs
    short = ["train", str(spec), "train.epochs=2", "--out", str(tmp_path / "resumed"), "-q"]
    assert (done := torchrun(*short)).returncode == 0, done.stderr
    (resumed_dir,) = (tmp_path / "resumed").iterdir()
    assert [p.name for p in (resumed_dir / "checkpoints").glob("*.pt")]  # rank 0 wrote them
    more = ["train", "--resume", str(resumed_dir), "train.epochs=3", "--force", "-q"]
    assert (done := torchrun(*more)).returncode == 0, done.stderr
    assert list((tmp_path / "resumed").iterdir()) == [resumed_dir]  # the same folder
    resumed_rows = _metrics(resumed_dir)
    assert [r["epoch"] for r in resumed_rows] == [1, 2, 3]
    for key in ("train_loss", "val_loss"):
        assert resumed_rows[2][key] == pytest.approx(one_rows[2][key], rel=1e-5), key


@pytest.mark.integration
def test_bad_input_under_torchrun_is_said_once(tmp_path: Path, tiny_root: Path):
    spec = write_spec(tmp_path, SPEC.format(root=tiny_root, batch=499))  # last batch: 1 image
    done = torchrun("train", str(spec), "--out", str(tmp_path / "runs"))
    assert done.returncode != 0
    message = "error: train.batch_size 499 leaves a last batch of 1 image(s) for 2 ranks"
    assert done.stderr.count(message) == 1
    assert not (tmp_path / "runs").exists()  # a start-up failure leaves nothing behind


def test_outside_torchrun_every_hook_does_nothing(tmp_path: Path):
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    model = torch.nn.Linear(3, 2)
    parallel = DataParallel(model)
    assert parallel.forward is model and parallel.ranks == 1  # the step calls the model itself
    total = torch.tensor(5.0)
    assert sum_across(total)[0] is total and total.item() == 5.0
    check_batches(501, 50)  # a last batch of 1 is fine for one process
    assert distributed.describe() == {}
    with distributed.process_group(torch.device("cpu")):
        assert not distributed.active()


def test_a_last_batch_smaller_than_the_ranks_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    check_batches(500, 50)  # even
    check_batches(504, 50)  # a last batch of 4: one row per rank
    with pytest.raises(UsageError, match="last batch of 3 image"):
        check_batches(503, 50)


def test_cuda_graphs_are_refused_under_torchrun(monkeypatch: pytest.MonkeyPatch):
    spec = Spec.model_validate(
        {"name": "g", "train": {"cuda_graphs": True}, "device": "cuda"}
    ).train
    distributed.check(spec, 500)  # one process: fine (the runner checks for CUDA itself)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(UsageError, match=r"train\.cuda_graphs: not supported under torchrun"):
        distributed.check(spec, 500)


def test_world_size_without_torchrun_variables_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with (
        pytest.raises(UsageError, match="WORLD_SIZE is set but RANK is not"),
        distributed.process_group(torch.device("cpu")),
    ):
        pass


def test_ranks_other_than_0_write_nothing(tmp_path: Path):
    run = SilentRunDir(tmp_path)
    run.write_spec("a: 1\n", None, [])
    run.append_metrics({"epoch": 1})
    run.write_summary({"x": 1})
    run.save_weights({"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_shares_weight_the_gradient_by_their_size(monkeypatch: pytest.MonkeyPatch):
    """Two ranks' shares of a batch of 5 (3 and 2 rows): DDP's average of the weighted share
    gradients equals the whole batch's mean gradient."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    whole = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), model.weight)[0]
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for me in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda me=me: me)
        parallel = DataParallel.__new__(DataParallel)  # no process group: "DDP" = the model
        parallel.model, parallel.ddp, parallel.ranks, parallel.weight = model, model, 2, 1.0
        idx = parallel.shard(torch.arange(5))
        loss = torch.nn.functional.cross_entropy(parallel.weighted_forward(x[idx]), y[idx])
        shares.append(torch.autograd.grad(loss, model.weight)[0])
    assert torch.allclose((shares[0] + shares[1]) / 2, whole, atol=1e-6)  # DDP: the mean
    unweighted = [
        torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[s]), y[s]), model.weight)[0]
        for s in (slice(0, 3), slice(3, 5))
    ]
    assert not torch.allclose((unweighted[0] + unweighted[1]) / 2, whole, atol=1e-4)


@pytest.mark.integration
def test_ctrl_c_under_torchrun_checkpoints_once_and_resumes(tmp_path: Path, tiny_root: Path):
    spec = write_spec(
        tmp_path, SPEC.format(root=tiny_root, batch=50).replace("epochs: 3", "epochs: 150")
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    out = tmp_path / "runs"
    launch = subprocess.Popen(
        [*command, "2", "-m", "dnntrick", "train", str(spec), "--out", str(out), "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*/metrics.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.2)  # training has begun once rank 0 wrote a metrics row
    launch.send_signal(signal.SIGINT)  # torchrun passes it on to the ranks
    _, stderr = launch.communicate(timeout=120)
    assert launch.returncode != 0
    assert stderr.count("error: interrupted (SIGINT); checkpoint saved: ") == 1, stderr
    (run_dir,) = out.iterdir()
    stopped_at = len(_metrics(run_dir))
    assert stopped_at < 150 and not (run_dir / "summary.json").exists()
    done = torchrun("train", "--resume", str(run_dir), "-q")
    assert done.returncode == 0, done.stderr
    rows = _metrics(run_dir)
    assert [r["epoch"] for r in rows] == list(range(1, 151))
    assert json.loads((run_dir / "summary.json").read_text())["test_accuracy"] > 0.9
