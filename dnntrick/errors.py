"""User-facing errors: each carries a one-line message and the process exit code.

Exit codes (documented in the README): 0 ok, 1 runtime failure, 2 bad spec, data or usage,
3 training diverged, 130/143 interrupted by SIGINT/SIGTERM.
"""

EXIT_OK = 0
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
