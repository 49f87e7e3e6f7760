"""`dnntrick compare`: run specs (× seeds × --vary grid) and/or read run directories, then show
one row per variant with mean ± std over seeds and the paired difference against a baseline."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from dnntrick.cli.common import DeviceOpt, OutOpt
from dnntrick.cli.tune import TrialsOpt, TuneOpt, tuner

INSTALL = "pip install 'dnntrick[ray]'"  # as comparison/session.py says it


class ExecutorName(StrEnum):
    process = "process"
    ray = "ray"


Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="SPEC|RUN_DIR|KEY=VALUE...",
        help="Spec files to run, run directories (or folders of them) to read as they are, and "
        "dotted overrides KEY=VALUE applied to every spec.",
        show_default=False,
    ),
]


def compare(
    inputs: Inputs = None,
    seeds: Annotated[
        int,
        typer.Option("--seeds", min=1, help="Runs per spec variant, with seeds s0, s0+1, …"),
    ] = 3,
    vary: Annotated[
        list[str] | None,
        typer.Option(
            "--vary",
            metavar="KEY=V1,V2,...",
            help="One variant per value; several --vary make a grid.",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", "-j", min=1, help="Runs at once (default: what the machine can hold)."
        ),
    ] = None,
    target: Annotated[
        float | None,
        typer.Option("--target", help="Show epochs to reach this val accuracy (0-1, e.g. 0.88)."),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Variant the others are compared with (default: first)."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help="Write val accuracy / loss curves."),
    ] = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", metavar="FILE", help="Also write the per-run CSV here.")
    ] = None,
    plot_gradients: Annotated[
        Path | None,
        typer.Option(
            "--plot-gradients",
            metavar="FILE.png",
            help="Write gradient norms by depth (runs with train.diagnostics).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="comparison.json on stdout; table and progress on stderr."),
    ] = False,
    executor: Annotated[
        ExecutorName,
        typer.Option(
            "--executor",
            help="Where the runs execute: worker processes here, or Ray tasks (local Ray "
            f"instance, or the cluster at --address; needs {INSTALL}).",
        ),
    ] = ExecutorName.process,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            metavar="ADDR",
            help="With --executor ray: an existing Ray cluster ('auto', 'ray://HOST:10001').",
            show_default=False,
        ),
    ] = None,
    tune: TuneOpt = None,
    trials: TrialsOpt = None,
    out: OutOpt = Path("runs"),
    device: DeviceOpt = None,
) -> None:
    """Compare tricks honestly: every variant runs on the same seeds (same data split and order),
    and each is judged against the baseline by the 95% CI of the paired difference."""
    from rich.console import Console

    from dnntrick.comparison.report import print_failures, results_table
    from dnntrick.comparison.session import run_comparison

    console = Console(stderr=as_json, highlight=False)
    result = run_comparison(
        list(inputs or []),
        seeds=seeds,
        vary=list(vary or []),
        jobs=jobs,
        target=target,
        baseline=baseline,
        executor=executor.value,
        address=address,
        out=out,
        device=device,
        console=console,
        plot=plot,
        csv_file=csv_file,
        plot_gradients=plot_gradients,
        tuner=tuner(tune, trials),
    )
    variants, base = result.variants, result.baseline
    table, same = results_table(variants, result.stats, base, target)
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
    written = [
        f"{result.folder}/comparison.json|csv",
        *(str(p) for p in (plot, csv_file, plot_gradients) if p),
    ]
    console.print(f"[dim]wrote {', '.join(written)}[/]")
    if as_json:
        typer.echo(json.dumps(result.document, indent=2))
    print_failures(variants, lambda line: typer.echo(line, err=True))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    app.command()(compare)
