"""The `dnntrick` command line. One module per command; heavy imports (torch) happen inside the
commands, so `dnntrick --help` and `dnntrick check` stay fast.
"""

from __future__ import annotations

import sys

import typer

from dnntrick.errors import DnntrickError

app = typer.Typer(
    name="dnntrick",
    help="Train MLPs with the tricks that make deep networks train, and compare them honestly.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from dnntrick.cli import check, data, train

    for module in (train, check):
        module.register(app)
    app.add_typer(data.app, name="data")


def main() -> None:
    """Console entry point: user errors print one line and exit with their code, no traceback."""
    _register()
    try:
        app()
    except DnntrickError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
