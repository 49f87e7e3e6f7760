"""`dnntrick diagnose`: probe a freshly built model with one batch and name what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dnntrick.cli.common import DeviceOpt, Overrides, SpecArg
from dnntrick.errors import UsageError


def diagnose(
    spec: SpecArg,
    overrides: Overrides = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write activation distributions and gradient norms (PNG)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The statistics and verdict as JSON on stdout.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=2, help="Images in the probe batch.")
    ] = 512,
    device: DeviceOpt = None,
) -> None:
    """Build SPEC's model (same seed, same initial weights as `train`), push one fixed batch of
    training images forward and backward, print per-layer statistics and a verdict."""
    from dnntrick.spec.config import load_spec

    overrides = list(overrides or [])
    if device is not None:
        overrides.append(f"device={device}")
    resolved = load_spec(spec, overrides)
    if plot is not None and not plot.parent.is_dir():
        raise UsageError(f"--plot {plot}: folder {plot.parent} does not exist; create it first")

    from dnntrick.diagnosis.diagnose import diagnose_spec

    result = diagnose_spec(resolved, batch_size)
    if plot is not None:
        result.plot(plot)
    if as_json:
        typer.echo(json.dumps(result.to_json(plot), indent=2))
    else:
        result.print(plot)


def register(app: typer.Typer) -> None:
    app.command()(diagnose)
