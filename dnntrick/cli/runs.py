"""`dnntrick runs`: a table of the run directories in a folder, newest first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

COLUMNS = ("name", "started", "status", "test acc", "epochs", "device", "run directory")


def runs(
    folder: Annotated[
        Path, typer.Argument(help="The folder that holds the run directories.", metavar="DIR")
    ] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="The list as JSON on stdout.")] = False,
) -> None:
    """List the run directories in DIR (default runs/): name, start, status, test accuracy,
    epochs, device. Status: finished, interrupted, diverged, or failed or running."""
    from dnntrick.folders import display
    from dnntrick.runs import list_runs

    found, skipped = list_runs(folder)
    for path, why in skipped:  # stderr: the table (or the JSON) stays what it was
        typer.echo(f"skipped {display(path)}: {why}", err=True)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in COLUMNS:
        right = column in ("test acc", "epochs")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    colors = {"finished": "green", "interrupted": "yellow", "diverged": "red"}
    for r in found:
        epochs = f"{r.epochs}/{r.planned_epochs}" if r.planned_epochs else str(r.epochs)
        table.add_row(
            r.name,
            r.started,
            f"[{colors.get(r.status, 'dim')}]{r.status}[/]",
            "—" if r.test_accuracy is None else f"{r.test_accuracy:.4f}",
            epochs,
            r.device or "—",
            display(r.run_dir),
        )
    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or file: whole rows, not the 80 columns rich assumes
        console.width = max(console.width, 200)
    if found:
        console.print(table)
    n, more = len(found), f"; {len(skipped)} skipped (above)" if skipped else ""
    typer.echo(f"{n} run director{'y' if n == 1 else 'ies'} in {display(folder)}{more}")


def register(app: typer.Typer) -> None:
    app.command()(runs)
