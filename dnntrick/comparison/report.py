"""What `dnntrick compare` shows and writes: the live per-run progress, the results table (one
row per variant, same-for-all columns hidden, best value per column highlighted), and the
comparison's JSON and CSV files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dnntrick.comparison.executor import UNFINISHED, Event
from dnntrick.comparison.variants import RunRecord, Stats, Variant, epochs_to, what_differs

BEST = "bold green"
MIN_DIFFERS = 28  # the "what differs" column's narrowest width (characters)


class LiveProgress:
    """One line per run (variant, seed, status, epoch, val acc, test acc), redrawn in place in a
    terminal; elsewhere (pipes, CI) one printed line as each run ends."""

    def __init__(self, console: Console, runs: dict[int, tuple[Variant, RunRecord]]):
        self.console, self.runs = console, runs
        self.epoch: dict[int, str] = {}
        self.val: dict[int, float] = {}
        self.test: dict[int, float] = {}
        self.live: Live | None = None

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal and self.runs:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def on_event(self, event: Event) -> None:
        kind, job, payload = event
        if job not in self.runs:
            return
        variant, record = self.runs[job]
        if kind == "start":
            record.status = "running"
        elif kind == "epoch":
            self.epoch[job] = f"{payload['epoch']}/{payload['epochs']}"
            if payload.get("val_accuracy") is not None:
                self.val[job] = payload["val_accuracy"]
        elif kind == "end":
            record.status = payload["status"]
            if payload.get("test_accuracy") is not None:
                self.test[job] = payload["test_accuracy"]
            if self.live is None:
                test = self.test.get(job)
                self.console.print(
                    f"  {variant.label} seed {record.seed}: {record.status}"
                    + (f", test acc {test:.4f}" if test is not None else "")
                    + f" (epoch {self.epoch.get(job, '-')})"
                )
        if self.live is not None:
            self.live.update(self._table())

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name, justify in (
            ("variant", "left"),
            ("seed", "right"),
            ("status", "left"),
            ("epoch", "right"),
            ("val acc", "right"),
            ("test acc", "right"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        styles = {
            "ok": "green",
            "running": "yellow",
            "interrupted": "yellow",
            "diverged": "red",
            "error": "red",
        }
        for job, (variant, record) in self.runs.items():
            style = styles.get(record.status, "dim")
            table.add_row(
                variant.label,
                str(record.seed),
                f"[{style}]{record.status}[/]",
                self.epoch.get(job, ""),
                f"{self.val[job]:.4f}" if job in self.val else "",
                f"{self.test[job]:.4f}" if job in self.test else "",
            )
        return table


# ---------------------------------------------------------------- the results table


def _pct(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.{digits}f}"


def _num(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list | dict):
        return json.dumps(value).replace(" ", "")
    return str(value)


def format_differs(differs: dict[str, Any]) -> str:
    """{'model.activation.name': 'elu'} → 'model.activation=elu' (a '.name' key reads as its
    choice)."""
    keys = sorted(differs, key=lambda k: k.removesuffix(".name"))  # a choice before its args
    return ", ".join(f"{k.removesuffix('.name')}={_value(differs[k])}" for k in keys)


def _status(variant: Variant) -> str:
    """A variant's status cell: after a stop, its unfinished runs read as missing."""
    missing = sum(r.status in UNFINISHED for r in variant.runs)
    return f"missing {missing}/{len(variant.runs)}" if missing else variant.status


@dataclass
class Column:
    header: str
    cells: list[str]
    scores: list[float | None]  # what "best" compares (higher is better); None: not ranked
    always: bool = False  # shown even when every row has the same value
    justify: str = "right"


