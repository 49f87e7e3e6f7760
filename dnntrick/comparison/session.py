"""A comparison from start to end: inputs → variants → runs (worker processes or Ray) → the
per-variant statistics → comparison.json/csv and plots in its folder.

`dnntrick compare` parses its options and calls `run_comparison`; so does the Python API.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from dnntrick.comparison.executor import Job, Plan
    from dnntrick.comparison.stop import Stop
    from dnntrick.comparison.variants import RunRecord, Variant

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
    stopped: int = 0  # 130/143 when a signal stopped it before every run had finished
    missing: int = 0  # runs that did not finish (interrupted or never started)
    written: bool = True  # comparison.json/csv written (a complete one resumed: left as it was)

    @property
    def exit_code(self) -> int:
        from dnntrick.comparison.variants import exit_code

        return self.stopped or exit_code(self.variants)

    @property
    def resume_command(self) -> str:
        """How to finish it: runs only the missing or failed runs."""
        return f"dnntrick compare --resume {shlex.quote(str(self.folder))}"


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
    checks the variants first, tunes each once the folder exists; what it chose goes into the
    plan (so --resume keeps it) and comparison.json."""
    from dnntrick.comparison.run_dirs import read_run_dirs
    from dnntrick.comparison.variants import (
        baseline_reason,
        dedupe_labels,
        expand_specs,
        parse_vary,
        pick_baseline,
        split_inputs,
    )
    from dnntrick.folders import symlink_loop

    paths, overrides = split_inputs(list(inputs))
    if device is not None:
        overrides.append(f"device={device}")
    grid = parse_vary(list(vary or []))
    _check_options(paths, overrides, grid, target)
    check_outputs(plot, csv_file, plot_gradients)
    check_executor(executor, address, jobs)
    dirs = [p for p in paths if Path(p).is_dir() or symlink_loop(Path(p))]  # a loop: no spec
    specs = [p for p in paths if p not in dirs]
    read, skipped = read_run_dirs(dirs)
    variants = expand_specs(specs, overrides, grid, seeds) + read
    variants.sort(key=lambda v: paths.index(v.source))  # the order given; the first is baseline
    console = make_console(console)
    for where, why in skipped:  # one line each, the rest is compared
        console.print(f"skipped {where}: {why}", markup=False, highlight=False, soft_wrap=True)
    if not variants:
        where, why = skipped[0]
        raise UsageError(f"nothing left to compare: {len(skipped)} skipped, e.g. {where}: {why}")
    dedupe_labels(variants)
    base = pick_baseline(variants, baseline)
    reason = baseline_reason(variants, base, baseline)
    console.print(f"baseline: {base.label} ({reason})", markup=False, soft_wrap=True)
    if tuner is not None:
        tuner.check(variants)

    from dnntrick.comparison.executor import THREADS_PER_CPU_RUN, cpu_count, plan_jobs
    from dnntrick.comparison.plan import write_plan
    from dnntrick.comparison.stop import Stop, stop_on_signals
    from dnntrick.training.rundir import make_run_dir

    folder = make_run_dir(out, "compare")
    tuning = tuner.run(variants, folder, console, jobs, executor) if tuner is not None else None
    work = spec_jobs(variants, folder, executor)
    gpus = 0 if executor == "ray" else _gpus([w.job.spec["device"] for w in work])
    plan = plan_jobs(len(work), cpu_count(), gpus, jobs)
    options = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": list(inputs),
        "vary": list(vary or []),
        "seeds": sorted({r.seed for v in variants for r in v.runs}),
        "target": target,
        "baseline": base.label,
        "executor": executor,
        "address": address,
        "threads": THREADS_PER_CPU_RUN if executor == "ray" else plan.threads,
        "baseline_reason": reason,
        "skipped": [{"folder": where, "why": why} for where, why in skipped],
        "tuning": tuning,  # compare --tune: each variant's tuned values, the studies
    }
    entries = [(w.job.id, w.variant, w.record.seed, w.job.spec) for w in work]
    write_plan(folder, variants, entries, options)  # before any run: what --resume continues
    started = time.perf_counter()
    header = f"{len(variants)} variants, {len(work)} runs"
    outputs = Outputs(plot, csv_file, plot_gradients)
    with stop_on_signals(Stop()) as stop:  # until what finished is written
        plan = execute(work, plan, executor, address, jobs, console, folder, header, stop)
        return finish(variants, base, folder, options, plan, stop, started, outputs)


