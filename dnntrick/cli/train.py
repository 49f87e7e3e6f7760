"""`dnntrick train`: train one spec and write its run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dnntrick.cli.common import Overrides, RunOptions, run_options

OptionalSpec = Annotated[
    Path | None,
    typer.Argument(
        help="The experiment spec (.yaml); with --resume, the run's own spec.yaml by default.",
        metavar="SPEC",
        show_default=False,
    ),
]
ResumeOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        metavar="RUN_DIR",
        help="Continue this run directory from its last checkpoint.",
        show_default=False,
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="With --resume: continue even if the spec changed.")
]


@run_options
def train(
    spec: OptionalSpec = None,
    overrides: Overrides = None,
    resume: ResumeOpt = None,
    force: ForceOpt = False,
    *,
    options: RunOptions,
) -> None:
    """Train the MLP that SPEC describes; write runs/<name>-<time>/ (--resume: continue one)."""
    from dnntrick.errors import UsageError

    overrides = list(overrides or [])
    if resume is not None:
        if spec is not None and "=" in spec.name and not spec.exists():  # an override, not a file
            overrides.insert(0, str(spec))
            spec = None
        try:
            is_run = (resume / "spec.yaml").is_file()
        except OSError as err:  # a name longer than the file system allows
            raise UsageError(f"--resume: cannot look the folder up ({err.strerror})") from None
        if not is_run:
            raise UsageError(f"--resume {resume}: not a run directory (no spec.yaml)")
        spec = spec or resume / "spec.yaml"
    elif spec is None:
        raise UsageError(
            "Missing argument 'SPEC' (or --resume RUN_DIR). (see `dnntrick train --help`)"
        )
    run_training(spec, overrides, options, resume, force)


def run_training(
    spec: Path,
    overrides: list[str],
    options: RunOptions,
    resume: Path | None = None,
    force: bool = False,
) -> None:
    """Load SPEC with its overrides and train it (train, transfer and pretrain end here).
    SIGINT/SIGTERM are caught from here to the last line printed: a signal while torch is
    imported (seconds) stops the run before it writes anything, one after the summary is
    written stops nothing (training/signals.py)."""
    from dnntrick.training.signals import process_end, signals_caught, test_point

    with signals_caught(finished=process_end) as interrupt:  # a finished run: nothing to stop
        test_point("cli")  # a test hook: before torch is imported
        _run_training(spec, overrides, options, resume, force)
        interrupt.check()  # --print-config, or a signal before run_spec took over


def _run_training(
    spec: Path, overrides: list[str], options: RunOptions, resume: Path | None, force: bool
) -> None:
    from dnntrick.spec.config import dump_spec, load_spec

    overrides = [*overrides, *options.overrides()]  # --device, --threads
    resolved = load_spec(spec, overrides)
    if options.print_config:
        typer.echo(dump_spec(resolved), nl=False)
        return

    from dnntrick.runner import run_spec
    from dnntrick.training import distributed
    from dnntrick.training.build import resolve_device
    from dnntrick.training.report import ConsoleReporter, Reporter

    reporter = Reporter() if options.quiet else ConsoleReporter(stderr=options.as_json)
    with distributed.process_group(resolve_device(resolved.device)):  # torchrun: join the ranks
        result = run_spec(
            resolved,
            out=options.out,
            reporter=reporter,
            source=str(spec),
            overrides=overrides,
            resume=resume,
            force=force,
        )
        main = distributed.is_main()
    if not main:  # torchrun: rank 0 prints
        return
    if options.as_json:
        typer.echo(json.dumps(result.summary, indent=2))
    elif options.quiet:
        mc = result.summary.get("mc_test_accuracy")
        typer.echo(
            f"{resolved.name}: test_accuracy={result.summary['test_accuracy']:.4f} "
            + (f"mc_test_accuracy={mc:.4f} " if mc is not None else "")
            + f"run_dir={result.run_dir}"
        )


def register(app: typer.Typer) -> None:
    app.command()(train)
