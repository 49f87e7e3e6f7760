"""`diagnose` as a library call: build a spec's model (same seed, same initial weights as a run),
probe it with one fixed batch, judge the statistics (verdict.py), and print or plot the result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnntrick.diagnosis.hooks import Probe, probe_spec
from dnntrick.diagnosis.verdict import Context, Diagnosis
from dnntrick.diagnosis.verdict import diagnose as judge
from dnntrick.spec.schema import Spec

# act mean/std of the block's output; dead/sat.: fractions; ‖∇W‖, ratio (to the outputs
# layer's ‖∇W‖) and ‖∇a‖ (gradient backpropagated to the block's output): see hooks.py
COLUMNS = ("layer", "units", "mean", "std", "dead", "sat.", "‖∇W‖", "ratio", "‖∇a‖")


def _num(value: float | None, fmt: str) -> str:
    if value is None:
        return "—"
    return format(value, fmt) if math.isfinite(value) else str(value)


@dataclass
class Diagnosed:
    """A probe's per-layer statistics, its verdict and how long it took."""

    name: str
    batch_size: int
    probe: Probe
    diagnosis: Diagnosis
    seconds: float

    @property
    def verdict(self) -> str:
        """healthy, vanishing, exploding, dying units or saturation."""
        return self.diagnosis.verdict

    @property
    def layers(self) -> list[dict[str, Any]]:
        """The per-layer statistics, in depth order, as dicts."""
        return [vars(s) for s in self.probe.layers]

    def __repr__(self) -> str:
        return f"Diagnosed({self.name!r}, verdict={self.verdict!r}, layers={len(self.layers)})"

    def to_json(self, plot: Path | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "batch_size": self.batch_size,
            "loss": self.probe.loss,
            "layers": self.layers,
            "diagnosis": self.diagnosis.to_json(),
            "seconds": self.seconds,
            "plot": str(plot) if plot else None,
        }

    def plot(self, path: Path) -> None:
        """Activation distributions by depth and gradient norms (PNG)."""
        from dnntrick.diagnosis.plot import plot_probe

        plot_probe(self.probe.layers, self.probe.samples, self.diagnosis, self.name, path)

    def print(self, plot: Path | None = None) -> None:
        """The per-layer table and the verdict panel, on the terminal."""
        _print(self.name, self.probe, self.diagnosis, self.batch_size, self.seconds, plot)


def diagnose_spec(spec: Spec, batch_size: int = 512) -> Diagnosed:
    """Probe `spec`'s freshly built model on `batch_size` training images and judge it."""
    started = time.perf_counter()
    result = probe_spec(spec, batch_size)
    diagnosis = judge(result.layers, Context.from_spec(spec), result.loss)
    return Diagnosed(spec.name, batch_size, result, diagnosis, time.perf_counter() - started)


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
