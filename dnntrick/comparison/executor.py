"""Where the runs of a comparison execute. One small interface, `Executor.run(jobs, on_event)`:

- `InProcessExecutor`: one run after another in this process (--jobs 1).
- `ProcessExecutor`: up to N worker processes ('spawn' start method: torch and fork don't mix),
  each with its torch thread count set so that jobs × threads ≤ cores.

Workers never raise: every run comes back as an `Outcome` (ok, diverged or error, with a
one-line message), so one failing variant cannot stop the others. Progress comes back as small
tuples through a multiprocessing queue, fed by `EventReporter` inside the worker.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from dnntrick.training.report import Reporter

# An MLP step on small batches gains little from intra-op threads, and on a busy machine they
# cost a lot (measured: one 5,000-sample epoch 1.8 s with 1 thread, 43 s with 2 on 2 loaded
# cores), so on CPU one single-threaded run per core beats fewer, wider runs.
THREADS_PER_CPU_RUN = 1
RUNS_PER_GPU = 4  # MLP runs are small: several share one GPU and keep it busier than one alone
POLL_S = 0.1

# (kind, job id, payload): ("start", id, {}), ("epoch", id, {epoch, epochs[, val_accuracy, done]}),
# ("end", id, {status, test_accuracy})
Event = tuple[str, int, dict[str, Any]]


@dataclass(frozen=True)
class Job:
    """One run: a validated spec (sent as a plain dict so it pickles anywhere) and where to go."""

    id: int
    spec: dict[str, Any]
    out: str
    source: str | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    id: int
    status: str  # ok | diverged | error
    summary: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0  # the DnntrickError's exit code; 1 for anything unexpected


class Executor(Protocol):
    """Runs jobs and returns one Outcome per job (in any order); calls on_event with progress."""

    def run(self, jobs: list[Job], on_event: Callable[[Event], None]) -> list[Outcome]: ...


class Plan(NamedTuple):
    jobs: int
    threads: int  # torch intra-op threads per worker


def cpu_count() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_jobs(n_runs: int, cores: int, gpus: int, jobs: int | None = None) -> Plan:
    """How many runs at once and with how many threads each.

    CPU: cores // THREADS_PER_CPU_RUN workers. GPU: RUNS_PER_GPU workers per GPU, never more than
    the cores. `jobs` (the user's --jobs) wins; threads are then cores // jobs (at least 1).
    """
    if jobs is None:
        jobs = RUNS_PER_GPU * gpus if gpus else cores // THREADS_PER_CPU_RUN
        jobs = min(jobs, cores)
    jobs = max(1, min(jobs, n_runs))
    return Plan(jobs, max(1, cores // jobs))


class EventReporter(Reporter):
    """A silent Reporter that forwards epoch starts and ends as events (for the live table)."""

    def __init__(self, job_id: int, send: Callable[[Event], None]):
        self.job_id, self.send = job_id, send
        self.epochs = 0

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs
        self.send(("epoch", self.job_id, {"epoch": epoch, "epochs": epochs}))

    def epoch_end(self, row: dict[str, Any], samples_per_second: float) -> None:
        self.send(
            (
                "epoch",
                self.job_id,
                {
                    "epoch": row["epoch"],
                    "epochs": self.epochs,
                    "val_accuracy": row["val_accuracy"],
                    "done": True,
                },
            )
        )


def run_job(job: Job, send: Callable[[Event], None], arrays: Any = None) -> Outcome:
    """Train one job; any failure becomes an Outcome with a one-line message, never an exception.
    Sends ("start", id, {}) first and ("end", id, {status, test_accuracy}) last. `arrays`: the
    data set's decoded arrays when the caller has them (Ray's object store), else read from disk."""
    outcome = _train(job, send, arrays)
    accuracy = outcome.summary["test_accuracy"] if outcome.summary else None
    send(("end", job.id, {"status": outcome.status, "test_accuracy": accuracy}))
    return outcome


def _train(job: Job, send: Callable[[Event], None], arrays: Any) -> Outcome:
    import torch

    from dnntrick.errors import DivergedError, DnntrickError
    from dnntrick.runner import run_spec
    from dnntrick.spec.schema import Spec

    send(("start", job.id, {}))
    try:
        spec = Spec.model_validate(job.spec)
        result = run_spec(
            spec,
            job.out,
            EventReporter(job.id, send),
            job.source,
            list(job.overrides),
            arrays=arrays,
            threads=torch.get_num_threads(),  # the plan's count, for train.threads: auto
        )
    except DivergedError as err:
        return Outcome(job.id, "diverged", error=str(err), exit_code=err.exit_code)
    except DnntrickError as err:
        return Outcome(job.id, "error", error=str(err), exit_code=err.exit_code)
    except Exception as err:  # a worker must report, not die: the other runs go on
        return Outcome(job.id, "error", error=f"{type(err).__name__}: {err}", exit_code=1)
    history = result.history
    finite = all(math.isfinite(r["train_loss"]) for r in history)
    if not finite or not math.isfinite(result.summary["test_loss"]):
        bad = next((r["epoch"] for r in history if not math.isfinite(r["train_loss"])), None)
        where = f" at epoch {bad}" if bad else ""
        return Outcome(
            job.id,
            "diverged",
            result.summary,
            history,
            f"the loss became NaN or infinite{where}; lower the learning rate or clip gradients",
            exit_code=3,
        )
    return Outcome(job.id, "ok", result.summary, history)


class InProcessExecutor:
    """Runs the jobs one after another in this process, with `threads` torch threads."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def run(self, jobs: list[Job], on_event: Callable[[Event], None]) -> list[Outcome]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads or before)
        try:
            return [run_job(job, on_event) for job in jobs]
        finally:
            torch.set_num_threads(before)


_events: Any = None  # the worker's end of the event queue (set by _init_worker)


def _init_worker(events: Any, threads: int) -> None:
    global _events
    _events = events
    import torch

    torch.set_num_threads(threads)


def _worker(job: Job) -> Outcome:
    return run_job(job, _events.put)


class ProcessExecutor:
    """Runs the jobs in up to `jobs` spawned worker processes with `threads` torch threads each."""

    def __init__(self, jobs: int, threads: int, start_method: str = "spawn"):
        self.jobs, self.threads, self.start_method = jobs, threads, start_method

    def run(self, jobs: list[Job], on_event: Callable[[Event], None]) -> list[Outcome]:
        context = multiprocessing.get_context(self.start_method)
        events = context.Queue()
        outcomes: list[Outcome] = []
        pool = ProcessPoolExecutor(
            self.jobs, mp_context=context, initializer=_init_worker, initargs=(events, self.threads)
        )
        try:
            futures: dict[Future[Outcome], Job] = {pool.submit(_worker, job): job for job in jobs}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                _drain(events, on_event)
                for future in done:
                    outcomes.append(_outcome(future, futures[future]))
            _drain(events, on_event)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return outcomes


def _drain(events: Any, on_event: Callable[[Event], None]) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return


def _outcome(future: Future[Outcome], job: Job) -> Outcome:
    try:
        return future.result()
    except BrokenProcessPool:
        return Outcome(
            job.id, "error", error="its worker process died (out of memory?)", exit_code=1
        )
    except Exception as err:  # e.g. an Outcome that could not be pickled back
        return Outcome(job.id, "error", error=f"{type(err).__name__}: {err}", exit_code=1)


def make_executor(plan: Plan) -> Executor:
    """In this process for one job at a time, else a pool of worker processes."""
    if plan.jobs == 1:
        return InProcessExecutor(plan.threads)
    return ProcessExecutor(plan.jobs, plan.threads)
