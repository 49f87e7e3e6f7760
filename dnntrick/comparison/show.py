"""What `dnntrick compare` prints at the end: the results table with its footnotes, the files
written, one line per failure, and, for a stopped comparison, how to continue it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dnntrick.comparison.report import print_failures, results_table

if TYPE_CHECKING:
    from rich.console import Console

    from dnntrick.comparison.session import Comparison, Outputs


def print_comparison(
    result: Comparison,
    console: Console,
    echo: Callable[..., None],
    outputs: Outputs,
    as_json: bool = False,
) -> None:
    """The table and its notes on `console`; comparison.json (with `as_json`) on stdout through
    `echo`; the failures and the resume line on stderr (`echo(line, err=True)`, as typer.echo)."""

    def echo_err(line: str) -> None:
        echo(line, err=True)

    variants, base = result.variants, result.baseline
    table, same = results_table(variants, result.stats, base, result.target)
    console.print(table)
    if same:
        console.print("[dim]same for all: " + " · ".join(same) + "[/]")
    console.print(
        f"[dim]Δ: test accuracy minus {base.label}'s, paired by seed "
        f"({', '.join(map(str, result.document['seeds']))}), mean with its 95% t interval; "
        "best in green.[/]"
    )
    for note in result.notes:
        console.print(f"[dim]{note}[/]")
    plots: list[Path | None] = [] if result.stopped else [outputs.plot, outputs.plot_gradients]
    extra = [str(p) for p in (outputs.csv_file, *plots) if p]
    own = [f"{result.folder}/comparison.json|csv"] if result.written else []
    if own or extra:
        console.print(f"[dim]wrote {', '.join([*own, *extra])}[/]")
    if as_json:
        echo(json.dumps(result.document, indent=2))
    print_failures(variants, echo_err)
    if result.stopped:
        runs = sum(len(v.runs) for v in variants)
        message = (
            f"error: interrupted ({result.document['interrupted']}): "
            f"{runs - result.missing} of {runs} runs finished; "
            f"continue with: {result.resume_command}"
        )
        echo_err(message)