@dataclass
class Work:
    """One run to execute: its variant, the record its outcome fills, and the job itself."""

    variant: Variant
    record: RunRecord
    job: Job


@dataclass
class Outputs:
    """The files asked for beside the comparison folder's own."""

    plot: Path | None = None
    csv_file: Path | None = None
    plot_gradients: Path | None = None


def make_console(console: Console | None) -> Console:
    """`console`, or a quiet one on stderr; 160 columns where the output is no terminal."""
    from rich.console import Console

    if console is None:
        console = Console(stderr=True, highlight=False, quiet=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # logs and pipes: keep each variant on one line
    return console


def spec_jobs(variants: list[Variant], folder: Path, executor: str) -> list[Work]:
    """One job per spec variant and seed, numbered in order, writing under `folder`."""
    from dnntrick.comparison.executor import Job

    pairs = [(v, r) for v in variants for r in v.runs if r.seed in v.specs]
    # Ray places each run on a GPU itself; the process executor spreads `auto` runs over GPUs
    gpus = 0 if executor == "ray" else _gpus([v.specs[r.seed].device for v, r in pairs])
    work = []
    for i, (variant, record) in enumerate(pairs):
        spec = variant.specs[record.seed].model_dump(mode="json")
        if gpus > 1 and spec["device"] == "auto":
            spec["device"] = f"cuda:{i % gpus}"  # spread the runs over the GPUs
        work.append(
            Work(variant, record, Job(i, spec, str(folder), variant.source, variant.overrides))
        )
    return work


def execute(
    work: list[Work],
    plan: Plan,
    executor: str,
    address: str | None,
    cpus: int | None,
    console: Console,
    folder: Path,
    header: str,
    stop: Stop,
) -> Plan:
    """Run the jobs of `work` (live progress on `console`) and fill in their records; a
    SIGINT/SIGTERM fills `stop` and stops them (see stop.py). Records of jobs that never
    started: "not run"."""
    from dnntrick.comparison.executor import THREADS_PER_CPU_RUN, make_executor
    from dnntrick.comparison.report import LiveProgress
    from dnntrick.comparison.stop import stop_on_signals

    if not work:
        return plan._replace(jobs=0, threads=0)
    runs = {w.job.id: (w.variant, w.record) for w in work}
    jobs = [w.job for w in work]
    if executor == "ray":
        from dnntrick.comparison.ray_executor import RayExecutor

        ray_executor = RayExecutor(address, cpus=cpus)
        where = ray_executor.connect()
        plan = plan._replace(jobs=min(ray_executor.slots, len(work)), threads=THREADS_PER_CPU_RUN)
        console.print(
            f"[bold]compare[/] {header} as Ray tasks on {where} "
            f"(1 CPU and {THREADS_PER_CPU_RUN} thread each, or a GPU share) → {folder}"
        )
        try:  # after connect: Ray installs a SIGTERM handler of its own in the driver
            with stop_on_signals(stop), LiveProgress(console, runs) as live:
                outcomes = ray_executor.run(jobs, live.on_event, stop)
        finally:
            ray_executor.close()
    else:
        gpus = _gpus([job.spec["device"] for job in jobs])
        console.print(
            f"[bold]compare[/] {header}, {plan.jobs} at a time "
            f"({plan.threads} thread{'s' if plan.threads > 1 else ''} each"
            f"{f', {gpus} GPU(s)' if gpus else ''}) → {folder}"
        )
        with stop_on_signals(stop), LiveProgress(console, runs) as live:
            outcomes = make_executor(plan).run(jobs, live.on_event, stop)
    for outcome in outcomes:
        record = runs[outcome.id][1]
        record.status, record.summary, record.history = (
            outcome.status,
            outcome.summary,
            outcome.history,
        )
        record.error, record.exit_code = outcome.error, outcome.exit_code
        if outcome.summary:
            record.run_dir = outcome.summary.get("run_dir")
    finished = {o.id for o in outcomes}
    for job_id, (_, record) in runs.items():
        if job_id not in finished:
            record.status = "not run"
    return plan


def finish(
    variants: list[Variant],
    base: Variant,
    folder: Path,
    options: dict[str, Any],
    plan: Plan,
    stop: Stop,
    started: float,
    outputs: Outputs,
    write: bool = True,
) -> Comparison:
    """Judge every variant against `base` and write comparison.json/csv (and the outputs asked
    for). A stopped comparison writes what finished, the missing runs marked, and no plots."""
    from dnntrick.comparison.executor import UNFINISHED
    from dnntrick.comparison.report import comparison_csv, comparison_json
    from dnntrick.comparison.variants import summarize
    from dnntrick.training.rundir import atomic_write, write_json

    target = options["target"]
    stats = [summarize(v, base, target) for v in variants]
    missing = [r for v in variants for r in v.runs if r.status in UNFINISHED]
    meta = {
        "comparison_dir": str(folder),
        "created": options["created"],
        "inputs": options["inputs"],
        "vary": options["vary"],
        "seeds": options["seeds"],
        "confidence": 0.95,
        "jobs": plan.jobs,
        "threads_per_job": plan.threads,
        "wall_seconds": time.perf_counter() - started,
        "complete": not missing,
        "interrupted": (stop.name or None) if missing else None,
        "missing_runs": len(missing),
        "baseline_reason": options.get("baseline_reason"),
        "skipped": options.get("skipped", []),
    }
    document = comparison_json(variants, stats, base, meta, target)
    tuning = options.get("tuning")
    if tuning:  # compare --tune: "tuned": {KEY: value} per variant
        for entry in document["variants"]:
            entry["tuned"] = tuning["tuned"].get(entry["label"], {})
        document["tuning"] = {k: v for k, v in tuning.items() if k not in ("tuned", "notes")}
    text = comparison_csv(variants, target)
    if write:
        write_json(folder / "comparison.json", document)
        atomic_write(folder / "comparison.csv", text.encode())
    notes = list(tuning["notes"]) if tuning else []
    comparison = Comparison(
        variants, stats, base, folder, document, text, target, notes, written=write
    )
    # a signal after the last run had finished stopped nothing: the comparison is complete
    comparison.stopped, comparison.missing = (stop.exit_code if missing else 0), len(missing)
    if outputs.csv_file is not None:
        atomic_write(outputs.csv_file, text.encode())
    if comparison.stopped:
        return comparison
    if outputs.plot is not None:
        from dnntrick.comparison.plots import plot_comparison

        n_seeds = max((len(v.runs) for v in variants), default=0)
        plot_comparison(
            variants, outputs.plot, f"dnntrick compare: {len(variants)} variants × {n_seeds} seeds"
        )
    if outputs.plot_gradients is not None:
        from dnntrick.diagnosis.plot import plot_gradient_comparison

        groups = [(v.label, [Path(r.run_dir) for r in v.runs if r.run_dir]) for v in variants]
        title = "gradient norm by depth"
        for label in plot_gradient_comparison(groups, outputs.plot_gradients, title):
            comparison.notes.append(f"{label}: no recorded diagnostics (set train.diagnostics)")
    return comparison


def check_executor(executor: str, address: str | None, jobs: int | None) -> None:
    """The executor options, before anything runs (Ray not installed: how to install it)."""
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

        import_ray()


def check_outputs(plot: Path | None, csv_file: Path | None, plot_gradients: Path | None) -> None:
    """--plot, --csv and --plot-gradients name writable files of the right kind."""
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: the file name must end in .png")
    for option, path in (("--plot", plot), ("--csv", csv_file)):
        if path is not None and not path.parent.resolve().is_dir():
            raise UsageError(f"{option} {path}: folder {path.parent} does not exist")
    if plot_gradients is not None and (
        plot_gradients.suffix.lower() != ".png" or not plot_gradients.parent.resolve().is_dir()
    ):
        raise UsageError(f"--plot-gradients {plot_gradients}: give a .png in an existing folder")


def _check_options(
    paths: list[str],
    overrides: list[str],
    grid: list[tuple[str, list[str]]],
    target: float | None,
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


def _gpus(devices: list[str]) -> int:
    """CUDA devices the runs will use: 0 when every run is on the CPU."""
    if all(d in ("cpu", "mps") for d in devices):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
