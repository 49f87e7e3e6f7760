"""PNG plots of a comparison: validation accuracy and training loss against epoch, one colour per
variant, mean over seeds as a line and mean ± std as a shaded band. Runs of different lengths
(early stopping) are fine: each epoch averages the runs that reached it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from dnntrick.comparison.stats import mean_std
from dnntrick.comparison.variants import Variant
from dnntrick.training.rundir import atomic_write

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


def plot_comparison(variants: list[Variant], path: Path, title: str) -> None:
    """Write the two-panel PNG to `path` (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110, constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
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
        ax.set_title(f"{name} (mean ± std over seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
