"""train.threads: what a run's torch thread count is, where it is shown and recorded, and that
it is put back afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.training.build import AUTO_THREADS, resolve_threads
from dnntrick.training.report import Reporter
from tests.conftest import run_cli, tiny_overrides, write_spec

SPEC = "model: {hidden: [8]}\ntrain: {epochs: 1, batch_size: 100}\n"


class ThreadsSeen(Reporter):
    """Records the header and torch's thread count at every epoch end (inside the run)."""

    def __init__(self) -> None:
        self.header: dict[str, Any] = {}
        self.threads: list[int] = []

    def start(self, title: str, details: dict[str, Any]) -> None:
        self.header = details

    def epoch_end(self, row: dict[str, Any], samples_per_second: float) -> None:
        self.threads.append(torch.get_num_threads())


@pytest.fixture
def two_threads_outside():
    """torch at 2 threads around the test (so a run's 1 and the restore are both visible)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def train(tmp_path: Path, tiny_root: Path, *overrides: str, threads: int | None = None):
    spec = load_spec(write_spec(tmp_path, SPEC), [*tiny_overrides(tiny_root, 2), *overrides])
    seen = ThreadsSeen()
    result = run_spec(spec, tmp_path / "runs", seen, threads=threads)
    return result.summary, seen


@pytest.mark.parametrize(
    ("override", "env", "inherited", "expected"),
    [
        ("train.threads=auto", None, None, AUTO_THREADS),
        ("train.threads=1", None, 2, 1),  # explicit wins, over compare's count too
        # two threads on busy cores take seconds (the point of auto): outside the fast lane
        pytest.param("train.threads=2", None, None, 2, marks=pytest.mark.integration),
        # compare's workers: the plan's count
        pytest.param("train.threads=auto", None, 2, 2, marks=pytest.mark.integration),
        # OMP_NUM_THREADS=2: torch started with 2
        pytest.param("train.threads=auto", "2", None, 2, marks=pytest.mark.integration),
    ],
)
@pytest.mark.usefixtures("two_threads_outside")
def test_the_run_trains_with_the_threads_asked_for_and_restores_them(
    tmp_path: Path,
    tiny_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    override: str,
    env: str | None,
    inherited: int | None,
    expected: int,
):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    if env is not None:  # torch read it at start-up: here the fixture's 2 stands for that
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    summary, seen = train(tmp_path, tiny_root, override, threads=inherited)
    assert seen.threads == [expected, expected]  # both epochs, read inside the loop
    assert summary["threads"] == expected
    plural = "s" if expected > 1 else ""
    assert seen.header["device"] == f"cpu ({expected} thread{plural})"
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["threads"] == expected
    assert torch.get_num_threads() == 2  # put back


def test_torchrun_ranks_keep_their_threads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_threads("auto") == torch.get_num_threads()
    assert resolve_threads(4) == 4
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_threads("auto") == AUTO_THREADS


@pytest.mark.parametrize(
    ("value", "shown"),
    [("0", "0"), ("-1", "-1"), ("1025", "1025"), ("true", "true"), ("2.5", "2.5"), ("x", "'x'")],
)
def test_bad_threads_exit_2_with_one_line(cli, tmp_path: Path, value: str, shown: str):
    path = write_spec(tmp_path, SPEC)
    expected = (
        f"error: {path}: train.threads: expected auto or a number of threads from 1 to 1024 "
        f"(got {shown})\n"
    )
    for args in (["check", str(path), f"train.threads={value}"], ["train", str(path)]):
        if args[0] == "train":
            args += ["--threads", value, "--out", str(tmp_path / "runs")]
        code, out, err = cli(*args)
        assert (code, out, err) == (2, "", expected)
    assert not (tmp_path / "runs").exists()


@pytest.mark.integration
def test_threads_option_overrides_the_spec(tmp_path: Path, tiny_root: Path):
    path = write_spec(tmp_path, SPEC + "name: t\n")
    args = ["train", str(path), *tiny_overrides(tiny_root), "train.threads=1"]
    done = run_cli(*args, "--threads", "2", "--json", "--out", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["threads"] == 2
    assert "device cpu (2 threads)" in done.stderr  # the header, on stderr with --json
