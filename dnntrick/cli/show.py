"""`dnntrick show`: one run directory: its summary, how its spec differs from the defaults, its
learning curves (a table; `--plot` a PNG)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from dnntrick.errors import UsageError

EPOCH_COLUMNS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
MAX_ROWS = 20  # longer runs: evenly spaced epochs, the first and last among them


def _num(value: Any, fmt: str = ".4f") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    return format(value, fmt) if math.isfinite(value) else str(value)


def _value(value: Any) -> str:
    """A spec value as the YAML flow style would show it; null as —."""
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value).replace('"', "")


def shown_epochs(n: int) -> list[int]:
    """Indices of the epoch rows printed: all of them up to MAX_ROWS, else evenly spaced."""
    if n <= MAX_ROWS:
        return list(range(n))
    return sorted({round(i * (n - 1) / (MAX_ROWS - 1)) for i in range(MAX_ROWS)})


def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", metavar="RUN_DIR")],
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the learning curves (PNG).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Summary, spec changes and history as JSON on stdout.")
    ] = False,
) -> None:
    """Show RUN_DIR: status, summary, the spec's fields that differ from the defaults, and the
    learning curves."""
    from dnntrick.runs import show_run

    if plot is not None and not plot.parent.is_dir():
        raise UsageError(f"--plot {plot}: folder {plot.parent} does not exist; create it first")
    shown = show_run(run_dir)
    if plot is not None:
        if not shown["history"]:
            raise UsageError(f"--plot: {run_dir} has no finished epoch to plot")
        plot_curves(shown, plot)
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    _print(shown)
    if plot is not None:
        typer.echo(f"learning curves: {plot}", err=True)


def plot_curves(shown: dict[str, Any], path: Path) -> None:
    """Loss and accuracy against epoch (train and validation; the test figures as a dotted line
    when the run finished) as a PNG at `path`."""
    from dnntrick.comparison.plots import curves_figure, save_png

    title = f"{shown['name']} ({shown['status']}): {Path(shown['run_dir']).name}"
    save_png(curves_figure(shown["history"], title, shown["summary"]), path)


def _print(shown: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    s = shown["summary"] or {}
    planned = f"/{shown['planned_epochs']}" if shown["planned_epochs"] else ""
    lines = [
        f"status             {shown['status']}",
        f"started            {shown['started']}",
        f"dataset            {shown['dataset'] or '—'}",
        f"epochs             {shown['epochs']}{planned}",
    ]
    if s:
        lines += [
            f"test accuracy      {_num(s.get('test_accuracy'))}",
            f"test loss          {_num(s.get('test_loss'))}",
            f"best val accuracy  {_num(s.get('best_val_accuracy'))} "
            f"(best epoch {s.get('best_epoch')})",
            f"train time         {_num(s.get('train_seconds'), '.1f')} s, "
            f"{_num(s.get('samples_per_second'), ',.0f')} samples/s on {s.get('device')}",
            f"parameters         {_num(s.get('parameters'), ',')}",
            f"seed               {s.get('seed')}",
        ]
    if shown["stopped"]:
        lines.append(f"stopped            {shown['stopped'].get('message')}")
    console.print(f"[bold]{shown['name']}[/]  {shown['run_dir']}")
    for line in lines:
        console.print("  " + line, markup=False)
    changes = shown["spec_changes"]
    console.print("[bold]differs from the defaults[/]" + ("" if changes else ": nothing"))
    width = max((len(c["key"]) for c in changes), default=0)
    for c in changes:
        value, default = _value(c["value"]), _value(c["default"])
        console.print(f"  {c['key']:<{width}}  {value}  (default {default})", markup=False)
    history = shown["history"]
    if not history:
        console.print("no finished epoch yet")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("epoch", *EPOCH_COLUMNS):
        table.add_column(column.replace("_", " "), justify="right")
    for i in shown_epochs(len(history)):
        row = history[i]
        table.add_row(
            str(row["epoch"]),
            *(_num(row.get(k), ".4g" if k == "lr" else ".4f") for k in EPOCH_COLUMNS),
        )
    console.print(table)
    if len(history) > MAX_ROWS:
        console.print(f"({MAX_ROWS} of {len(history)} epochs; all in metrics.jsonl)")


def register(app: typer.Typer) -> None:
    app.command()(show)
