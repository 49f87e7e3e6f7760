"""Non-finite losses (stop / skip_step), deterministic mode, and hostile input through the CLI."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dnntrick.data.datasets import FILES, write_idx
from dnntrick.errors import UsageError
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.training.checkpoint import load_latest
from dnntrick.training.report import Reporter
from dnntrick.training.rundir import make_run_dir
from tests.conftest import REPO, make_tiny_idx, write_spec

SPEC = """\
name: guard
seed: 1
data: {{root: {root}, val_size: 100}}
model: {{hidden: [16]}}
train: {{epochs: 3, batch_size: 50, optimizer: {{name: adam, lr: 0.003}}}}
"""


def nan_at(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> None:
    """Make the loss of the given training steps (1-based, counted over the run) NaN."""
    real = torch.nn.functional.cross_entropy
    count = 0

    def hooked(*args, **kwargs):
        nonlocal count
        loss = real(*args, **kwargs)
        if torch.is_grad_enabled():
            count += 1
            if count in calls:
                return loss * math.nan
        return loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", hooked)


@pytest.fixture
def spec_path(tmp_path: Path, tiny_root: Path) -> Path:
    return write_spec(tmp_path, SPEC.format(root=tiny_root))


def test_nonfinite_loss_stops_at_that_step_and_keeps_the_last_checkpoint(
    cli, monkeypatch, tmp_path: Path, spec_path: Path
):
    nan_at(monkeypatch, {15})  # epoch 2 (10 steps per epoch), step 5
    code, out, err = cli("train", str(spec_path), "--out", str(tmp_path / "runs"), "-q")
    [run_dir] = (tmp_path / "runs").iterdir()
    assert code == 3 and out == "" and err.count("\n") == 1
    assert "training diverged: loss nan at step 15 (epoch 2, step 5 of 10)" in err
    assert "last finite loss" in err and "lr 0.003" in err and "gradient norm" in err
    assert "at step 14" in err and "try a lower lr, gradient clipping or another init" in err
    assert f"the last good checkpoint {run_dir}/checkpoints/epoch-0001.pt is untouched" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "epoch-0001.pt",
        "epoch-0001.safetensors",
    ]
    assert load_latest(run_dir).state["epoch"] == 2  # it loads: 1 epoch done
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1 and "NaN" not in metrics[0]
    assert not (run_dir / "summary.json").exists()


def test_real_divergence_exits_3(cli, tmp_path: Path, spec_path: Path):
    setup = ["model={hidden: [32, 16], activation: elu}", "train.optimizer={name: sgd, lr: 10000}"]
    code, _, err = cli("train", str(spec_path), *setup, "--out", str(tmp_path / "runs"), "-q")
    assert code == 3 and "training diverged" in err and "lr 10000" in err


def test_skip_step_skips_the_update_and_counts_it(
    cli, monkeypatch, tmp_path: Path, spec_path: Path
):
    nan_at(monkeypatch, {15, 17})
    skip = ["train.on_nonfinite=skip_step", "--out", str(tmp_path / "runs"), "-q"]
    code, _, err = cli("train", str(spec_path), *skip)
    assert code == 0, err
    [run_dir] = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows] == [0, 2, 0]
    assert all(torch.isfinite(w).all() for w in load_file(run_dir / "model.safetensors").values())


def test_skip_step_that_skips_a_whole_epoch_is_divergence(
    cli, monkeypatch, tmp_path: Path, spec_path: Path
):
    nan_at(monkeypatch, set(range(11, 21)))  # all of epoch 2
    skip = ["train.on_nonfinite=skip_step", "--out", str(tmp_path / "runs"), "-q"]
    code, _, err = cli("train", str(spec_path), *skip)
    assert code == 3 and "every step of epoch 2 had a non-finite loss" in err


class SeesDeterminism(Reporter):
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def epoch_end(self, row, samples_per_second):
        self.seen.append(torch.are_deterministic_algorithms_enabled())


def test_deterministic_mode_is_on_while_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spec_path: Path
):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    on, off = SeesDeterminism(), SeesDeterminism()
    a = run_spec(load_spec(spec_path, ["train.deterministic=true"]), tmp_path / "a", reporter=on)
    assert on.seen == [True] * 3 and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.deterministic
    b = run_spec(load_spec(spec_path), tmp_path / "b", reporter=off)
    assert off.seen == [False] * 3 and not torch.backends.cudnn.deterministic
    # on the CPU the default kernels are already deterministic: the same numbers either way
    assert a.history[-1]["val_loss"] == b.history[-1]["val_loss"]


def test_checkpoint_every(tmp_path: Path, spec_path: Path):
    spec = load_spec(spec_path, ["train.epochs=5", "train.checkpoint_every=2"])
    seen: set[str] = set()

    def listing() -> set[str]:
        return {p.stem for p in (tmp_path / "runs").glob("*/checkpoints/*.pt")}

    class Watch(Reporter):
        def epoch_end(self, row, samples_per_second):
            seen.update(listing())

    run_spec(spec, tmp_path / "runs", reporter=Watch())
    # epochs 2 and 4 are checkpointed, and always the last one
    assert seen | listing() == {"epoch-0002", "epoch-0004", "epoch-0005"}
    assert "epoch-0005" in listing()


# ---- hostile input through the CLI ----


@pytest.mark.parametrize("name", ["../../x", "../escape", "/abs/x", "a/../../b", ".hidden"])
def test_path_traversal_in_name_cannot_write_outside_out(cli, tmp_path: Path, tiny_root, name):
    box = tmp_path / "box"
    box.mkdir()
    spec = write_spec(box, SPEC.format(root=tiny_root) + "# x\n").read_text()
    path = write_spec(box, spec.replace("name: guard", f"name: '{name}'"))
    before = sorted(p for p in tmp_path.rglob("*"))
    code, _, err = cli("train", str(path), "--out", str(box / "runs"))
    assert code == 2 and "name: must be letters, digits, '.', '_' or '-'" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "a\\b", ".x"])
def test_make_run_dir_refuses_escaping_names(tmp_path: Path, name: str):
    with pytest.raises(UsageError):
        make_run_dir(tmp_path / "out", name)
    assert not (tmp_path / "x").exists() and not list(tmp_path.parent.glob("x"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("magic", "not an IDX file (bad magic number 504b0304)"),
        ("labels", "labels for 50 images; the files do not belong together"),
        ("text", "not an IDX file"),
    ],
)
def test_broken_data_files_give_one_clear_line(cli, tmp_path: Path, damage: str, message: str):
    root = make_tiny_idx(tmp_path / "data", n_train=50, n_test=20, gz=False)
    labels, images = root / FILES["train_labels"], root / FILES["train_images"]
    if damage == "magic":
        images.write_bytes(b"PK\x03\x04" + images.read_bytes()[4:])
    elif damage == "labels":
        write_idx(labels, np.zeros(49, np.uint8))
    else:
        labels.write_text("label,image\n1,2\n")
    path = write_spec(tmp_path, SPEC.format(root=root).replace("val_size: 100", "val_size: 10"))
    code, out, err = cli("train", str(path), "--out", str(tmp_path / "runs"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not (tmp_path / "runs").exists()


def test_python_tag_in_a_resumed_runs_spec_runs_nothing(cli, tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sentinel = tmp_path / "sentinel"
    (run_dir / "spec.yaml").write_text(
        f"name: !!python/object/apply:os.system ['touch {sentinel}']\n"
    )
    code, _, err = cli("train", "--resume", str(run_dir))
    assert code == 2 and "is not allowed" in err and not sentinel.exists()


def test_device_side_record_reports_the_exact_first_bad_step():
    """The GPU path (no per-step read), run on the CPU: the record names the first bad step."""
    from dnntrick.errors import DivergedError
    from dnntrick.training.checkpoint import Checkpointer
    from dnntrick.training.guard import FiniteWatch

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    watch = FiniteWatch("stop", model, optimizer, steps=10, keeper=Checkpointer(None))
    watch.host_reads = False  # as on a GPU
    watch.next_poll = float("inf")  # no throttled read: only the epoch-end check reads
    losses = [2.0, 1.5, math.inf, 1.0, math.nan]
    for step, value in enumerate(losses):
        assert watch.skip(torch.tensor(value), epoch=3, step=step) is False
    with pytest.raises(DivergedError, match=r"loss inf at step 23 \(epoch 3, step 3 of 10\); "
                       r"last finite loss 1\.5, lr 0\.5, no gradient yet"):  # fmt: skip
        watch.check()


@pytest.mark.integration
def test_determinism_off_does_not_import_the_compiler():
    """set_determinism(False) with the flag already off leaves torch._inductor unimported (it
    costs ~1 s of start-up); switching it on still works."""
    import subprocess
    import sys

    probe = (
        "import sys, torch\n"
        "from dnntrick.training.guard import set_determinism\n"
        "set_determinism(False)\n"
        "print('inductor' in ' '.join(m for m in sys.modules if m.startswith('torch._inductor')))\n"
        "set_determinism(True)\n"
        "print(torch.are_deterministic_algorithms_enabled())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        cwd=REPO,
    )  # fmt: skip
    assert done.stdout.split() == ["False", "True"]
