"""`dnntrick compare --resume COMPARE_DIR`: finish a comparison that was stopped (Ctrl-C,
SIGTERM, a crash), running only what is missing, so that the result is the uninterrupted one.

Before its first run a comparison writes `plan.json` in its folder: the options, the variants and
every job's resolved spec, and a SHA-256 fingerprint of them. A resume

1. reads the plan and refuses (exit 2, one line, nothing touched) when it is missing, unreadable,
   or no longer matches its fingerprint;
2. matches every run directory of the folder to its job by its spec.yaml, and refuses when one
   matches no job or its checkpoint was made from another spec;
3. keeps the finished runs (summary.json, or a run that diverged: a result, not a failure),
   continues the cut ones from their last checkpoint (`Job.resume`) and runs the others (never
   started, failed) afresh, with the thread count of the first session (the same arithmetic);
4. writes the full comparison.json/csv.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.comparison.plan import PLAN, load_plan, match_runs
from dnntrick.errors import DnntrickError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from dnntrick.comparison.session import Comparison, Outputs, Work
    from dnntrick.comparison.variants import RunRecord, Variant


def refuse_options(given: Mapping[str, object]) -> None:
    """--resume runs the comparison's own specs: any option that would change them is refused."""
    if clash := [name for name, value in given.items() if value]:
        raise UsageError(f"--resume runs the comparison's own specs; drop {', '.join(clash)}")


def _state(run_dirs: list[Path]) -> tuple[str, Path | None]:
    """('done' | 'diverged' | 'cut' | 'fresh', the run directory it is in)."""
    from dnntrick.training.checkpoint import FOLDER, listing

    for run_dir in reversed(run_dirs):
        if (run_dir / "summary.json").is_file():
            return "done", run_dir
    for run_dir in reversed(run_dirs):
        stopped = _read_json(run_dir / "stopped.json")
        if stopped.get("status") == "diverged":
            return "diverged", run_dir
        if listing(run_dir / FOLDER):
            return "cut", run_dir
    return "fresh", None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def rebuild(folder: Path, document: dict[str, Any]) -> tuple[list[Variant], list[Work], str]:
    """The variants with their finished runs filled in, the work still to do, and a line that
    says which is which. Every refusal happens here, before anything is written."""
    from dnntrick.comparison.executor import Job
    from dnntrick.comparison.run_dirs import read_run
    from dnntrick.comparison.session import Work
    from dnntrick.comparison.variants import RunRecord
    from dnntrick.spec.config import dump_spec
    from dnntrick.spec.schema import Spec
    from dnntrick.training.resume import open_resume

    try:
        variants = [_variant(d) for d in document["variants"]]
        jobs = [
            (int(j["id"]), int(j["variant"]), int(j["seed"]), j["spec"]) for j in document["jobs"]
        ]
        specs = {job: Spec.model_validate(spec) for job, _, _, spec in jobs}
    except (KeyError, TypeError, ValueError, IndexError) as err:  # pydantic's is a ValueError
        first = str(err).splitlines()[0]
        raise UsageError(
            f"--resume {folder}: {PLAN} holds a spec this dnntrick cannot run ({first})"
        ) from None
    found = match_runs(folder, {job: spec for job, _, _, spec in jobs})
    work: list[Work] = []
    counts = {"done": 0, "diverged": 0, "cut": 0, "fresh": 0}
    for job_id, index, seed, spec in jobs:
        variant = variants[index]
        variant.specs[seed] = specs[job_id]
        state, run_dir = _state(found.get(job_id, []))
        counts[state] += 1
        record = RunRecord(seed)
        if state == "done" and run_dir is not None:
            record = read_run(run_dir)[0]
        elif state == "diverged" and run_dir is not None:
            record.status, record.exit_code, record.run_dir = "diverged", 3, str(run_dir)
            record.error = str(_read_json(run_dir / "stopped.json").get("message"))
        variant.runs.append(record)
        if state in ("done", "diverged"):
            continue
        resume = None
        if state == "cut" and run_dir is not None:
            # a checkpoint from another spec, or damaged: refused now, not mid-way
            open_resume(run_dir, dump_spec(specs[job_id]), force=False)
            resume = str(run_dir)
        job = Job(job_id, spec, str(folder), variant.source, variant.overrides, resume)
        work.append(Work(variant, record, job))
    total = sum(counts.values())
    finished = counts["done"] + counts["diverged"]
    if finished == total:
        return variants, work, f"the comparison is complete, all {total} runs finished"
    line = (
        f"{finished} of {total} runs finished, {counts['cut']} to continue from their "
        f"checkpoint, {counts['fresh']} to run"
    )
    return variants, work, line


