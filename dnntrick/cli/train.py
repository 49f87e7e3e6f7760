"""`dnntrick train`: train one spec and write its run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dnntrick.cli.common import (
    DeviceOpt,
    JsonOpt,
    OutOpt,
    Overrides,
    PrintConfigOpt,
    QuietOpt,
)

OptionalSpec = Annotated[
    Path | None,
    typer.Argument(
        help="The experiment spec (.yaml); with --resume, the run's own spec.yaml by default.",
        metavar="SPEC",
        show_default=False,
    ),
]


def train(
    spec: OptionalSpec = None,
    overrides: Overrides = None,
    out: OutOpt = Path("runs"),
    device: DeviceOpt = None,
    print_config: PrintConfigOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            metavar="RUN_DIR",
            help="Continue this run directory from its last checkpoint.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --resume: continue even if the spec changed.")
    ] = False,
) -> None:
    """Train the MLP that SPEC describes; write runs/<name>-<time>/ (--resume: continue one)."""
    from dnntrick.config import dump_spec, load_spec
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
    if device is not None:
        overrides.append(f"device={device}")
    resolved = load_spec(spec, overrides)
    if print_config:
        typer.echo(dump_spec(resolved), nl=False)
        return

    from dnntrick import distributed
    from dnntrick.report import ConsoleReporter, Reporter
    from dnntrick.runner import resolve_device, run_spec

    reporter = Reporter() if quiet else ConsoleReporter(stderr=as_json)
    with distributed.process_group(resolve_device(resolved.device)):  # torchrun: join the ranks
        result = run_spec(
            resolved,
            out=out,
            reporter=reporter,
            source=str(spec),
            overrides=overrides,
            resume=resume,
            force=force,
        )
        main = distributed.is_main()
    if not main:  # torchrun: rank 0 prints
        return
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2))
    elif quiet:
        mc = result.summary.get("mc_test_accuracy")
        typer.echo(
            f"{resolved.name}: test_accuracy={result.summary['test_accuracy']:.4f} "
            + (f"mc_test_accuracy={mc:.4f} " if mc is not None else "")
            + f"run_dir={result.run_dir}"
        )


def register(app: typer.Typer) -> None:
    app.command()(train)
