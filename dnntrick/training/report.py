"""What a training run shows: a progress bar within each epoch, one fixed-column row per epoch,
and a final panel. `Reporter` is the silent base; `ConsoleReporter` draws with rich.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

COLUMNS = ("epoch", "train loss", "train acc", "val loss", "val acc", "lr", "time")


class Reporter:
    """Receives a run's events; prints nothing (quiet mode, tests, worker processes)."""

    def start(self, title: str, details: dict[str, Any]) -> None: ...

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def progress(self, step: int, samples_per_second: float, loss: float) -> None: ...

    def epoch_end(self, row: dict[str, Any], samples_per_second: float) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...


def _num(value: float, fmt: str) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, fmt)
    )


class ConsoleReporter(Reporter):
    """rich output on stdout (or stderr when stdout carries JSON). The progress bar shows in a
    terminal and in Jupyter (a live widget); a pipe or a log file gets the plain rows only."""

    def __init__(self, stderr: bool = False):
        self.console = Console(stderr=stderr, highlight=False)
        self.bar: Progress | None = None
        self.task: Any = None

    def start(self, title: str, details: dict[str, Any]) -> None:
        self.console.print(
            f"[bold]{title}[/]  " + "  ".join(f"[dim]{k}[/] {v}" for k, v in details.items())
        )
        self.console.print("[bold]" + "".join(f"{c:>11}" for c in COLUMNS) + "[/]")

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if not (self.console.is_terminal or self.console.is_jupyter):  # a log file: rows only
            return
        self.bar = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("train", total=steps, info="")
        self.bar.start()

    def progress(self, step: int, samples_per_second: float, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(
                self.task,
                completed=step,
                info=f"{samples_per_second:,.0f} samples/s  loss {loss:.4f}",
            )

    def epoch_end(self, row: dict[str, Any], samples_per_second: float) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        cells = [
            f"{row['epoch']:>11}",
            f"{_num(row['train_loss'], '.4f'):>11}",
            f"{_num(row['train_accuracy'], '.4f'):>11}",
            f"{_num(row['val_loss'], '.4f'):>11}",
            f"{_num(row['val_accuracy'], '.4f'):>11}",
            f"{row['lr']:>11.3g}",
            f"{row['seconds']:>10.1f}s",
        ]
        self.console.print("".join(cells))

    def message(self, text: str) -> None:
        self.console.print(text)

    def finish(self, summary: dict[str, Any]) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim")
        table.add_column()
        table.add_row("test accuracy", f"[bold green]{_num(summary['test_accuracy'], '.4f')}[/]")
        table.add_row("test loss", _num(summary["test_loss"], ".4f"))
        if "mc_test_accuracy" in summary:
            table.add_row(
                f"MC dropout ×{summary['mc_dropout_samples']}",
                f"[bold green]{_num(summary['mc_test_accuracy'], '.4f')}[/] test accuracy, "
                f"{_num(summary['mc_test_loss'], '.4f')} loss",
            )
        table.add_row(
            "best val accuracy",
            f"{_num(summary['best_val_accuracy'], '.4f')} (best epoch {summary['best_epoch']})",
        )
        stopped = " (stopped early)" if summary["stopped_early"] else ""
        table.add_row("epochs", f"{summary['epochs_run']}{stopped}")
        table.add_row(
            "train time",
            f"{summary['train_seconds']:.1f} s, "
            f"{summary['samples_per_second']:,.0f} samples/s on {summary['device']}",
        )
        table.add_row("parameters", f"{summary['parameters']:,}")
        table.add_row("run directory", str(summary["run_dir"]))
        self.console.print(Panel(table, title=f"[bold]{summary['name']}[/]", expand=False))
