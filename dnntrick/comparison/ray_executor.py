"""`compare --executor ray`: the comparison's runs as Ray tasks, on a local Ray instance or on an
existing cluster. The same `Executor` interface as the process executor, so everything above it
(variants, seeds, live progress, table, files) is shared.

- Data: the driver decodes each data set once and `ray.put`s the arrays; every task gets them
  from the object store (zero-copy on its node), so no worker needs the data on its own disk.
- Resources: one CPU per run with one torch thread (what the process executor gives each run when
  there are at least as many runs as cores, so seeds give the same numbers), or a GPU fraction
  (1/RUNS_PER_GPU) for runs on CUDA.
- A task whose worker dies is retried once by Ray (max_retries=1: system failures only; a run's
  own errors come back as Outcomes and are never retried), then reported in its row.
- Progress: tasks put events on a `ray.util.queue.Queue`; the driver drains it while it waits.
- Run directories: a task on the driver's node writes under the comparison's folder as usual; a
  task on another node trains into a temporary folder and ships its files back, and the driver
  writes them under the comparison's folder. A job that continues a cut run (`Job.resume`) runs
  on the driver's node, where its run directory is.
- Stopping (`stop` requested, e.g. Ctrl-C or SIGTERM to the compare): queued tasks are
  cancelled; running ones get Ray's cancel, which calls SIGINT's handler in the task: a run
  that trains saves a checkpoint and returns "interrupted", one outside training stops at once
  (stop.task_signals). A second signal force-cancels (kills) them.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnntrick.comparison.executor import (
    POLL_S,
    RUNS_PER_GPU,
    THREADS_PER_CPU_RUN,
    Event,
    Job,
    Outcome,
    run_job,
)
from dnntrick.comparison.stop import Stop, task_signals
from dnntrick.errors import DnntrickError, UsageError

INSTALL = "pip install 'dnntrick[ray]'"

# What a task runs: run_job, or a stand-in in the tests (e.g. one whose worker dies).
Work = Callable[[Job, Callable[[Event], None], Any], Outcome]


def import_ray() -> Any:
    """The ray module, or a one-line UsageError (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


class RayExecutor:
    """Runs jobs as Ray tasks. `address`: an existing cluster ('auto', 'ray://host:10001', …);
    None starts a local instance with `cpus` CPUs (all cores when None), shut down at the end.
    `ship_runs`: always train into a temporary folder and send the files back (None: only when a
    task runs on another node than the driver)."""

    def __init__(
        self,
        address: str | None = None,
        cpus: int | None = None,
        work: Work = run_job,
        ship_runs: bool | None = None,
    ):
        self.address, self.cpus, self.work, self.ship_runs = address, cpus, work, ship_runs
        self.ray: Any = None
        self.started_here = False
        self.slots = 1  # runs at once: the cluster's CPUs (known once connected)

    def connect(self) -> str:
        """Join or start Ray; describes what the runs will use, e.g. 'local Ray, 2 CPUs'."""
        ray = self.ray = import_ray()
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    num_cpus=self.cpus if self.address is None else None,
                    include_dashboard=False,
                    logging_level=logging.ERROR,
                    log_to_driver=False,  # tasks print nothing; events carry their progress
                )
            except (ConnectionError, ValueError, RuntimeError) as err:
                where = f"--address {self.address}" if self.address else "a local Ray instance"
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise UsageError(f"{where}: cannot start or reach Ray ({first})") from None
            self.started_here = True
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        self.slots = max(1, cpus // THREADS_PER_CPU_RUN)
        where = f"Ray at {self.address}" if self.address else "local Ray"
        return f"{where}, {cpus} CPUs" + (f", {gpus} GPUs" if gpus else "")

    def close(self) -> None:
        if self.started_here and self.ray is not None:
            self.ray.shutdown()
        self.started_here = False

    def run(
        self, jobs: list[Job], on_event: Callable[[Event], None], stop: Stop | None = None
    ) -> list[Outcome]:
        stop = stop or Stop()
        if self.ray is None:
            self.connect()
        ray = self.ray
        from ray.util.queue import Queue

        events = Queue(actor_options={"num_cpus": 0})
        data = _put_data(ray, jobs)
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(max_retries=1)(_task)
        driver = ray.get_runtime_context().get_node_id()
        ship = self.ship_runs
        refs: dict[Any, Job] = {}
        for job in jobs:
            options = task_resources(job.spec["device"], gpus)
            if job.resume:  # its checkpoint is on this node
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(driver, soft=False)
            arrays = data[_data_key(job)]
            ref = task.options(**options).remote(job, arrays, events, self.work, driver, ship)
            refs[ref] = job
        outcomes: list[Outcome] = []
        pending = list(refs)
        told = 0  # signals passed on to the tasks so far
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
                _drain(events, on_event)
                for ref in done:
                    outcome = _outcome(ray, ref, refs[ref], stop)
                    if outcome is None:
                        continue
                    if outcome.error and outcome.error.startswith("its Ray "):  # it sent no end
                        on_event(("end", outcome.id, {"status": "error", "test_accuracy": None}))
                    outcomes.append(outcome)
                if stop.count > told:  # queued: dropped; running: checkpoint and stop
                    for ref in pending:
                        ray.cancel(ref, force=stop.urgent)
                    told = stop.count
            _drain(events, on_event)
        finally:
            for ref in pending:  # an exception here: stop what is still queued or running
                ray.cancel(ref, force=True)
            events.shutdown()
        return outcomes


def _data_key(job: Job) -> tuple[str, str | None]:
    return job.spec["data"]["dataset"], job.spec["data"].get("root")


def _put_data(ray: Any, jobs: list[Job]) -> dict[tuple[str, str | None], Any]:
    """One object-store copy of each data set's decoded arrays. A data set the driver cannot
    read maps to None: the task then reads it itself, and reports the same error if it can't."""
    import numpy as np

    from dnntrick.data.datasets import load_arrays

    refs: dict[tuple[str, str | None], Any] = {}
    for job in jobs:
        key = _data_key(job)
        if key in refs:
            continue
        try:
            arrays = {k: np.asarray(v) for k, v in load_arrays(*key).items()}
        except DnntrickError:
            refs[key] = None
            continue
        refs[key] = ray.put(arrays)
    return refs


def task_resources(device: str, cluster_gpus: float) -> dict[str, Any]:
    """A CPU run takes one CPU; a CUDA run (or `auto` on a cluster with GPUs) a GPU fraction.
    Ray sets CUDA_VISIBLE_DEVICES per task, so 'cuda' inside the task is the GPU it was given."""
    on_gpu = device.startswith("cuda") or (device == "auto" and cluster_gpus > 0)
    if on_gpu:
        return {"num_cpus": THREADS_PER_CPU_RUN, "num_gpus": 1 / RUNS_PER_GPU}
    return {"num_cpus": THREADS_PER_CPU_RUN, "num_gpus": 0}


def _task(
    job: Job, arrays: Any, events: Any, work: Work, driver: str, ship: bool | None
) -> tuple[Outcome, dict[str, bytes]]:
    """Inside a Ray worker: train one job; (Outcome, files to write on the driver's side)."""
    with task_signals():  # first: a cancel must not land in the middle of `import torch`
        import ray
        import torch

        torch.set_num_threads(THREADS_PER_CPU_RUN)
        if ship is None:
            ship = ray.get_runtime_context().get_node_id() != driver
        if not ship:
            return work(job, events.put_nowait, arrays), {}
        with tempfile.TemporaryDirectory(prefix="dnntrick-ray-") as tmp:
            local = Job(job.id, job.spec, tmp, job.source, job.overrides, job.resume)
            outcome = work(local, events.put_nowait, arrays)
            files = {
                str(path.relative_to(tmp)): path.read_bytes()
                for path in sorted(Path(tmp).rglob("*"))
                if path.is_file()
            }
        return outcome, files


def _outcome(ray: Any, ref: Any, job: Job, stop: Stop) -> Outcome | None:
    """The job's Outcome; None when it was cancelled before it could return one."""
    try:
        outcome, files = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return None
    except ray.exceptions.RayTaskError as err:  # the task raised: not a run's error (those are
        cause = err.cause  # Outcomes), e.g. the task could not be unpickled on the worker
        message = f"{type(cause).__name__}: {cause}".splitlines()[0][:200]
        return Outcome(job.id, "error", error=f"its Ray task failed: {message}", exit_code=1)
    except ray.exceptions.RayError as err:  # the worker died on both tries, or its node went
        if stop.urgent:  # force-cancelled: its worker was killed
            message = f"stopped at once ({stop.name}); its Ray worker was killed"
            return Outcome(job.id, "interrupted", error=message, exit_code=stop.exit_code)
        message = (str(err).strip().splitlines() or [""])[0][:160]
        return Outcome(
            job.id,
            "error",
            error=f"its Ray worker died (tried twice): {type(err).__name__}: {message}",
            exit_code=1,
        )
    if files:
        _write_shipped(outcome, files, Path(job.out))
    return outcome


def _write_shipped(outcome: Outcome, files: dict[str, bytes], out: Path) -> None:
    """Write a remote task's run directory under `out` and point its summary at it."""
    import json

    from dnntrick.training.rundir import atomic_write, make_run_dir, write_json

    folders = {name.split("/", 1)[0] for name in files}
    for folder in folders:  # one: the run's folder, named <spec name>-<time>
        name = folder.rsplit("-", 2)[0]
        target = out / folder
        try:
            target.mkdir(parents=True)
        except FileExistsError:
            target = make_run_dir(out, name)
        for rel, data in files.items():
            if rel.startswith(folder + "/"):
                path = target / rel.split("/", 1)[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data)
        summary_file = target / "summary.json"
        if outcome.summary is not None and summary_file.is_file():
            outcome.summary["run_dir"] = str(target)
            summary = json.loads(summary_file.read_text())
            summary["run_dir"] = str(target)
            write_json(summary_file, summary)


def _drain(events: Any, on_event: Callable[[Event], None]) -> None:
    waiting = events.qsize()
    if waiting:
        for event in events.get_nowait_batch(waiting):
            on_event(event)
