"""`dnntrick lr-find`: the learning-rate range test of a spec, as a plot and a suggested lr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dnntrick.cli.common import DeviceOpt, OutOpt, Overrides, SpecArg


def lr_find(
    spec: SpecArg,
    overrides: Overrides = None,
    start: Annotated[float, typer.Option("--start", help="First learning rate.")] = 1e-5,
    end: Annotated[float, typer.Option("--end", help="Last learning rate.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", help="Steps from --start to --end.")] = 300,
    out: OutOpt = Path("runs"),
    device: DeviceOpt = None,
) -> None:
    """Grow the lr exponentially over a few hundred steps, plot loss against lr, suggest an lr."""
    from dnntrick.spec.config import load_spec

    overrides = list(overrides or [])
    if device is not None:
        overrides.append(f"device={device}")
    resolved = load_spec(spec, overrides)

    from dnntrick.diagnosis.lr_find import find_lr

    result, path = find_lr(resolved, out, start, end, steps, str(spec), overrides)
    stop = (
        f"stopped at lr {result.lrs[-1]:.3g}: the loss diverged"
        if result.diverged
        else f"reached lr {result.lrs[-1]:.3g} without diverging; try a larger --end"
    )
    typer.echo(f"{resolved.name}: {len(result.lrs)} steps from lr {start:g}, {stop}")
    typer.echo(
        f"lowest smoothed loss {min(result.smoothed):.4f} at lr {result.lowest_lr:.3g}; "
        f"steepest descent at lr {result.steepest_lr:.3g}"
    )
    typer.echo(
        f"suggested lr: {result.suggestion:.3g} (a tenth of the lr at the lowest loss; "
        "for 1cycle's peak take the lr just before the loss turns up)"
    )
    typer.echo(f"plot: {path / 'lr_find.png'}")


def register(app: typer.Typer) -> None:
    app.command("lr-find")(lr_find)