def results_columns(
    variants: list[Variant], stats: list[Stats], baseline: Variant, target: float | None
) -> list[Column]:
    """The table's columns, in order, each with its cells and the scores that rank them."""

    def col(header: str, cells: list[str], scores: list[float | None] | None = None, **kw: Any):
        return Column(header, cells, scores or [None] * len(cells), **kw)

    def score(value: float | None, sign: float = 1.0) -> float | None:
        ok = value is not None and not math.isnan(value)
        return sign * value if ok and value is not None else None

    acc_cells = []
    for s in stats:
        mean, std = s.test_accuracy
        acc_cells.append(_pct(mean) + ("" if math.isnan(std) else f" ± {_pct(std)}"))
    diff_cells, verdicts = [], []
    for variant, s in zip(variants, stats, strict=True):
        d = s.difference
        if variant is baseline:
            diff_cells.append("baseline")
            verdicts.append("")
        elif d is None or math.isnan(d.mean):
            diff_cells.append("—")
            verdicts.append("n/a")
        else:
            ci = "" if math.isnan(d.low) else f" [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
            diff_cells.append(f"{100 * d.mean:+.2f}{ci}")
            style = {"better": "green", "worse": "red"}.get(d.verdict, "")
            verdicts.append(f"[{style}]{d.verdict}[/]" if style else d.verdict)
    columns = [
        col("variant", [v.label for v in variants], always=True, justify="left"),
        col(
            "what differs",
            [
                "(baseline)" if v is baseline else format_differs(what_differs(v, baseline))
                for v in variants
            ],
            justify="left",
        ),
        col("status", [_status(v) for v in variants], justify="left"),
        col("seeds", [str(s.n) for s in stats]),
        col(
            "test acc %",
            acc_cells,
            [score(s.test_accuracy[0]) for s in stats],
            always=True,
        ),
        col(
            "Δ pp [95% CI]",
            diff_cells,
            [score(s.difference.mean) if s.difference else None for s in stats],
            always=True,
        ),
        col("verdict", verdicts, always=True, justify="left"),
        col(
            "best val %",
            [_pct(s.best_val_accuracy) for s in stats],
            [score(s.best_val_accuracy) for s in stats],
        ),
        col("best epoch", [_num(s.best_epoch, ".1f") for s in stats]),
        col("epochs", [_num(s.epochs_run, ".1f") for s in stats]),
    ]
    if target is not None:
        cells = []
        for s in stats:
            cell = _num(s.epochs_to_target, ".1f")
            cells.append(cell if s.reached == s.n else f"{cell} ({s.reached}/{s.n})")
        columns.append(
            col(
                f"epochs to {_pct(target, 1)}%",
                cells,
                [score(s.epochs_to_target, -1) if s.reached == s.n else None for s in stats],
                always=True,
            )
        )
    columns += [
        col(
            "train s",
            [_num(s.train_seconds, ".1f") for s in stats],
            [score(s.train_seconds, -1) for s in stats],
        ),
        col(
            "samples/s",
            [_num(s.samples_per_second, ",.0f") for s in stats],
            [score(s.samples_per_second) for s in stats],
        ),
        col("parameters", [_num(s.parameters, ",d") for s in stats]),
    ]
    return columns


def results_table(
    variants: list[Variant], stats: list[Stats], baseline: Variant, target: float | None
) -> tuple[Table, list[str]]:
    """(the rich table, 'header value' notes for the columns hidden because all rows agree)."""
    columns = results_columns(variants, stats, baseline, target)
    shown, same = [], []
    for column in columns:
        if len(variants) > 1 and not column.always and len(set(column.cells)) == 1:
            if column.header != "what differs":
                same.append(f"{column.header} {column.cells[0]}")
            continue
        shown.append(column)
    table = Table(header_style="bold", box=box.SIMPLE_HEAD)
    for column in shown:
        wraps = column.header == "what differs"  # the one free-text column; numbers never wrap
        table.add_column(
            column.header,
            justify=column.justify,  # type: ignore[arg-type]
            overflow="fold" if wraps else "ellipsis",
            no_wrap=not wraps,
            # a narrow terminal squeezes the one column that may wrap: keep it readable
            min_width=min(MIN_DIFFERS, max(map(len, column.cells))) if wraps else None,
        )
    for row in range(len(variants)):
        cells = []
        for column in shown:
            ranked = [s for s in column.scores if s is not None]
            best = len(set(ranked)) > 1 and column.scores[row] == max(ranked)  # ties: all best
            cells.append(f"[{BEST}]{column.cells[row]}[/]" if best else column.cells[row])
        table.add_row(*cells)
    return table, same


