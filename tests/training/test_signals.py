"""Signals at every moment of a run: SIGINT/SIGTERM at any time end in 130/143 with one line
(or 0 when everything was already written, saying so) and leave nothing, a resumable run that
resumes to the uninterrupted run's weights bitwise, or a finished run equal to it.

Exact moments through the test hook (DNNTRICK_TEST_SIGNAL, training/signals.test_point), in
process; real delays spread over the measured life of a `python -m dnntrick train` process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from tests.conftest import REPO, RESUME_SPEC, assert_same_run, make_tiny_idx, rows, write_spec

pytestmark = pytest.mark.integration

# 4 epochs of 15 steps: training is a visible part of a process's life (torch's import is most)
SPEC = RESUME_SPEC.replace("epochs: 3", "epochs: 4").replace("batch_size: 50", "batch_size: 40")
CODES = {"INT": 130, "TERM": 143}


def same_weights(a: Path, b: Path) -> None:
    """The two runs' model.safetensors: the same bytes and the same tensors."""
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread, as the processes have (OMP_NUM_THREADS=1): sums reduce in one order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resume_in_process(run_dir: Path) -> None:
    """`train --resume` as a function (the same code as the CLI)."""
    with one_thread():
        run_spec(load_spec(run_dir / "spec.yaml"), resume=run_dir)


def before_dnntrick(code: int, err: str) -> bool:
    """Whether the signal ended the process before dnntrick caught signals: the default
    actions (killed by SIGTERM; SIGINT's KeyboardInterrupt) in the interpreter's start-up or
    the imports of __main__.py that come before `process_start()`."""
    early = ("dnntrick/__main__.py", "dnntrick/__init__.py", "errors.py", "signals.py")
    frames = [line for line in err.splitlines() if 'File "' in line and "/dnntrick/" in line]
    if code == -signal.SIGTERM:
        return err == ""
    return err.rstrip().endswith("KeyboardInterrupt") and all(
        any(name in f for name in early) for f in frames
    )


def outcome(
    code: int, err: str, out_dir: Path, sig: str, reference: Path, early: bool = False
) -> str:
    """Check one signalled run's exit and folder against the rules; its kind of ending.
    `early`: the signal came in the process's first tenth (its interpreter may be starting)."""
    runs = list(out_dir.iterdir()) if out_dir.exists() else []
    if early and before_dnntrick(code, err):  # the interpreter's start-up keeps the defaults
        assert not runs
        return "before dnntrick's code ran"
    assert "Traceback" not in err, err
    if code == 0:  # only once everything was written, and it says so
        [run_dir] = runs
        assert (run_dir / "summary.json").exists()
        same_weights(reference, run_dir)
        if sig == "none":
            return "ended before the signal"
        if err == "":  # it came as the process was exiting (the kernel freeing its memory)
            return "signalled as it exited"
        assert "nothing to stop" in err, err
        return "finished, exit 0"
    assert code == CODES[sig], (code, err)
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, f"not one error line: {err!r}"
    line = lines[0]
    assert line.startswith(f"error: interrupted (SIG{sig})") or line.startswith(
        f"error: interrupted again (SIG{sig})"
    ), err
    if not runs:
        assert "nothing was written" in line or line == f"error: interrupted (SIG{sig})", err
        return "nothing written"
    [run_dir] = runs
    if (run_dir / "summary.json").exists():
        assert "is complete" in line and not (run_dir / "stopped.json").exists(), err
        assert_same_run(reference, run_dir)
        return "finished"
    assert "resume with: dnntrick train --resume" in line, err
    assert (run_dir / "stopped.json").exists()
    resume_in_process(run_dir)
    assert_same_run(reference, run_dir)
    same_weights(reference, run_dir)
    return "resumed"


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory, tiny_root: Path) -> Path:
    return write_spec(tmp_path_factory.mktemp("signals"), SPEC.format(root=tiny_root))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> Path:
    with one_thread():
        return run_spec(load_spec(spec_path), out=tmp_path_factory.mktemp("ref")).run_dir


# (point:K, signal[:times], how the run ends); 4 epochs: checkpoint 4 is the last one
POINTS = [
    ("cli:1", "INT", "nothing written"),
    ("built:1", "TERM", "nothing written"),
    ("opened:1", "INT", "resumed"),
    ("checkpoint:2", "TERM", "resumed"),
    ("checkpoint:4", "INT", "resumed"),  # during the last checkpoint's write
    ("checkpoint:4", "TERM:2", "resumed"),  # twice: stops at once, epoch 3's checkpoint resumes
    ("fitted:1", "TERM", "resumed"),
    ("summarized:1", "INT", "resumed"),
    ("weights:1", "TERM", "resumed"),
    ("preprocessing:1", "INT", "resumed"),
    ("logs:1", "TERM", "resumed"),
    ("committed:1", "INT", "finished"),  # during summary.json's write: it is done
    ("finished:1", "TERM", "finished, exit 0"),  # after every write: nothing to stop
]


