"""A comparison from start to end: inputs → variants → runs (worker processes or Ray) → the
per-variant statistics → comparison.json/csv and plots in its folder.

`dnntrick compare` parses its options and calls `run_comparison`; so does the Python API.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from dnntrick.comparison.variants import Variant

INSTALL = "pip install 'dnntrick[ray]'"  # also in ray_executor.py, which imports ray lazily
EXECUTORS = ("process", "ray")


@dataclass
class Comparison:
    """A finished comparison: its variants (with their runs), their statistics against the
    baseline, the JSON document written to `folder`/comparison.json, and the CSV text."""

    variants: list[Variant]
    stats: list[Any]
    baseline: Variant
    folder: Path
    document: dict[str, Any]
    csv: str
    target: float | None = None
    notes: list[str] = field(default_factory=list)  # what the table's footer says

    @property
    def exit_code(self) -> int:
        from dnntrick.comparison.variants import exit_code

        return exit_code(self.variants)


def run_comparison(
    inputs: list[str],
    seeds: int = 3,
    vary: list[str] | None = None,
    jobs: int | None = None,
    target: float | None = None,
    baseline: str | None = None,
    executor: str = "process",
    address: str | None = None,
    out: Path | str = "runs",
    device: str | None = None,
    console: Console | None = None,
    plot: Path | None = None,
    csv_file: Path | None = None,
    plot_gradients: Path | None = None,
    tuner: Any = None,
) -> Comparison:
    """Run every spec of `inputs` (× seeds × the --vary grid), read every run directory in it,
    judge each variant against the baseline, and write comparison.json/csv (and the plots asked
    for). Usage errors are raised before anything runs. `tuner` (compare --tune, from
    dnntrick/tuning/compare.py; passed in from above, since comparison/ imports no tuning):
    checks the variants first, tunes each once the folder exists, annotates comparison.json."""
    from dnntrick.comparison.variants import (
        dedupe_labels,
        expand_specs,
        parse_vary,
        pick_baseline,
        read_run_dirs,
        split_inputs,
    )

    paths, overrides = split_inputs(list(inputs))
    if device is not None:
        overrides.append(f"device={device}")
    grid = parse_vary(list(vary or []))
    _check_options(paths, overrides, grid, target, plot, csv_file)
    if plot_gradients is not None and (
        plot_gradients.suffix.lower() != ".png" or not plot_gradients.parent.resolve().is_dir()
    ):
        raise UsageError(f"--plot-gradients {plot_gradients}: give a .png in an existing folder")
    if executor not in EXECUTORS:
        raise UsageError(f"executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise UsageError("--address ADDR names a Ray cluster; add --executor ray")
    if address is not None and jobs is not None:
        raise UsageError(
            "--jobs sets a local Ray instance's CPUs; a cluster at --address has its own"
        )
    if executor == "ray":
        from dnntrick.comparison.ray_executor import import_ray

        import_ray()  # not installed: say how, before anything runs
    dirs = [p for p in paths if Path(p).is_dir()]
    specs = [p for p in paths if not Path(p).is_dir()]
    variants = expand_specs(specs, overrides, grid, seeds) + read_run_dirs(dirs)
    variants.sort(key=lambda v: paths.index(v.source))  # the order given; the first is baseline
    dedupe_labels(variants)
    base = pick_baseline(variants, baseline)
    if tuner is not None:
        tuner.check(variants)

    from rich.console import Console

    from dnntrick.comparison.report import comparison_csv, comparison_json
    from dnntrick.comparison.variants import summarize
    from dnntrick.training.rundir import atomic_write, make_run_dir, write_json

    if console is None:
        console = Console(stderr=True, highlight=False, quiet=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # logs and pipes: keep each variant on one line
    folder = make_run_dir(out, "compare")
    started = time.perf_counter()
    notes = tuner.run(variants, folder, console, jobs, executor) if tuner is not None else []
    plan = _run(variants, folder, console, jobs, executor, address)
    stats = [summarize(v, base, target) for v in variants]
    seed_list = sorted({r.seed for v in variants for r in v.runs})
    meta = {
        "comparison_dir": str(folder),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": list(inputs),
        "vary": list(vary or []),
        "seeds": seed_list,
        "confidence": 0.95,
        "jobs": plan[0],
        "threads_per_job": plan[1],
        "wall_seconds": time.perf_counter() - started,
    }
    document = comparison_json(variants, stats, base, meta, target)
    if tuner is not None:
        tuner.annotate(document)
    text = comparison_csv(variants, target)
    write_json(folder / "comparison.json", document)
    atomic_write(folder / "comparison.csv", text.encode())
    comparison = Comparison(variants, stats, base, folder, document, text, target, notes)
    if csv_file is not None:
        atomic_write(csv_file, text.encode())
    if plot is not None:
        from dnntrick.comparison.plots import plot_comparison

        n_seeds = max((len(v.runs) for v in variants), default=0)
        plot_comparison(
            variants, plot, f"dnntrick compare: {len(variants)} variants × {n_seeds} seeds"
        )
    if plot_gradients is not None:
        from dnntrick.diagnosis.plot import plot_gradient_comparison

        groups = [(v.label, [Path(r.run_dir) for r in v.runs if r.run_dir]) for v in variants]
        for label in plot_gradient_comparison(groups, plot_gradients, "gradient norm by depth"):
            comparison.notes.append(f"{label}: no recorded diagnostics (set train.diagnostics)")
    return comparison


def _check_options(
    paths: list[str],
    overrides: list[str],
    grid: list[tuple[str, list[str]]],
    target: float | None,
    plot: Path | None,
    csv_file: Path | None,
) -> None:
    """Usage errors, before anything runs (a typo must not cost a finished comparison)."""
    if not paths:
        raise UsageError("give at least one SPEC file or RUN_DIR to compare")
    specs = [p for p in paths if not Path(p).is_dir()]
    if not specs and (grid or overrides):
        what = "--vary" if grid else f"override {overrides[0]!r}"
        raise UsageError(f"{what} applies to SPEC files; run directories are read as they are")
    if target is not None and not 0 < target <= 1:
        raise UsageError(f"--target {target:g}: give an accuracy between 0 and 1, e.g. 0.88")
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: the file name must end in .png")
    for option, path in (("--plot", plot), ("--csv", csv_file)):
        if path is not None and not path.parent.resolve().is_dir():
            raise UsageError(f"{option} {path}: folder {path.parent} does not exist")


def _run(
    variants: list[Variant],
    folder: Path,
    console: Console,
    jobs: int | None,
    executor: str = "process",
    address: str | None = None,
) -> tuple[int, int]:
    """Run every spec variant's seeds under `folder`; fill in their RunRecords."""
    from dnntrick.comparison.executor import (
        THREADS_PER_CPU_RUN,
        Job,
        cpu_count,
        make_executor,
        plan_jobs,
    )
    from dnntrick.comparison.report import LiveProgress

    work = []
    for variant in variants:
        for record in variant.runs:
            if record.seed in variant.specs:
                work.append((variant, record))
    if not work:
        return 0, 0
    # Ray places each run on a GPU itself; the process executor spreads `auto` runs over GPUs
    gpus = 0 if executor == "ray" else _gpus([v.specs[r.seed].device for v, r in work])
    plan = plan_jobs(len(work), cpu_count(), gpus, jobs)
    job_list = []
    for i, (variant, record) in enumerate(work):
        spec = variant.specs[record.seed].model_dump(mode="json")
        if gpus > 1 and spec["device"] == "auto":
            spec["device"] = f"cuda:{i % gpus}"  # spread the runs over the GPUs
        job_list.append(Job(i, spec, str(folder), variant.source, variant.overrides))
    runs = dict(enumerate(work))
    if executor == "ray":
        from dnntrick.comparison.ray_executor import RayExecutor

        ray_executor = RayExecutor(address, cpus=jobs)
        where = ray_executor.connect()
        plan = plan._replace(jobs=min(ray_executor.slots, len(work)), threads=THREADS_PER_CPU_RUN)
        console.print(
            f"[bold]compare[/] {len(variants)} variants, {len(work)} runs as Ray tasks on {where} "
            f"(1 CPU and {THREADS_PER_CPU_RUN} thread each, or a GPU share) → {folder}"
        )
        try:
            with LiveProgress(console, runs) as live:
                outcomes = ray_executor.run(job_list, live.on_event)
        finally:
            ray_executor.close()
    else:
        console.print(
            f"[bold]compare[/] {len(variants)} variants, {len(work)} runs, {plan.jobs} at a time "
            f"({plan.threads} thread{'s' if plan.threads > 1 else ''} each"
            f"{f', {gpus} GPU(s)' if gpus else ''}) → {folder}"
        )
        with LiveProgress(console, runs) as live:
            outcomes = make_executor(plan).run(job_list, live.on_event)
    for outcome in outcomes:
        _, record = runs[outcome.id]
        record.status, record.summary, record.history = (
            outcome.status,
            outcome.summary,
            outcome.history,
        )
        record.error, record.exit_code = outcome.error, outcome.exit_code
        if outcome.summary:
            record.run_dir = outcome.summary.get("run_dir")
    return plan.jobs, plan.threads


def _gpus(devices: list[str]) -> int:
    """CUDA devices the runs will use: 0 when every run is on the CPU."""
    if all(d in ("cpu", "mps") for d in devices):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
