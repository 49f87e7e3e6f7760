"""PNG plots of a comparison: validation accuracy and training loss against epoch, one colour per
variant, mean over seeds as a line and mean ± std as a shaded band. Runs of different lengths
(early stopping) are fine: each epoch averages the runs that reached it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.comparison.stats import mean_std
from dnntrick.comparison.variants import Variant
from dnntrick.training.rundir import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANELS = (("val_accuracy", "validation accuracy"), ("train_loss", "training loss"))


def curve(
    histories: list[list[dict[str, Any]]], key: str
) -> tuple[list[int], list[float], list[float]]:
    """(epochs, mean, std) of `key` over the runs; std is 0 where only one run has that epoch."""
    epochs = sorted({row["epoch"] for history in histories for row in history})
    means, stds = [], []
    for epoch in epochs:
        values = [
            float(row[key])
            for history in histories
            for row in history
            if row["epoch"] == epoch and row.get(key) is not None
        ]
        mean, std = mean_std(values)
        means.append(mean)
        stds.append(0.0 if std != std else std)  # nan (one run) → no band
    return epochs, means, stds


def comparison_figure(variants: list[Variant], title: str) -> Figure:
    """Validation accuracy and training loss by epoch, one colour per variant (a matplotlib
    Figure made without pyplot: no backend is switched, and Jupyter shows it inline)."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), dpi=110, constrained_layout=True)
    axes = fig.subplots(1, 2)
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, variant in enumerate(variants):
        histories = [r.history for r in variant.ok_runs if r.history]
        if not histories:
            continue
        color = colors[i % len(colors)]
        label = f"{variant.label} (n={len(histories)})"
        for ax, (key, _) in zip(axes, PANELS, strict=True):
            epochs, mean, std = curve(histories, key)
            ax.plot(epochs, mean, color=color, label=label, linewidth=1.8, marker="o", markersize=3)
            low = [m - s for m, s in zip(mean, std, strict=True)]
            high = [m + s for m, s in zip(mean, std, strict=True)]
            if len(epochs) > 1:
                ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
            else:  # one epoch: a band has no width, so draw the spread as an error bar
                ax.errorbar(epochs, mean, yerr=std, color=color, capsize=4)
    for ax, (_, name) in zip(axes, PANELS, strict=True):
        by_epoch(ax, f"{name} (mean ± std over seeds)", name)
    fig.suptitle(title)
    return fig


def curves_figure(
    history: list[dict[str, Any]], title: str, summary: dict[str, Any] | None = None
) -> Figure:
    """One run's learning curves: loss and accuracy by epoch, training and validation, and the
    test loss/accuracy as a dotted line when `summary` has them (a finished run)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=110, constrained_layout=True)
    epochs = [row["epoch"] for row in history]
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            values = [row.get(f"{split}_{metric}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker="o", markersize=3, label=split)
        test = (summary or {}).get(f"test_{metric}")
        if isinstance(test, int | float):
            ax.axhline(test, color="grey", linestyle=":", label=f"test {test:.4g}")
        by_epoch(ax, metric, metric)
    fig.suptitle(title)
    return fig


def by_epoch(ax: Any, title: str, ylabel: str) -> None:
    """An axis against epoch: title, labels, grid, whole-number epochs, a legend if any."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def save_png(fig: Figure, path: Path) -> None:
    """Write `fig` to `path` as a PNG, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(path, buffer.getvalue())


def plot_comparison(variants: list[Variant], path: Path, title: str) -> None:
    """Write comparison_figure as a PNG to `path`."""
    save_png(comparison_figure(variants, title), path)
