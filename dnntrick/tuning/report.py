"""What a study shows and writes: the live table of trials, trials.csv (one row per trial, the
rows of finished trials fixed once written), tune.json (best values, counts by state, totals),
best.yaml (the resolved spec with the best values) and the plot.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

if TYPE_CHECKING:
    import optuna

    from dnntrick.tuning.config import Setup
    from dnntrick.tuning.search import Dimension

SHOWN = 14  # trials in the live table: the newest ones and the best
STYLES = {"ok": "green", "running": "yellow", "pruned": "cyan", "diverged": "red", "error": "red"}


def _status(trial: optuna.trial.FrozenTrial) -> str:
    return str(trial.user_attrs.get("status", "running"))


def trial_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """The objective: Optuna's value, a diverged trial's recorded value, a pruned trial's last
    reported validation accuracy."""
    if trial.value is not None:
        return float(trial.value)
    if "value" in trial.user_attrs:
        return float(trial.user_attrs["value"])
    if trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def trial_rows(study: optuna.Study, space: list[Dimension]) -> list[dict[str, Any]]:
    """One dict per trial: number, state, status, the searched values, value (mean over the
    seeds), value_std, seeds, epochs_run, seconds, run_dirs. Everything comes from what the trial
    stored when it ended, so a finished trial's row never changes."""
    rows = []
    for t in study.trials:
        if t.state.name == "WAITING":  # queued (a cut trial's values, to run on --resume)
            continue
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "status": _status(t)}
        row.update({d.key: t.params.get(d.key) for d in space})
        std = t.user_attrs.get("value_std")
        row.update(
            value=trial_value(t),
            value_std=None if std is None or math.isnan(std) else std,
            seeds=" ".join(str(s) for s in t.user_attrs.get("seeds_run", [])),
            epochs_run=t.user_attrs.get("epochs_run"),
            seconds=t.user_attrs.get("seconds"),
            run_dirs=" ".join(t.user_attrs.get("run_dirs", [])),
        )
        rows.append(row)
    return rows


class Trials(list[dict[str, Any]]):
    """trials.csv's rows as dicts; `.to_pandas()` for a DataFrame."""

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(list(self)).set_index("number")


def trials_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v, 10) for k, v in row.items()})
    return buffer.getvalue()


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def tune_document(study: optuna.Study, setup: Setup) -> dict[str, Any]:
    """tune.json: the settings, best values and value, the spec's own point, counts, totals."""
    from dataclasses import asdict

    trials = study.trials
    counts: dict[str, int] = {}
    for t in trials:
        key = t.state.name if t.state.name != "FAIL" else f"FAIL ({_status(t)})"
        counts[key] = counts.get(key, 0) + 1

    def point(t: optuna.trial.FrozenTrial | None) -> dict[str, Any] | None:
        if t is None:
            return None
        std = t.user_attrs.get("value_std")
        return {
            "number": t.number,
            "values": dict(t.params),
            "value": trial_value(t),
            "value_std": None if std is None or math.isnan(std) else std,
            "status": _status(t),
            "seed_values": t.user_attrs.get("seed_values", {}),
            "run_dirs": t.user_attrs.get("run_dirs", []),
        }

    default = next((t for t in trials if t.user_attrs.get("default")), None)
    return {
        "tune_dir": str(setup.folder),
        "config": asdict(setup.config),
        "objective": "mean over the seeds of each run's best validation accuracy",
        "best": point(best_trial(study)),
        "default": point(default),
        "counts": counts,
        "totals": {
            "trials": len(trials),
            "epochs_run": sum(t.user_attrs.get("epochs_run", 0) for t in trials),
            "run_seconds": round(sum(t.user_attrs.get("seconds", 0.0) for t in trials), 3),
        },
    }


def write_reports(study: optuna.Study, setup: Setup) -> None:
    """trials.csv, tune.json and (once a trial finished) best.yaml, each written atomically."""
    from dnntrick.training.rundir import atomic_write, write_json

    folder = setup.folder
    atomic_write(folder / "trials.csv", trials_csv(trial_rows(study, setup.space)).encode())
    write_json(folder / "tune.json", tune_document(study, setup))
    best = best_trial(study)
    if best is not None:
        atomic_write(folder / "best.yaml", best_yaml(setup, best).encode())


