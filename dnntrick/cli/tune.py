"""`dnntrick tune`: search a spec's hyperparameters with Optuna (TPE, pruning, SQLite storage),
each trial a normal run per seed; `--resume TUNE_DIR` continues a study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dnntrick.cli.common import DeviceOpt, OutOpt


def _dist_option(name: str, help_text: str) -> Any:
    """A repeatable KEY=DIST option (tune's --search, compare's --tune)."""
    return typer.Option(name, metavar="KEY=DIST", help=help_text, show_default=False)


SearchOpt = Annotated[
    list[str] | None,
    _dist_option(
        "--search",
        "A key and its distribution: loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or "
        "choice:A,B,... (values as YAML). Repeat for several keys.",
    ),
]
TuneOpt = Annotated[
    list[str] | None,
    _dist_option(
        "--tune",
        "Tune KEY per variant first (on seeds disjoint from the comparison's), as `dnntrick "
        "tune --search`; then compare each variant at its best.",
    ),
]
TrialsOpt = Annotated[
    int | None, typer.Option("--trials", help="Trials in the study (with --resume: the new total).")
]
JobsOpt = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Trials at once (default 1).")
]


def tuner(search: list[str] | None, trials: int | None) -> Any:
    """compare --tune's TuneVariants, or None without --tune."""
    if not search:
        if trials is not None:
            from dnntrick.errors import UsageError

            raise UsageError("--trials sets compare --tune's study size; add --tune KEY=DIST")
        return None
    from dnntrick.tuning.api import DEFAULT_TRIALS
    from dnntrick.tuning.compare import TuneVariants

    return TuneVariants(search, DEFAULT_TRIALS if trials is None else trials)


def tune(
    spec: Annotated[
        str | None, typer.Argument(metavar="SPEC", help="The spec to tune.", show_default=False)
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY=VALUE", help="Dotted overrides.", show_default=False),
    ] = None,
    search: SearchOpt = None,
    trials: TrialsOpt = None,
    seeds: Annotated[
        int, typer.Option("--seeds", min=1, help="Runs per trial (seeds s0, s0+1, …).")
    ] = 1,
    jobs: JobsOpt = None,
    pruner: Annotated[
        str, typer.Option("--pruner", help="median, halving (successive halving) or none.")
    ] = "median",
    sampler_seed: Annotated[
        int | None, typer.Option("--seed", help="TPE's seed (default: the spec's seed).")
    ] = None,
    executor: Annotated[
        str, typer.Option("--executor", help="Worker processes here (process), or Ray tasks (ray).")
    ] = "process",
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", metavar="TUNE_DIR", help="Continue this study.", show_default=False
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help="Objective by trial and by each key."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="tune.json on stdout; progress on stderr.")
    ] = False,
    out: OutOpt = Path("runs"),
    device: DeviceOpt = None,
) -> None:
    """Tune a spec: Optuna's TPE proposes values, each trial runs on --seeds seeds (objective:
    their mean best validation accuracy), clearly worse trials stop early."""
    from rich.console import Console

    from dnntrick.errors import UsageError
    from dnntrick.tuning.api import tune_spec

    if plot is not None and (plot.suffix.lower() != ".png" or not plot.parent.resolve().is_dir()):
        raise UsageError(f"--plot {plot}: give a .png in an existing folder")
    console = Console(stderr=as_json, highlight=False)
    if resume is not None:
        if spec or overrides or search:
            raise UsageError("--resume TUNE_DIR continues a study as it was: give no SPEC/--search")
        from dnntrick.tuning.study import resume_tune

        result = resume_tune(resume, trials, console)
    else:
        if spec is None:
            raise UsageError("give a SPEC to tune (or --resume TUNE_DIR)")
        extra = [f"device={device}"] if device else []
        result = tune_spec(
            spec,
            [*(overrides or []), *extra],
            search or [],
            trials,
            seeds,
            jobs,
            pruner,
            sampler_seed,
            executor,
            out,
            console,
        )
    best = result.best
    if best:
        console.print(
            f"[bold]best[/] trial {best['number']}: "
            + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in best["values"].items()
            )
            + f" → {best['value']:.4f}"
            + (f" ± {best['value_std']:.4f}" if best["value_std"] else "")
        )
    if plot is not None:
        result.plot(plot)
    console.print(f"[dim]wrote {result.folder}/study.db, trials.csv, tune.json, best.yaml[/]")
    if as_json:
        typer.echo(json.dumps(result.document, indent=2))


def register(app: typer.Typer) -> None:
    app.command()(tune)
