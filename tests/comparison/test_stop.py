"""Stopping runs: the Stop request filled by SIGINT/SIGTERM, and a worker process that never
outlives its parent (PR_SET_PDEATHSIG, or the watchdog alone), idle or inside a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnntrick.comparison import stop
from dnntrick.errors import Interrupted
from tests.conftest import REPO


def test_signals_fill_the_stop_request_then_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    request = stop.Stop()
    with stop.stop_on_signals(request):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs in this (main) thread at the next bytecode
        assert request.requested and not request.urgent and request.exit_code == 143
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert request.urgent and request.name == "SIGTERM" and request.count == 2
    assert signal.getsignal(signal.SIGTERM) is before


def test_in_this_process_a_run_outside_training_stops_at_once():
    request = stop.Stop()
    with stop.stop_on_signals(request), pytest.raises(Interrupted) as caught, stop.running():
        os.kill(os.getpid(), signal.SIGINT)  # e.g. while --jobs 1 builds the next run
        time.sleep(1)
        pytest.fail("the signal did not stop the run")
    assert request.requested and caught.value.exit_code == 130


def test_a_worker_stops_a_run_outside_its_handlers_and_never_raises_when_idle(monkeypatch):
    monkeypatch.setattr(stop, "_pending", 0)
    with pytest.raises(Interrupted) as caught, stop.running():
        stop._on_signal(signal.SIGTERM, None)  # e.g. while the run builds its model
    assert caught.value.exit_code == 143 and "SIGTERM) outside training" in str(caught.value)
    assert stop._on_signal(signal.SIGINT, None) is None  # idle: the worker itself goes on
    with pytest.raises(Interrupted) as caught, stop.running():  # but its next run does not
        pytest.fail("the run started")
    assert caught.value.exit_code == 130 and "before it started" in str(caught.value)


PARENT = """\
import multiprocessing, sys, time
from dnntrick.comparison import stop

def worker(kernel, busy):
    if not kernel:
        stop._die_with_parent = lambda: False  # the watchdog alone (macOS, or prctl refused)
    stop.worker_lifeline()
    if busy:
        with stop.running():
            print("ready", flush=True)
            time.sleep(60)
    print("ready", flush=True)
    time.sleep(60)

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(
        target=worker, args=(sys.argv[1] == "kernel", sys.argv[2] == "busy")
    )
    child.start()
    print(child.pid, flush=True)
    time.sleep(60)
"""


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by init, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("kernel", ["kernel", "watchdog"])
@pytest.mark.parametrize("busy", ["idle", "busy"])
def test_a_worker_dies_with_its_parent_even_a_killed_one(tmp_path: Path, kernel: str, busy: str):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen(
        [sys.executable, str(script), kernel, busy], stdout=subprocess.PIPE, text=True, env=env
    )
    assert parent.stdout is not None
    lines = {parent.stdout.readline().strip() for _ in range(2)}
    (pid,) = (int(line) for line in lines if line.isdigit())
    assert "ready" in lines and alive(pid)
    parent.kill()  # SIGKILL: no handler, no atexit, nothing of the parent runs
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