def best_yaml(setup: Setup, best: optuna.trial.FrozenTrial) -> str:
    """The resolved spec with the best values (its own name and seed): `dnntrick train` runs it."""
    from dnntrick.spec.config import apply_overrides, dump_spec, validate
    from dnntrick.tuning.search import override

    tuned = [override(k, v) for k, v in best.params.items()]
    spec = validate(apply_overrides(setup.data, tuned), setup.config.spec)
    head = (
        f"# dnntrick tune {setup.folder}: trial {best.number}, mean best val accuracy "
        f"{best.value:.4f} over seeds {' '.join(best.user_attrs.get('seed_values', {}))}\n"
        f"# tuned: {' '.join(tuned)}\n"
    )
    return head + dump_spec(spec)


class Progress:
    """The live table of trials in a terminal; elsewhere one line per finished trial."""

    def __init__(self, console: Console | None, setup: Setup):
        self.console = console or Console(stderr=True, highlight=False, quiet=True)
        self.setup = setup
        self.running: dict[int, Any] = {}  # trials.Live in flight
        self.study: optuna.Study | None = None
        self.live: Live | None = None

    def start(self, study: optuna.Study, where: str) -> None:
        self.study = study
        c = self.setup.config
        self.console.print(
            f"[bold]tune[/] {c.spec}: {c.trials} trials × {len(c.seeds)} seed(s) "
            f"({', '.join(map(str, c.seeds))}), pruner {c.pruner}, on {where} → {self.setup.folder}"
        )
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4)
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def message(self, text: str) -> None:
        self.console.print(text)

    def update(self, live: Any) -> None:
        self.running[live.trial.number] = live
        if self.live is not None:
            self.live.update(self._table())

    def finished(self, trial: optuna.trial.FrozenTrial) -> None:
        self.running.pop(trial.number, None)
        if self.live is not None:
            self.live.update(self._table())
            return
        values = " ".join(f"{k}={_fmt(v, 4)}" for k, v in trial.params.items())
        value, std = trial_value(trial), trial.user_attrs.get("value_std")
        score = "" if value is None else f" → {value:.4f}"
        score += f" ± {std:.4f}" if score and std is not None and not math.isnan(std) else ""
        attrs = trial.user_attrs
        self.console.print(
            f"  trial {trial.number}: {values}{score} ({_status(trial)}, "
            f"{attrs.get('epochs_run', 0)} epochs, {attrs.get('seconds', 0):.1f} s)"
        )

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        keys = [d.key for d in self.setup.space]
        for name in ("trial", "status", *keys, "seed", "epoch", "value"):
            table.add_column(name, justify="left" if name == "status" else "right")
        trials = list(self.study.trials) if self.study is not None else []
        best = best_trial(self.study) if self.study is not None else None
        shown = [t for t in trials if t.state.name != "RUNNING"][-SHOWN:]
        if best is not None and best not in shown:
            shown.insert(0, best)
        for t in shown:
            status = _status(t)
            mark = " *" if best is not None and t.number == best.number else ""
            table.add_row(
                f"{t.number}{mark}",
                f"[{STYLES.get(status, 'dim')}]{status}[/]",
                *(_fmt(t.params.get(k), 4) for k in keys),
                "",
                "",
                _fmt(trial_value(t), 4),
            )
        for live in self.running.values():
            seeds = self.setup.config.seeds
            table.add_row(
                str(live.trial.number),
                "[yellow]running[/]",
                *(_fmt(live.params.get(k), 4) for k in keys),
                f"{live.seed_index + 1}/{len(seeds)}",
                live.epoch,
                _fmt(live.last_val, 4),
            )
        return table


def plot_study(rows: list[dict[str, Any]], space: list[Dimension], path: Path | None) -> Any:
    """The objective by trial and against each searched key (log axis for log ranges);
    returns the Figure, saved to `path` when given."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(space), figsize=(4.5 * (1 + len(space)), 3.6))
    axes = list(axes) if len(space) else [axes]
    colors = {"ok": "tab:green", "pruned": "tab:cyan", "diverged": "tab:red", "error": "tab:red"}
    for status, color in colors.items():
        shown = [r for r in rows if r["status"] == status and r["value"] is not None]
        axes[0].scatter(
            [r["number"] for r in shown], [r["value"] for r in shown], c=color, s=18, label=status
        )
        for ax, dim in zip(axes[1:], space, strict=True):
            xs = [r[dim.key] for r in shown]
            ax.scatter(
                [str(x) for x in xs] if dim.kind == "choice" else xs,
                [r["value"] for r in shown],
                c=color,
                s=18,
            )
    axes[0].set(xlabel="trial", ylabel="objective (mean best val accuracy)")
    axes[0].legend(fontsize=8)
    for ax, dim in zip(axes[1:], space, strict=True):
        ax.set(xlabel=dim.key)
        if dim.kind == "loguniform":
            ax.set_xscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
