"""Ctrl-C and SIGTERM over the whole life of a run, from the spec's loading to its last write.

The first SIGINT/SIGTERM is recorded, never acted on mid-write: the run stops at its next safe
point (after the current training step, or after the current file of the finishing writes),
leaving a folder that is either resumable (a checkpoint consistent with metrics.jsonl) or
finished (summary.json, written last, is the commit point). A second signal stops at once:
every file is written atomically, so leaving mid-write corrupts nothing. A signal that arrives
once everything is written stops nothing and says so.

Torch-free, so the command line can catch signals before it imports torch (seconds).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from dnntrick.errors import EXIT_SIGINT, EXIT_SIGTERM, Interrupted

EXIT_CODES = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}

# What the first signal does in each stage of a run (the notice printed when it arrives)
NOTICES = {
    "starting": "stopping before training starts",
    "training": "finishing this step and saving a checkpoint",
    "finishing": "stopping after this write; the last checkpoint resumes the run",
}


def _code(signum: int) -> int:
    return EXIT_CODES.get(signal.Signals(signum), EXIT_SIGINT)


class Interrupt:
    """The process's signal state. `signum`: the pending signal (0: none); `stage`: where the
    run stands (starting → training → finishing → finished); `hint`: how to resume, once the
    run directory is known. The loop reads `requested` after each step (a Python attribute, no
    sync); the runner calls `check` at each safe point of the rest of the run."""

    def __init__(self) -> None:
        self.depth = 0  # nested signals_caught scopes (the CLI's, then run_spec's)
        self.reset()

    def reset(self) -> None:
        self.signum = 0
        self.hint = ""
        self.stage = "starting"
        self.run_dir: Any = None

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stage == "finished":  # everything is written: nothing to stop or lose
            print(
                f"\n{name}: the run had already finished ({self.run_dir} is complete); "
                "nothing to stop",
                file=sys.stderr,
                flush=True,
            )
            return
        if self.signum:
            raise Interrupted(
                f"interrupted again ({name}): stopped at once; every file written so far is "
                f"whole{self.hint}",
                _code(signum),
            )
        self.signum = signum
        print(
            f"\n{name}: {NOTICES[self.stage]} (press Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def error(self, checkpoint: Any = None) -> Interrupted:
        """The Interrupted error for the pending signal; `checkpoint`: the .pt that resumes."""
        name = signal.Signals(self.signum).name
        if self.stage == "starting":
            return Interrupted(
                f"interrupted ({name}) before training started; nothing was written",
                _code(self.signum),
            )
        if self.stage == "finished":  # the signal came during the commit write
            return Interrupted(
                f"interrupted ({name}) as the run finished; {self.run_dir} is complete "
                "(summary.json written): nothing to resume",
                _code(self.signum),
            )
        where = f"checkpoint saved: {checkpoint}" if checkpoint else "no checkpoint written"
        return Interrupted(f"interrupted ({name}); {where}{self.hint}", _code(self.signum))

    def check(self, checkpoint: Any = None) -> None:
        """Raise the pending signal's Interrupted, if there is one (a safe point)."""
        if self.signum:
            raise self.error(checkpoint)


INTERRUPT = Interrupt()  # signals are process-wide, so is their state


@contextlib.contextmanager
def signals_caught(finished: Callable[[], None] | None = None) -> Iterator[Interrupt]:
    """Catch SIGINT/SIGTERM into INTERRUPT for the duration, then restore the old handlers
    (typer's KeyboardInterrupt handling applies again outside). Nested scopes share the outer
    one's state, so a signal caught while the CLI imports torch stops the run it starts.
    `finished` (the command line's `process_end`): called instead of the restore when the run
    finished in a process that is this one command (`process_start`), so that no moment is left
    between the two in which a signal would say less; elsewhere (tests, a notebook) the old
    handlers come back."""
    if INTERRUPT.depth:
        INTERRUPT.depth += 1
        try:
            yield INTERRUPT
        finally:
            INTERRUPT.depth -= 1
        return
    INTERRUPT.reset()
    _reached.clear()
    if threading.current_thread() is not threading.main_thread():  # only main may set handlers
        yield INTERRUPT
        return
    previous = {s: signal.signal(s, INTERRUPT.handle) for s in EXIT_CODES}
    INTERRUPT.depth = 1
    try:
        yield INTERRUPT
    finally:
        if finished is not None and _whole_process and INTERRUPT.stage == "finished":
            finished()  # its handlers replace ours: a later signal says it stopped nothing
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        INTERRUPT.depth = 0
        INTERRUPT.reset()


def _sigterm_as_error(signum: int, frame: Any) -> None:
    raise Interrupted(f"interrupted ({signal.Signals(signum).name})", _code(signum))


def _nothing_to_stop(signum: int, frame: Any) -> None:
    print(
        f"\n{signal.Signals(signum).name}: the command had finished; nothing to stop",
        file=sys.stderr,
        flush=True,
    )


def process_start() -> None:
    """The command line's first moments, before a command catches signals itself: SIGTERM
    raises Interrupted (exit 143, one line) as SIGINT raises KeyboardInterrupt (exit 130),
    instead of ending the process with no word."""
    global _whole_process
    _whole_process = True
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm_as_error)


_whole_process = False  # process_start ran: this process is one command, to its end


def process_end() -> None:
    """The command has returned, every file is written: a signal now stops nothing, and says
    so (the process exits with the command's own code)."""
    for sig in EXIT_CODES:
        signal.signal(sig, _nothing_to_stop)


def test_point(name: str) -> None:
    """A test hook, inert unless DNNTRICK_TEST_SIGNAL=NAME:K:SIG[:TIMES] is set (tests/training/
    test_signals.py): the K-th time the run reaches point NAME, send SIG (INT or TERM) to this
    process (TIMES times: 2 is the second signal that stops at once), so a test can interrupt
    at an exact moment. Points: cli (before torch's import), built, opened (the run directory),
    checkpoint (between a checkpoint's two files), fitted, summarized, weights, preprocessing,
    logs (each final file written), committed (summary.json written), finished."""
    wanted = os.environ.get("DNNTRICK_TEST_SIGNAL")
    if not wanted:
        return
    point, count, sig, *times = wanted.split(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count):
        for _ in range(int(times[0]) if times else 1):
            os.kill(os.getpid(), signal.Signals[f"SIG{sig}"])


_reached: dict[str, int] = {}  # test_point: how often each point was reached
