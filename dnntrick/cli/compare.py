"""`dnntrick compare`: run specs (× seeds × --vary grid) and/or read run directories, then show
one row per variant with mean ± std over seeds and the paired difference against a baseline."""

from __future__ import annotations

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
        int | None,
        typer.Option(
            "--seeds", min=1, help="Runs per spec variant, with seeds s0, s0+1, … [default: 3]"
        ),
    ] = None,
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
        ExecutorName | None,
        typer.Option(
            "--executor",
            help="Where the runs execute: worker processes here, or Ray tasks (local Ray "
            f"instance, or the cluster at --address; needs {INSTALL}). [default: process; "
            "with --resume: the comparison's own]",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            metavar="ADDR",
            help="With --executor ray: an existing Ray cluster ('auto', 'ray://HOST:10001').",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            metavar="COMPARE_DIR",
            help="Finish a stopped comparison: run only its missing or failed runs (a cut run "
            "continues from its checkpoint), then write the whole comparison.",
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

    from dnntrick.comparison.session import Outputs, run_comparison
    from dnntrick.comparison.show import print_comparison

    console = Console(stderr=as_json, highlight=False)
    outputs = Outputs(plot, csv_file, plot_gradients)
    if resume is not None:
        from dnntrick.comparison.resume import refuse_options, resume_comparison

        given: dict[str, object] = {"SPEC|RUN_DIR|KEY=VALUE": inputs, "--seeds": seeds}
        given |= {"--vary": vary, "--target": target, "--baseline": baseline, "--device": device}
        refuse_options(given | {"--tune": tune, "--trials": trials, "--out": out != Path("runs")})
        result = resume_comparison(
            resume, jobs, executor.value if executor else None, address, console, outputs
        )
    else:
        result = run_comparison(
            list(inputs or []),
            seeds=3 if seeds is None else seeds,
            vary=list(vary or []),
            jobs=jobs,
            target=target,
            baseline=baseline,
            executor=(executor or ExecutorName.process).value,
            address=address,
            out=out,
            device=device,
            console=console,
            plot=outputs.plot,
            csv_file=outputs.csv_file,
            plot_gradients=outputs.plot_gradients,
            tuner=tuner(tune, trials),
        )
    print_comparison(result, console, typer.echo, outputs, as_json)
    if result.exit_code:  # SystemExit, not typer.Exit: a 130 here is said already (cli.main)
        raise SystemExit(result.exit_code)


def register(app: typer.Typer) -> None:
    app.command()(compare)
