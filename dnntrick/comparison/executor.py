"""Where the runs of a comparison execute. One small interface, shared by `compare` and anything
else that runs many specs (a tuner):

    Executor.run(jobs, on_event, stop=None) -> list[Outcome]

- `jobs`: `Job`s (a validated spec as a plain dict, where its run directory goes, and `resume`:
  a cut run's directory to continue from its checkpoint).
- `on_event`: progress, called in the caller's thread: ("start", id, {pid}), ("epoch", id, ...),
  ("end", id, {status, test_accuracy}).
- `stop`: a `comparison.stop.Stop`, usually filled by `stop_on_signals` (SIGINT/SIGTERM). When it
  is requested, no new job starts and the running ones are asked to save a checkpoint and stop
  (status "interrupted"); when it is urgent (a second signal) they stop at once and any worker
  still there after KILL_GRACE_S is killed. `run` returns only when no worker runs any more.
- The result: one `Outcome` per job that started (ok, diverged, error or interrupted, in any
  order); a job with no Outcome never started.

Executors: `InProcessExecutor` (one run after another in this process, --jobs 1);
`ProcessExecutor` (up to N spawned worker processes, 'spawn': torch and fork don't mix, each with
its torch thread count set so that jobs × threads ≤ cores; the workers never outlive the caller,
see stop.py); `RayExecutor` in ray_executor.py.

Workers never raise: every run comes back as an `Outcome` with a one-line message, so one failing
variant cannot stop the others. Progress comes back as small tuples through a multiprocessing
queue, fed by `EventReporter` inside the worker.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from dnntrick.comparison.stop import Stop, running, worker_lifeline
from dnntrick.training.report import Reporter

# An MLP step on small batches gains little from intra-op threads, and on a busy machine they
# cost a lot (measured: one 5,000-sample epoch 1.8 s with 1 thread, 43 s with 2 on 2 loaded
# cores), so on CPU one single-threaded run per core beats fewer, wider runs.
THREADS_PER_CPU_RUN = 1
RUNS_PER_GPU = 4  # MLP runs are small: several share one GPU and keep it busier than one alone
POLL_S = 0.1
KILL_GRACE_S = 3.0  # after a second signal: how long runs may take to stop before SIGKILL

UNFINISHED = ("interrupted", "not run")  # a stopped run's status, and a job's that never started

# (kind, job id, payload): ("start", id, {pid}), ("epoch", id, {epoch, epochs[, val_accuracy,
# done]}), ("end", id, {status, test_accuracy})
Event = tuple[str, int, dict[str, Any]]


@dataclass(frozen=True)
class Job:
    """One run: a validated spec (sent as a plain dict so it pickles anywhere) and where to go."""

    id: int
    spec: dict[str, Any]
    out: str
    source: str | None = None
    overrides: list[str] = field(default_factory=list)
    resume: str | None = None  # a cut run's directory: continue it from its last checkpoint


@dataclass
class Outcome:
    id: int
    status: str  # ok | diverged | error | interrupted (a signal; checkpoint saved) | cancelled
    summary: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0  # the DnntrickError's exit code; 1 for anything unexpected


class Executor(Protocol):
    """Runs jobs and returns one Outcome per job that started (in any order); calls on_event
    with progress; stops early when `stop` is requested (see the module docstring)."""

    def run(
        self, jobs: list[Job], on_event: Callable[[Event], None], stop: Stop | None = None
    ) -> list[Outcome]: ...


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


class Cancelled(Exception):
    """Raised at an epoch end inside a run whose job was cancelled (e.g. a pruned trial)."""


class EventReporter(Reporter):
    """A silent Reporter that forwards epoch starts and ends as events (for the live table).
    `stop`: asked after each epoch end; True stops the run there (raises Cancelled)."""

    def __init__(
        self,
        job_id: int,
        send: Callable[[Event], None],
        stop: Callable[[], bool] | None = None,
    ):
        self.job_id, self.send, self.stop = job_id, send, stop
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
        if self.stop is not None and self.stop():
            raise Cancelled


def run_job(
    job: Job,
    send: Callable[[Event], None],
    arrays: Any = None,
    stop: Callable[[], bool] | None = None,
) -> Outcome:
    """Train one job; any failure becomes an Outcome with a one-line message, never an exception.
    Sends ("start", id, {pid}) first and ("end", id, {status, test_accuracy}) last. `arrays`: the
    data set's decoded arrays when the caller has them (Ray's object store), else read from disk.
    `stop`: asked at each epoch end; True ends the run there with status 'cancelled'."""
    outcome = _train(job, send, arrays, stop)
    accuracy = outcome.summary["test_accuracy"] if outcome.summary else None
    send(("end", job.id, {"status": outcome.status, "test_accuracy": accuracy}))
    return outcome


def _train(
    job: Job, send: Callable[[Event], None], arrays: Any, stop: Callable[[], bool] | None = None
) -> Outcome:
    from pathlib import Path

    import torch

    from dnntrick.errors import DivergedError, DnntrickError, Interrupted
    from dnntrick.runner import run_spec
    from dnntrick.spec.schema import Spec

    send(("start", job.id, {"pid": os.getpid()}))
    try:
        spec = Spec.model_validate(job.spec)
        with running():
            result = run_spec(
                spec,
                job.out,
                EventReporter(job.id, send, stop),
                job.source,
                list(job.overrides),
                arrays=arrays,
                resume=Path(job.resume) if job.resume else None,
                threads=torch.get_num_threads(),  # the plan's count, for train.threads: auto
            )
    except Interrupted as err:
        return Outcome(job.id, "interrupted", error=str(err), exit_code=err.exit_code)
    except Cancelled:
        return Outcome(job.id, "cancelled", error="stopped early: cancelled")
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

    def run(
        self, jobs: list[Job], on_event: Callable[[Event], None], stop: Stop | None = None
    ) -> list[Outcome]:
        import torch

        stop = stop or Stop()
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads or before)
        outcomes: list[Outcome] = []
        try:
            for job in jobs:
                if stop.requested:
                    break
                outcomes.append(run_job(job, on_event))
                if outcomes[-1].status == "interrupted" and not stop.requested:
                    stop.request_from_exit(outcomes[-1].exit_code)  # the run caught it itself
        finally:
            torch.set_num_threads(before)
        return outcomes


_events: Any = None  # the worker's end of the event queue (set by _init_worker)
_halt: Any = None  # set by the parent once it stops: a job picked up after that does not start


def _init_worker(events: Any, halt: Any, threads: int) -> None:
    global _events, _halt
    worker_lifeline()  # first: a worker must never outlive the compare
    _events, _halt = events, halt
    import torch

    torch.set_num_threads(threads)


def _worker(job: Job) -> Outcome | None:
    if _halt.is_set():
        return None  # never started
    return run_job(job, _events.put)


class ProcessExecutor:
    """Runs the jobs in up to `jobs` spawned worker processes with `threads` torch threads each."""

    def __init__(self, jobs: int, threads: int, start_method: str = "spawn"):
        self.jobs, self.threads, self.start_method = jobs, threads, start_method

    def run(
        self, jobs: list[Job], on_event: Callable[[Event], None], stop: Stop | None = None
    ) -> list[Outcome]:
        stop = stop or Stop()
        context = multiprocessing.get_context(self.start_method)
        events, halt = context.Queue(), context.Event()
        outcomes: list[Outcome] = []
        pool = ProcessPoolExecutor(
            self.jobs,
            mp_context=context,
            initializer=_init_worker,
            initargs=(events, halt, self.threads),
        )
        running: dict[int, int] = {}  # job id → pid of the worker that runs it
        told = 0  # signals forwarded so far (the workers hear each signal once)

        def track(event: Event) -> None:
            kind, job_id, payload = event
            if kind == "start" and payload.get("pid"):
                running[job_id] = payload["pid"]
                if told:  # it started just before the stop: stop it too
                    _signal(payload["pid"], stop.signum)
            elif kind == "end":
                running.pop(job_id, None)
            on_event(event)

        kill_at = None
        try:
            futures: dict[Future[Outcome | None], Job] = {
                pool.submit(_worker, job): job for job in jobs
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                _drain(events, track)
                for future in done:
                    outcome = _outcome(future, futures[future], stop)
                    if outcome is not None:
                        outcomes.append(outcome)
                if stop.count > told:  # a new signal: no new job; the running ones stop
                    halt.set()
                    for future in pending:
                        future.cancel()
                    for pid in running.values():
                        _signal(pid, stop.signum)
                    told = stop.count
                    if stop.urgent:
                        kill_at = time.monotonic() + KILL_GRACE_S
                if kill_at is not None and time.monotonic() > kill_at:
                    _kill_workers(pool)  # the futures now fail as BrokenProcessPool: interrupted
                    kill_at = None
            _drain(events, track)
            if stop.requested:  # every job is in: the idle workers hold nothing, and a torch
                _kill_workers(pool)  # process's orderly exit takes seconds on a busy machine
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return outcomes


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        _signal(process.pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # it has just ended
        os.kill(pid, signum)


def _drain(events: Any, on_event: Callable[[Event], None]) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return


def _outcome(future: Future[Outcome | None], job: Job, stop: Stop) -> Outcome | None:
    """The job's Outcome; None when it never started."""
    if future.cancelled():
        return None
    try:
        return future.result()
    except BrokenProcessPool:
        if stop.requested:  # killed after a second signal
            message = f"stopped at once ({stop.name}); its worker was killed"
            return Outcome(job.id, "interrupted", error=message, exit_code=stop.exit_code)
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
