"""`dnntrick diagnose`: probe a freshly built model with one batch and name what is wrong."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dnntrick.cli.common import DeviceOpt, Overrides, SpecArg
from dnntrick.errors import UsageError

# act mean/std of the block's output; dead/sat.: fractions; ‖∇W‖, ratio (to the outputs
# layer's ‖∇W‖) and ‖∇a‖ (gradient backpropagated to the block's output): see diagnostics.py
COLUMNS = ("layer", "units", "mean", "std", "dead", "sat.", "‖∇W‖", "ratio", "‖∇a‖")


def _num(value: float | None, fmt: str) -> str:
    if value is None:
        return "—"
    return format(value, fmt) if math.isfinite(value) else str(value)


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

    from dnntrick.diagnosis.hooks import probe_spec
    from dnntrick.diagnosis.verdict import Context
    from dnntrick.diagnosis.verdict import diagnose as judge
    from dnntrick.training.runner import resolve_device

    started = time.perf_counter()
    result = probe_spec(resolved, batch_size, resolve_device(resolved.device))
    diagnosis = judge(result.layers, Context.from_spec(resolved), result.loss)
    seconds = time.perf_counter() - started
    if plot is not None:
        from dnntrick.diagnosis.plot import plot_probe

        plot_probe(result.layers, result.samples, diagnosis, resolved.name, plot)
    if as_json:
        report = {
            "name": resolved.name,
            "batch_size": batch_size,
            "loss": result.loss,
            "layers": [vars(s) for s in result.layers],
            "diagnosis": diagnosis.to_json(),
            "seconds": seconds,
            "plot": str(plot) if plot else None,
        }
        typer.echo(json.dumps(report, indent=2))
        return
    _print(resolved.name, result, diagnosis, batch_size, seconds, plot)


def _print(
    name: str, result: Any, diagnosis: Any, batch: int, seconds: float, plot: Path | None
) -> None:
    from rich import box
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    table = Table(
        title=f"{name}: one batch of {batch} training images",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "layer" else "right", no_wrap=True)
    for s in result.layers:
        table.add_row(
            s.layer,
            str(s.units),
            _num(s.mean, ".3g"),
            _num(s.std, ".3g"),
            _num(s.dead, ".0%"),
            _num(s.saturated, ".0%"),
            _num(s.grad, ".1e"),
            _num(s.ratio, ".1e"),
            _num(s.out_grad, ".1e"),
        )
    console.print(table)
    colour = "green" if diagnosis.verdict == "healthy" else "red"
    lines: list[Any] = [Text.from_markup(f"[bold {colour}]{diagnosis.verdict}[/]")]
    for finding in diagnosis.findings + diagnosis.notes:
        lines.append(Text.from_markup(f"\n[bold]{finding.kind}[/]: {finding.summary}"))
        lines.append(Text(f"  cause:  {finding.cause}"))
        lines.append(Text(f"  remedy: {finding.remedy}"))
    footer = f"\nloss {result.loss:.4g} on the probe batch; {seconds:.1f} s"
    if plot is not None:
        footer += f"; plot written to {plot}"
    lines.append(Text(footer, style="dim"))
    console.print(Panel(Group(*lines), title="[bold]diagnosis[/]", expand=False))


def register(app: typer.Typer) -> None:
    app.command()(diagnose)
