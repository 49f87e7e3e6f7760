"""Shared fixtures: a tiny, learnable IDX data set written by the tests, an isolated cache, and
the path of the real Fashion-MNIST (installed by the README's set-up command; never skipped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from dnntrick.data.datasets import FILES, write_idx

# Property tests (tests/spec/test_property.py) draw the same examples on every run of the suite,
# so CI is repeatable; HYPOTHESIS_PROFILE=explore draws new ones (run it to hunt for bugs).
settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

REPO = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def make_tiny_idx(
    folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0, gz: bool = True
) -> Path:
    """Write a 10-class 28x28 IDX data set whose classes differ by a bright bar position."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            x[i, 2 * label + 4 : 2 * label + 7, 4:24] = 230
        return x, labels

    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = images(n)
        write_idx(folder / f"{FILES[split + '_images']}{suffix}", x)
        write_idx(folder / f"{FILES[split + '_labels']}{suffix}", y)
    return folder


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test downloads, and every test uses its own decoded-array cache."""
    monkeypatch.setenv("DNNTRICK_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("DNNTRICK_NO_DOWNLOAD", "1")
    monkeypatch.delenv("DNNTRICK_DATA", raising=False)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_idx(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    if not all((FASHION / f"{stem}.gz").is_file() for stem in FILES.values()):
        pytest.fail(f"Fashion-MNIST is missing in {FASHION}: run the README's set-up command")
    return FASHION


def tiny_overrides(root: Path, epochs: int = 1) -> list[str]:
    """Overrides that point any spec at the tiny data set and keep it to a few steps."""
    return [f"data.root={root}", "data.val_size=100", f"train.epochs={epochs}"]


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `python -m dnntrick ARGS` in a subprocess (the real entry point, real exit code)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dnntrick", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_probe(probe: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python code `probe` (sys.argv[1:] = args) in a fresh interpreter at the repository
    root: what a command imports (torch?) shows only in a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=REPO, check=False
    )


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Call the CLI in-process: cli(*args) -> (exit code, stdout, stderr)."""
    from dnntrick.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


# Interrupt and resume (tests/training/test_resume.py and the tests of what a resume restores)
# rrelu draws its slopes from torch's global RNG while training (like dropout): a resume that
# did not restore that RNG would differ. Adam and early stopping carry state across epochs.
RESUME_SPEC = """\
name: resume
seed: 5
data: {{root: {root}, val_size: 100}}
model: {{hidden: [32, 16], activation: rrelu}}
train:
  epochs: 3
  batch_size: 50
  optimizer: {{name: adam, lr: 0.003}}
  early_stopping: {{patience: 10, monitor: val_loss, restore_best: true}}
"""


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing column."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def assert_same_run(a: Path, b: Path) -> None:
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert rows(a) == rows(b)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for key in ("test_accuracy", "test_loss", "best_val_accuracy", "best_epoch", "epochs_run"):
        assert sa[key] == sb[key], key


def signal_at(
    monkeypatch: pytest.MonkeyPatch, call: int, training: bool, sig=signal.SIGINT, times=1
):
    """Send `sig` to this process (`times` times) in the `call`-th loss computation of training
    steps (training=True) or of evaluations (False)."""
    real = torch.nn.functional.cross_entropy
    count = 0

    def hooked(*args, **kwargs):
        nonlocal count
        if torch.is_grad_enabled() == training:
            count += 1
            if count == call:
                for _ in range(times):
                    os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", hooked)
