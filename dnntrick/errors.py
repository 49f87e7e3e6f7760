"""User-facing errors: each carries a one-line message and the process exit code.

Exit codes (documented in docs/train.md): 0 ok, 1 runtime failure, 2 bad spec, data or usage,
3 training diverged, 130/143 interrupted by SIGINT/SIGTERM.
"""

import difflib
from typing import Any

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class DnntrickError(Exception):
    """An error the user can fix; the CLI prints `message` on one line, no traceback."""

    exit_code = EXIT_RUNTIME


class SpecError(DnntrickError):
    """The spec file or an override is wrong. Holds every problem found, one per line."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = head + self.problems[0]
        else:
            message = f"{head}{len(self.problems)} problems\n  " + "\n  ".join(self.problems)
        super().__init__(message)


class DataError(DnntrickError):
    """The data set is missing, unreadable or corrupt."""

    exit_code = EXIT_USAGE


class UsageError(DnntrickError):
    """A command-line argument is wrong (missing file, bad option value)."""

    exit_code = EXIT_USAGE


class DivergedError(DnntrickError):
    """The loss became NaN or infinite."""

    exit_code = EXIT_DIVERGED


class CorruptedError(DnntrickError):
    """A checkpoint or weights file cannot be read back; names the newest good one if any."""

    exit_code = EXIT_USAGE

    def __init__(self, path: object, reason: str):
        super().__init__(str(path), reason)
        self.path, self.reason = path, reason
        self.fallback: str | None = None

    def __str__(self) -> str:
        after = (
            f"the previous good checkpoint is {self.fallback}"
            if self.fallback
            else "no earlier good checkpoint was found"
        )
        return f"{self.path}: corrupted ({self.reason}); {after}"


class UnsafeFileError(DnntrickError):
    """A file would run code if loaded (a pickle naming a Python callable); it was not loaded."""

    exit_code = EXIT_USAGE


class CheckpointError(DnntrickError):
    """A checkpoint could not be written (disk full, permissions)."""


class WriteError(DnntrickError):
    """A file could not be written (disk full, permissions); nothing half-written is left."""

    def __init__(self, path: object, err: OSError):
        self.errno = err.errno
        reason = "the disk is full" if err.errno == 28 else err.strerror or str(err)  # ENOSPC
        super().__init__(f"cannot write {path}: {reason}")
        self.reason = reason


class Interrupted(DnntrickError):
    """SIGINT/SIGTERM stopped training; the message says where the checkpoint is."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def suggest(word: str, choices: Any) -> str:
    """'; did you mean X?' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
