"""`dnntrick train`: train one spec and write its run directory."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dnntrick.cli.common import (
    DeviceOpt,
    JsonOpt,
    OutOpt,
    Overrides,
    PrintConfigOpt,
    QuietOpt,
    SpecArg,
)


def train(
    spec: SpecArg,
    overrides: Overrides = None,
    out: OutOpt = Path("runs"),
    device: DeviceOpt = None,
    print_config: PrintConfigOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the MLP that SPEC describes; write runs/<name>-<time>/."""
    from dnntrick.config import dump_spec, load_spec

    overrides = list(overrides or [])
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
            resolved, out=out, reporter=reporter, source=str(spec), overrides=overrides
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