@pytest.mark.parametrize(("point", "sig", "ends"), POINTS)
def test_a_signal_at_each_moment(
    cli, monkeypatch, tmp_path: Path, spec_path: Path, reference: Path, point, sig, ends
):
    monkeypatch.setenv("DNNTRICK_TEST_SIGNAL", f"{point}:{sig}")
    with one_thread():
        code, _, err = cli("train", str(spec_path), "--out", str(tmp_path / "runs"), "-q")
    monkeypatch.delenv("DNNTRICK_TEST_SIGNAL")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert outcome(code, err, tmp_path / "runs", sig.split(":")[0], reference) == ends


def test_interrupted_twice_in_the_last_checkpoint_leaves_the_one_before(
    cli, monkeypatch, tmp_path: Path, spec_path: Path
):
    monkeypatch.setenv("DNNTRICK_TEST_SIGNAL", "checkpoint:4:INT:2")
    code, _, err = cli("train", str(spec_path), "--out", str(tmp_path / "runs"), "-q")
    [run_dir] = (tmp_path / "runs").iterdir()
    assert code == 130 and "interrupted again (SIGINT): stopped at once" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["epoch-0003.pt"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4  # epoch 4 is redone


def test_signals_at_real_delays_over_a_whole_run(tmp_path: Path):
    """24 real processes, each signalled once at a delay spread over the measured life of an
    uninterrupted one (alternately SIGINT and SIGTERM), two at a time as the measured ones ran;
    each resumed or compared. Start-up (mostly torch's import) ends with nothing written;
    the exact moments of the final writes are the test above's."""
    # more steps than above: training is a third or more of the life, beside torch's import
    root = make_tiny_idx(tmp_path / "data", n_train=2000, n_test=200)
    text = SPEC.format(root=root).replace("epochs: 4", "epochs: 5").replace("[32, 16]", "[128, 64]")
    spec_path = write_spec(tmp_path, text.replace("batch_size: 40", "batch_size: 20"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("DNNTRICK_TEST_SIGNAL", None)

    def start(out: Path) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "dnntrick", "train", str(spec_path), "-q"]
        return subprocess.Popen(
            [*command, "--out", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def opened(proc: subprocess.Popen[str], out: Path) -> float:
        """Wait for the run directory to appear (training starts); when it did."""
        while not (out.is_dir() and any(out.iterdir())) and proc.poll() is None:
            time.sleep(0.005)
        return time.perf_counter()

    def uninterrupted(k: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        proc = start(tmp_path / f"whole{k}")
        t1 = opened(proc, tmp_path / f"whole{k}")
        assert proc.wait(timeout=300) == 0
        return t1 - t0, time.perf_counter() - t1

    with ThreadPoolExecutor(2) as pool:  # two at a time, as the signalled runs below
        phases = list(pool.map(uninterrupted, range(2)))
    [reference] = (tmp_path / "whole0").iterdir()
    # the life's two phases: start-up (torch's import, the data) until the run directory
    # appears, then training and the final writes; 8 delays spread over the first, 16 over the
    # second (counted from the folder's appearance: on a busy machine start-up varies most)
    before, after = (float(np.mean(x)) for x in zip(*phases, strict=True))
    delays = [(0, f * before) for f in np.linspace(0.05, 0.95, 8)]
    delays += [(1, f * after) for f in np.linspace(0.02, 0.98, 16)]

    def signalled(k: int) -> tuple[int, str, str, Path, bool]:
        sig = "INT" if k % 2 == 0 else "TERM"
        out, (phase, delay) = tmp_path / f"run{k:02d}", delays[k]
        proc = start(out)
        if phase == 1:
            opened(proc, out)
        time.sleep(delay)
        if proc.poll() is not None:  # it ended before: nothing to signal
            sig = "none"
        else:
            proc.send_signal(signal.Signals[f"SIG{sig}"])
        _, err = proc.communicate(timeout=300)
        return proc.returncode, err, sig, out, phase == 0 and delay < 0.1 * before

    with ThreadPoolExecutor(2) as pool:
        ended = list(pool.map(signalled, range(len(delays))))
    kinds = [outcome(c, err, out, sig, reference, early) for c, err, sig, out, early in ended]
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    print(f"life {before:.1f} s + {after:.1f} s:", counts)
    assert counts.get("resumed", 0) >= 6  # many of the second phase's: while it trained


def test_a_run_that_stopped_early_resumes_into_its_end_not_past_it(
    cli, monkeypatch, tmp_path: Path, tiny_root: Path
):
    """Early stopping ended epoch 2 of 4; a signal after fit; the resume writes the summary
    and trains no epoch 3."""
    text = SPEC.format(root=tiny_root).replace("patience: 10", "patience: 1, min_delta: 10")
    spec = write_spec(tmp_path, text)
    with one_thread():
        whole = run_spec(load_spec(spec), out=tmp_path / "whole").run_dir
        monkeypatch.setenv("DNNTRICK_TEST_SIGNAL", "fitted:1:TERM")
        code, _, err = cli("train", str(spec), "--out", str(tmp_path / "runs"), "-q")
        monkeypatch.delenv("DNNTRICK_TEST_SIGNAL")
        [run_dir] = (tmp_path / "runs").iterdir()
        assert code == 143 and "epoch-0002.pt" in err
        resume_in_process(run_dir)
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2]
    assert_same_run(whole, run_dir)
