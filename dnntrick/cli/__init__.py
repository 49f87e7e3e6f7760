"""The `dnntrick` command line. One module per command; heavy imports (torch) happen inside the
commands, so `dnntrick --help` and `dnntrick check` stay fast.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time

import typer
from typer.exceptions import TyperException

from dnntrick.errors import EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, DnntrickError

app = typer.Typer(
    name="dnntrick",
    help="Train MLPs with the tricks that make deep networks train, and compare them honestly.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


RANK_EXIT_GRACE_S = 2.0  # ranks reach a shared input error within a fraction of a second

# Each command: its name -> the module in dnntrick/cli/ whose register(app) adds it, in the
# order `dnntrick --help` lists them. A new command is one line here.
COMMANDS = {
    "train": "train",
    "transfer": "transfer",
    "pretrain": "pretrain",
    "check": "check",
    "compare": "compare",
    "tune": "tune",
    "diagnose": "diagnose",
    "lr-find": "lr_find",
    "runs": "runs",
    "show": "show",
    "data": "data",
}
_registered: set[str] = set()


def _register(argv: list[str] | None = None) -> None:
    """Add the commands to the app: only the one that `argv` names when it names one (its
    module alone is imported: `dnntrick check` skips the others'), else all of them (--help)."""
    import importlib

    named = argv[0] if argv else None  # `dnntrick` takes no option but --help before it
    for name in [named] if named in COMMANDS else list(COMMANDS):
        if name in _registered:
            continue
        _registered.add(name)
        module = importlib.import_module(f"dnntrick.cli.{COMMANDS[name]}")
        if name == "data":  # a group of subcommands
            app.add_typer(module.app, name="data")
        else:
            module.register(app)


@app.callback()
def _group() -> None:
    """Keeps `dnntrick` a group of commands when one command alone is registered."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one line and exit with their code, no traceback."""
    _register(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, prog_name="dnntrick", standalone_mode=False)
    except TyperException as err:  # usage errors: one line instead of a rich panel
        if type(err).__name__ == "NoArgsIsHelpError":  # `dnntrick` alone: show the help
            print(err.format_message(), file=sys.stderr)
            sys.exit(EXIT_USAGE)
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "dnntrick"
        print(f"error: {err.format_message()} (see `{where} --help`)", file=sys.stderr)
        sys.exit(err.exit_code)
    except typer.Abort:  # Ctrl-C outside a run's own handling (click turns it into Abort)
        print("error: interrupted (SIGINT)", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    except DnntrickError as err:
        # torchrun: every rank reads the same input and gets the same signal; rank 0 says it
        said_by_rank_0 = err.exit_code in (EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM)
        if not said_by_rank_0 or os.environ.get("RANK", "0") == "0":
            print(f"error: {err}", file=sys.stderr)
        else:  # torchrun stops every rank once one exits: give rank 0 the time to say it
            time.sleep(RANK_EXIT_GRACE_S)
        sys.exit(err.exit_code)
    if code == EXIT_SIGINT:  # typer turns a KeyboardInterrupt in a command into Exit(130)
        print("error: interrupted (SIGINT)", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """The process entry point (the `dnntrick` script, `python -m dnntrick`): main(), then the
    exit without the interpreter's teardown. Freeing torch's modules and libraries one by one
    takes 0.4–0.8 s after a run (a tenth of a short one's wall time) and saves nothing: every file
    is written and closed by then. Non-daemon threads are joined and atexit handlers (Ray's
    shutdown, multiprocessing's cleanup) still run, as at a normal exit. Tests call main().
    A signal in the first moments or the last ones (outside what a command catches) still ends
    in 130/143 with one line, or, once the command is over, says that it stopped nothing."""
    from dnntrick.training.signals import process_end, process_start

    process_start()
    try:
        main()
        code = 0
    except SystemExit as done:
        code = exit_status(done.code)
    except (KeyboardInterrupt, DnntrickError) as err:  # a signal before main's own handling
        code = getattr(err, "exit_code", EXIT_SIGINT)
        print(f"error: {str(err) or 'interrupted (SIGINT)'}", file=sys.stderr)
    process_end()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (`dnntrick … | head`): nothing left to keep
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def exit_status(code: object) -> int:
    """SystemExit's code as the interpreter turns it into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
