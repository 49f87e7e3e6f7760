"""A tuning study's runs, one job at a time as slots free up, each stoppable at an epoch end.

compare hands its executors the whole job list at once; a study cannot: the next trial's values
depend on the finished ones (TPE) and a pruned trial's run must stop early. So `Pool` submits
single jobs and returns the finished ones, on the same workers as compare (`run_job` in this
process, in spawned worker processes, or as Ray tasks through the Ray executor's task).

Stopping: `cancel(job_id)` creates a flag file; the run's EventReporter looks for it after each
epoch end and stops there (Outcome status 'cancelled'). Files work for every local worker and for
Ray tasks on the driver's node; a Ray task on another node (no shared disk) finishes its run.
In this process the flag is read right after the driver saw the epoch's event, so --jobs 1 stops
at exactly the epoch the pruner chose.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from dnntrick.comparison import executor as workers
from dnntrick.comparison.executor import POLL_S, Event, Job, Outcome, run_job
from dnntrick.comparison.stop import Stop

EXECUTORS = ("process", "ray")


def _flagged(flag: str, job: Job, send: Callable[[Event], None], arrays: Any = None) -> Outcome:
    """run_job that stops at the epoch end after `flag` appears (picklable for workers)."""
    return run_job(job, send, arrays, stop=functools.partial(os.path.exists, flag))


class Pool:
    """Runs jobs `slots` at a time. Backends: 'inline' (this process), 'process', 'ray'."""

    def __init__(
        self,
        flags: Path,
        on_event: Callable[[Event], None],
        slots: int = 1,
        threads: int = 1,
        executor: str = "process",
        address: str | None = None,
    ):
        self.flags, self.on_event, self.slots, self.threads = flags, on_event, slots, threads
        flags.mkdir(parents=True, exist_ok=True)
        self.kind = "ray" if executor == "ray" else "inline" if slots == 1 else "process"
        self.queued: list[Job] = []
        self.futures: dict[Any, Job] = {}
        self.where = "this process" if self.kind == "inline" else f"{slots} worker processes"
        self._pool: Any = None
        self._events: Any = None
        self._ray: Any = None
        if self.kind == "process":
            context = multiprocessing.get_context("spawn")
            self._events = context.Queue()
            # compare's workers: tied to this process (they never outlive it, see stop.py)
            self._pool = ProcessPoolExecutor(
                slots,
                mp_context=context,
                initializer=workers._init_worker,
                initargs=(self._events, context.Event(), threads),
            )
        elif self.kind == "ray":
            self._start_ray(address, slots)

    def _start_ray(self, address: str | None, cpus: int | None) -> None:
        from dnntrick.comparison.ray_executor import RayExecutor

        self._ray = RayExecutor(address, cpus=cpus if address is None else None)
        self.where = self._ray.connect()
        self.slots = self._ray.slots
        from ray.util.queue import Queue

        self._events = Queue(actor_options={"num_cpus": 0})
        self._data: dict[Any, Any] = {}

    @property
    def busy(self) -> int:
        return len(self.queued) + len(self.futures)

    def flag(self, job_id: int) -> str:
        return str(self.flags / str(job_id))

    def submit(self, job: Job) -> None:
        if self.kind == "inline":
            self.queued.append(job)
        elif self.kind == "process":
            self.futures[self._pool.submit(_worker, self.flag(job.id), job)] = job
        else:
            self.futures[self._ray_submit(job)] = job

    def cancel(self, job_id: int) -> None:
        """Stop the job at its next epoch end."""
        Path(self.flag(job_id)).touch()

    def wait(self) -> list[Outcome]:
        """The jobs that finished since the last call (waits up to POLL_S for one; in this
        process, runs the next queued job), after passing on the events received."""
        if self.kind == "inline":
            if not self.queued:
                return []
            import torch

            job = self.queued.pop(0)
            before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                return [_flagged(self.flag(job.id), job, self.on_event)]
            finally:
                torch.set_num_threads(before)
        if self.kind == "process":
            done, _ = wait(list(self.futures), timeout=POLL_S, return_when=FIRST_COMPLETED)
            workers._drain(self._events, self.on_event)
            found = [workers._outcome(f, self.futures.pop(f), Stop()) for f in done]
            return [o for o in found if o is not None]
        return self._ray_wait()

    def _ray_submit(self, job: Job) -> Any:
        from dnntrick.comparison import ray_executor as rx

        ray = self._ray.ray
        key = (job.spec["data"]["dataset"], job.spec["data"].get("root"))
        if key not in self._data:
            self._data.update(rx._put_data(ray, [job]))
        task = ray.remote(max_retries=1)(rx._task)
        options = rx.task_resources(job.spec["device"], ray.cluster_resources().get("GPU", 0))
        driver = ray.get_runtime_context().get_node_id()
        work = functools.partial(_flagged, self.flag(job.id))
        return task.options(**options).remote(
            job, self._data[key], self._events, work, driver, None
        )

    def _ray_wait(self) -> list[Outcome]:
        from dnntrick.comparison import ray_executor as rx

        ray = self._ray.ray
        if not self.futures:
            return []
        done, _ = ray.wait(list(self.futures), num_returns=len(self.futures), timeout=POLL_S)
        rx._drain(self._events, self.on_event)
        found = [rx._outcome(ray, ref, self.futures.pop(ref), Stop()) for ref in done]
        return [o for o in found if o is not None]

    def close(self, kill: bool = False) -> None:
        """Shut the workers down (`kill`: at once, without waiting for their runs)."""
        self.queued.clear()
        if self.kind == "process" and self._pool is not None:
            if kill:
                for process in list(getattr(self._pool, "_processes", {}).values()):
                    process.kill()  # a second Ctrl-C: no waiting for an epoch end
            self._pool.shutdown(wait=not kill, cancel_futures=True)
            self._pool = None
        elif self.kind == "ray" and self._ray is not None:
            for ref in self.futures:
                self._ray.ray.cancel(ref, force=True)
            self._events.shutdown()
            self._ray.close()
            self._ray = None
        self.futures.clear()


def _worker(flag: str, job: Job) -> Outcome:
    return _flagged(flag, job, workers._events.put)  # the queue set by workers._init_worker