# ---------------------------------------------------------------- comparison.json and CSV


def _clean(value: Any) -> Any:
    """NaN → None so the JSON is valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


RUN_FIELDS = (
    "test_accuracy",
    "test_loss",
    "best_val_accuracy",
    "best_epoch",
    "epochs_run",
    "train_seconds",
    "samples_per_second",
    "parameters",
)


def comparison_json(
    variants: list[Variant],
    stats: list[Stats],
    baseline: Variant,
    meta: dict[str, Any],
    target: float | None,
) -> dict[str, Any]:
    """Everything the table shows, per variant and per run, as plain JSON."""
    out = []
    for variant, s in zip(variants, stats, strict=True):
        d = s.difference
        out.append(
            {
                "label": variant.label,
                "source": variant.source,
                "overrides": variant.overrides,
                "status": variant.status,
                "error": variant.error,
                "baseline": variant is baseline,
                "differs": what_differs(variant, baseline),
                "stats": {
                    "n": s.n,
                    "test_accuracy_mean": s.test_accuracy[0],
                    "test_accuracy_std": s.test_accuracy[1],
                    "best_val_accuracy": s.best_val_accuracy,
                    "best_epoch": s.best_epoch,
                    "epochs_run": s.epochs_run,
                    "epochs_to_target": s.epochs_to_target,
                    "reached_target": s.reached,
                    "train_seconds": s.train_seconds,
                    "samples_per_second": s.samples_per_second,
                    "parameters": s.parameters,
                    "difference": None
                    if d is None
                    else {
                        "test_accuracy_mean": d.mean,
                        "ci95_low": d.low,
                        "ci95_high": d.high,
                        "pairs": d.n,
                        "verdict": d.verdict,
                    },
                },
                "runs": [run_row(variant, r, target) for r in variant.runs],
            }
        )
    return _clean({**meta, "baseline": baseline.label, "target": target, "variants": out})


def run_row(variant: Variant, record: RunRecord, target: float | None) -> dict[str, Any]:
    """One run as a flat row (the CSV's line, the JSON's run entry)."""
    summary = record.summary or {}
    return {
        "variant": variant.label,
        "seed": record.seed,
        "status": record.status,
        **{k: summary.get(k) for k in RUN_FIELDS},
        "epochs_to_target": epochs_to(record.history, target) if target is not None else None,
        "run_dir": record.run_dir or summary.get("run_dir"),
        "error": record.error,
    }


def comparison_csv(variants: list[Variant], target: float | None) -> str:
    """One line per run (variant, seed, status, the summary's numbers, run_dir, error)."""
    rows = [run_row(v, r, target) for v in variants for r in v.runs]
    rows += [
        {"variant": v.label, "status": "bad spec", "error": v.error} for v in variants if v.error
    ]
    buffer = io.StringIO()
    fields = ["variant", "seed", "status", *RUN_FIELDS, "epochs_to_target", "run_dir", "error"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def print_failures(variants: list[Variant], echo: Callable[[str], None]) -> None:
    """One line per failure: the variant, the seed, and what went wrong (runs that a stop left
    unfinished are not failures: the resume line says what to do with them)."""
    for variant in variants:
        if variant.error:
            echo(f"error: {variant.label}: {variant.error.splitlines()[0]}")
            for line in variant.error.splitlines()[1:]:
                echo(f"  {line.strip()}")
        for record in variant.runs:
            if record.status not in ("ok", *UNFINISHED):
                echo(f"error: {variant.label} seed {record.seed}: {record.status}: {record.error}")
