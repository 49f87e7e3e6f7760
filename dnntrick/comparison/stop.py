"""Stopping a set of runs cleanly, and never leaving a worker behind.

- `Stop`: the request to stop (which signal, how many times). The first SIGINT/SIGTERM asks the
  running runs to save a checkpoint and stop after their current step, and starts no new run; a
  second one stops at once.
- `stop_on_signals(stop)`: installs the handlers that fill a `Stop` while the runs execute (the
  main thread only) and restores the previous ones after.
- `worker_lifeline()`: called first in every worker process. The worker leaves the terminal's
  process group (a Ctrl-C reaches the compare alone, which forwards it once to the workers that
  run something: a run that got it twice would stop without its checkpoint); it ignores
  SIGINT/SIGTERM while it runs nothing, and stops a run at once outside the run's own handlers
  (which save a checkpoint while it trains; see `running`); and it dies with its parent:
  PR_SET_PDEATHSIG on Linux sends it SIGTERM when the compare dies, however it dies (a training
  run then saves its checkpoint), and a watchdog thread that polls the parent covers the other
  systems and ends an idle or unresponsive worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from dnntrick.errors import EXIT_SIGINT, EXIT_SIGTERM, Interrupted
from dnntrick.training.signals import EXIT_CODES  # SIGINT → 130, SIGTERM → 143

SIGNALS = (signal.SIGINT, signal.SIGTERM)
WATCH_S = 0.5  # how often a worker checks that its parent is alive
GRACE_S = 15.0  # how long a worker whose parent died may take to save its checkpoint


class Stop:
    """A request to stop: the first signal (`signum`) and how many came (`count`)."""

    def __init__(self) -> None:
        self.signum = 0
        self.count = 0

    def request(self, signum: int) -> None:
        self.signum = self.signum or signum
        self.count += 1

    @property
    def requested(self) -> bool:
        return self.count > 0

    @property
    def urgent(self) -> bool:
        """A second signal: stop at once."""
        return self.count > 1

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(signal.Signals(self.signum), EXIT_SIGINT) if self.signum else 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def request_from_exit(self, code: int) -> None:
        """A run stopped by a signal it caught itself (in this process): record that signal."""
        self.request(signal.SIGTERM if code == EXIT_SIGTERM else signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(
    stop: Stop, doing: str = "the running runs save a checkpoint"
) -> Iterator[Stop]:
    """SIGINT/SIGTERM fill `stop` (and say what happens: `doing`) instead of raising, while
    inside. A run in this process (--jobs 1) saves a checkpoint with its own handlers while it
    trains; one that is building or summarizing (`running`) is stopped at once."""
    if threading.current_thread() is not threading.main_thread():  # only main may set handlers
        yield stop
        return

    def handle(signum: int, frame: Any) -> None:
        stop.request(signum)
        name = signal.Signals(signum).name
        if stop.count == 1:
            message = (
                f"{name}: stopping: {doing}, no new run starts (press Ctrl-C again to stop at once)"
            )
        else:
            message = f"{name} again: stopping at once"
        print(f"\n{message}", file=sys.stderr, flush=True)
        if _running.is_set():
            _running.clear()
            raise _interrupted(signum, "outside training")

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------- inside a worker process

_running = threading.Event()  # set while this worker is inside a run (see `running`)
_pending = 0  # a signal that came while no run was going: the next run does not start


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Mark this process as inside a run. In a worker (`worker_lifeline`, `task_signals`) a
    signal that comes while the run's own handlers are not installed (building, summarizing)
    then stops the run at once: nothing of it is lost that a checkpoint does not hold, and
    every file is written atomically. One that came before the run stops it before it starts."""
    if _pending:
        raise _interrupted(_pending, "before it started")
    _running.set()
    try:
        yield
    finally:
        _running.clear()


def _interrupted(signum: int, when: str) -> Interrupted:
    name = signal.Signals(signum)
    return Interrupted(f"interrupted ({name.name}) {when}", EXIT_CODES.get(name, EXIT_SIGINT))


def _on_signal(signum: int, frame: Any) -> None:
    global _pending
    if _running.is_set():
        _running.clear()
        raise _interrupted(signum, "outside training")
    _pending = _pending or signum  # idle, or importing: never raise into the worker itself


@contextlib.contextmanager
def task_signals() -> Iterator[None]:
    """For one task in a reused worker (a Ray task): SIGINT/SIGTERM as in `worker_lifeline`,
    from a clean slate, and the worker's own handlers back after. Ray's cancel raises SIGINT's
    handler in the task: a KeyboardInterrupt in the middle of `import torch` would leave the
    worker unable to import it again."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending = 0
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _pending = 0


def worker_lifeline() -> None:
    """Tie this worker process to its parent (see the module docstring)."""
    parent = os.getppid()
    with contextlib.suppress(OSError):  # already a group leader (or not allowed): keep it
        os.setpgid(0, 0)
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)
    kernel = _die_with_parent()
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(EXIT_SIGTERM)
    threading.Thread(target=_watch, args=(parent, kernel), daemon=True, name="lifeline").start()


def _die_with_parent() -> bool:
    """PR_SET_PDEATHSIG(SIGTERM): the kernel signals this process when its parent exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _watch(parent: int, kernel: bool) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_S)
    if _running.is_set():
        if not kernel:  # no PR_SET_PDEATHSIG: ask the run to checkpoint ourselves
            os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S  # the run checkpoints, then its job returns
        while _running.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
    os._exit(EXIT_SIGTERM)