def _variant(described: dict[str, Any]) -> Variant:
    from dnntrick.comparison.run_dirs import read_run
    from dnntrick.comparison.variants import Variant

    variant = Variant(
        described["label"],
        described["source"],
        list(described["overrides"]),
        dict(described["params"]),
        error=described["error"],
        exit_code=int(described["exit_code"]),
    )
    for run_dir in described["read"] or []:
        variant.runs.append(_read_other(Path(run_dir), read_run))
    return variant


def _read_other(run_dir: Path, read_run: Any) -> RunRecord:
    """A run directory the comparison read as it was: read again, as it is now."""
    from dnntrick.comparison.variants import RunRecord

    try:
        return read_run(run_dir)[0]
    except (OSError, ValueError, DnntrickError) as err:
        return RunRecord(0, "error", error=f"{run_dir}: cannot be read now ({err})", exit_code=1)


def resume_comparison(
    folder: Path,
    jobs: int | None = None,
    executor: str | None = None,
    address: str | None = None,
    console: Console | None = None,
    outputs: Outputs | None = None,
) -> Comparison:
    """Run what `folder`'s comparison is missing, then write the whole comparison (see the
    module docstring). A complete comparison runs nothing and says so."""
    from dnntrick.comparison.executor import Plan, cpu_count
    from dnntrick.comparison.session import (
        Outputs,
        check_executor,
        check_outputs,
        execute,
        finish,
        make_console,
    )
    from dnntrick.comparison.stop import Stop, stop_on_signals
    from dnntrick.comparison.variants import pick_baseline

    outputs = outputs or Outputs()
    check_outputs(outputs.plot, outputs.csv_file, outputs.plot_gradients)
    document = load_plan(folder)
    options = document["options"]
    executor = executor or options.get("executor", "process")
    if address is None and executor == options.get("executor"):
        address = options.get("address")
    check_executor(executor, address, jobs)
    variants, work, line = rebuild(folder, document)
    base = pick_baseline(variants, options.get("baseline"))
    console = make_console(console)
    started = time.perf_counter()
    if not work:
        previous = _read_json(folder / "comparison.json")
        # killed after its last run, before comparison.json: write it now
        complete = bool(previous) and previous.get("missing_runs", 0) == 0
        console.print(f"{folder}: {line}; nothing to run", soft_wrap=True)
        plan = Plan(int(previous.get("jobs") or 0), int(previous.get("threads_per_job") or 0))
        return finish(variants, base, folder, options, plan, Stop(), started, outputs, not complete)
    # the first session's threads per run: the same arithmetic, the same numbers
    threads = int(options.get("threads") or 1)
    plan = Plan(max(1, min(jobs or cpu_count() // threads, len(work))), threads)
    console.print(f"[bold]resume[/] {folder}: {line}", soft_wrap=True)
    header = f"{len(variants)} variants, {len(work)} runs to go"
    with stop_on_signals(Stop()) as stop:  # until what finished is written
        plan = execute(work, plan, executor, address, jobs, console, folder, header, stop)
        return finish(variants, base, folder, options, plan, stop, started, outputs)
