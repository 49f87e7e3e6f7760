"""Pictures of the per-layer statistics (matplotlib, Agg backend: no display needed).

`plot_probe`: activation distributions per hidden block (how they collapse, saturate or spread
with depth) beside the gradient norms by depth on a log scale. `plot_gradient_norms` draws the
gradient norms by depth of several runs (their recorded diagnostics) on one axis, for `compare`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from dnntrick.diagnosis.verdict import Diagnosis, LayerStats

MAX_VIOLINS = 20  # deeper nets show this many blocks, evenly spaced, first and last included


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pick(n: int, most: int) -> list[int]:
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def draw_activations(
    ax: Axes, samples: dict[str, Any], names: list[str], saturating: bool = False
) -> None:
    """Violins of the output values of the hidden blocks `names` (depth order). With
    `saturating`, the y axis spans the activation's whole range, so saturation and collapse
    read at a glance."""
    import numpy as np

    shown = [names[i] for i in _pick(len(names), MAX_VIOLINS)]
    data = [np.asarray(samples[n], dtype=float) for n in shown]
    data = [d[np.isfinite(d)] if np.isfinite(d).any() else np.zeros(1) for d in data]
    positions = [names.index(n) + 1 for n in shown]
    widest = max(float(np.abs(d).max()) for d in data)
    if widest > 100:  # exploding nets: a linear axis would flatten every early block
        ax.set_yscale("symlog", linthresh=1.0)
    width = max(0.8, 0.8 * (positions[-1] - positions[0] + 1) / len(positions))
    parts = ax.violinplot(data, positions=positions, widths=width, showmedians=True)
    for body in list(parts["bodies"]):  # type: ignore[call-overload]
        body.set_alpha(0.6)
    if saturating:
        low = 0.0 if min(float(d.min()) for d in data) >= 0 else -1.0  # sigmoid or tanh
        ax.set_ylim(low - 0.05, 1.05)
    ax.set_xticks(positions, [n.replace("hidden", "h") for n in shown], rotation=60, fontsize=8)
    ax.set_xlabel("hidden block (input side first)")
    ax.set_ylabel("activation value")
    ax.set_title("activation distributions by depth")
    ax.grid(axis="y", alpha=0.3)


def draw_gradients(ax: Axes, layers: list[LayerStats], label: str = "") -> None:
    """‖∂L/∂W‖ and ‖∂L/∂a‖ by depth, log scale (non-positive or missing values left out)."""
    depth = list(range(1, len(layers) + 1))

    def series(values: list[float | None]) -> list[float]:
        return [v if v is not None and math.isfinite(v) and v > 0 else math.nan for v in values]

    prefix = f"{label}: " if label else ""
    ax.plot(depth, series([s.grad for s in layers]), "o-", ms=3, label=f"{prefix}‖∂L/∂W‖")
    zeros = [d for d, s in zip(depth, layers, strict=True) if s.grad == 0]
    if zeros:  # a gradient that underflowed to exactly 0 cannot sit on a log axis: mark it
        ax.plot(
            zeros,
            [0.02] * len(zeros),
            "v",
            color="red",
            transform=ax.get_xaxis_transform(),
            label=f"{prefix}‖∂L/∂W‖ = 0 (float32 underflow)",
        )
    if any(s.out_grad for s in layers):
        ax.plot(
            depth,
            series([s.out_grad for s in layers]),
            "s--",
            ms=3,
            label=f"{prefix}‖∂L/∂a‖ (backpropagated)",
        )
    ax.set_yscale("log")
    ticks = _pick(len(layers), 12)
    ax.set_xticks([depth[i] for i in ticks], [layers[i].layer for i in ticks], rotation=60)
    ax.set_xlabel("block (input side first)")
    ax.set_ylabel("gradient norm (log)")
    ax.set_title("gradient norm by depth")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_probe(
    layers: list[LayerStats],
    samples: dict[str, Any],
    diagnosis: Diagnosis,
    title: str,
    path: Path | str,
) -> Path:
    """Write the two-panel diagnosis figure of one probe to `path` (PNG, or any matplotlib
    format by the file's suffix)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    hidden = [s.layer for s in layers[:-1] if s.layer in samples]
    if hidden:
        saturating = all(s.kind == "saturating" for s in layers[:-1])
        draw_activations(left, samples, hidden, saturating)
    draw_gradients(right, layers)
    fig.suptitle(f"{title}: {diagnosis.verdict}", fontweight="bold")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recorded_layers(run_dir: Path | str, which: str = "last") -> list[LayerStats] | None:
    """The per-layer statistics a run recorded (train.diagnostics): its first or last snapshot,
    or None when the run recorded none."""
    from dnntrick.diagnosis.verdict import LayerStats

    snapshots: list[dict[str, Any]] = []
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.is_file():
        return None
    for line in metrics.read_text().splitlines():
        if line.strip():
            snapshots.extend(json.loads(line).get("diagnostics", []))
    if not snapshots:
        return None
    chosen = snapshots[0] if which == "first" else snapshots[-1]
    return [LayerStats.from_compact(k, v) for k, v in chosen["layers"].items()]


def plot_gradient_norms(
    ax: Axes, groups: list[tuple[str, list[Path]]], which: str = "last"
) -> list[str]:
    """Draw ‖∂L/∂W‖ by depth on `ax`, one line per (label, run directories) group: the
    geometric mean over the group's runs of their first or last recorded step (the runs need
    train.diagnostics). Returns the labels of the groups that recorded nothing."""
    missing = []
    for label, run_dirs in groups:
        recorded = [layers for d in run_dirs if (layers := recorded_layers(d, which)) is not None]
        if not recorded:
            missing.append(label)
            continue
        names = [s.layer for s in recorded[0]]
        means = []
        for i in range(len(names)):
            values = [r[i].grad for r in recorded if i < len(r)]
            logs = [math.log(v) for v in values if v is not None and math.isfinite(v) and v > 0]
            means.append(math.exp(sum(logs) / len(logs)) if logs else math.nan)
        n = f" (n={len(recorded)})" if len(recorded) > 1 else ""
        ax.plot(range(1, len(names) + 1), means, "o-", ms=3, label=f"{label}{n}")
    ax.set_yscale("log")
    ax.set_xlabel("block (hidden1 = 1, outputs last)")
    ax.set_ylabel("‖∂L/∂W‖ (log)")
    ax.set_title(f"gradient norm by depth ({which} recorded step)")
    ax.grid(which="both", alpha=0.3)
    if len(missing) < len(groups):
        ax.legend(fontsize=8)
    return missing


def plot_gradient_comparison(
    groups: list[tuple[str, list[Path]]], path: Path | str, title: str
) -> list[str]:
    """Write a two-panel PNG: gradient norms by depth at the first and the last recorded step,
    one line per group. Returns the labels of the groups that recorded nothing."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    missing = plot_gradient_norms(axes[0], groups, "first")
    plot_gradient_norms(axes[1], groups, "last")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return missing
