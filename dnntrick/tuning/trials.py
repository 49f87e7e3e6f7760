"""The trial loop: ask Optuna for a trial, run its seeds one after another as normal runs on the
pool, report each epoch's validation accuracy to the pruner, tell the study how it ended.

A trial's objective is the mean over its seeds of each run's best validation accuracy. How a
trial ends (user attribute `status`): ok → COMPLETE; pruned → PRUNED (its runs stopped at an
epoch end); diverged → FAIL with a `value` (the seeds' mean, a diverged run counting its last
validation accuracy, 0 before any); error → FAIL; cut (Ctrl-C/SIGTERM) → FAIL, its values
queued again so that --resume re-runs it. A data or usage error (exit 2) stops the study: it
would fail every trial the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dnntrick.comparison.executor import Event, Job, Outcome
from dnntrick.comparison.stats import mean_std
from dnntrick.comparison.stop import Stop, stop_on_signals
from dnntrick.errors import EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, DnntrickError, Interrupted

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from dnntrick.tuning.config import Setup


@dataclass
class Live:
    """A trial in flight."""

    trial: optuna.Trial
    params: dict[str, Any]
    seed_index: int = 0
    values: dict[int, float] = field(default_factory=dict)
    run_dirs: list[str] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0
    last_val: float | None = None
    epoch: str = ""
    started: float = 0.0
    pruned: bool = False


def cut_running(study: optuna.Study, trials: list[Any]) -> None:
    """Mark trials that were running when the study stopped as cut (FAIL) and queue their
    values again, so that the next --resume runs them first."""
    import optuna

    for trial in trials:
        study._storage.set_trial_user_attr(trial._trial_id, "status", "cut")
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"rerun_of": trial.number})


class TrialLoop:
    """Runs a study to its config's number of trials (cut trials do not count)."""

    def __init__(self, setup: Setup, study: optuna.Study, console: Console | None):
        from dnntrick.tuning.report import Progress

        self.setup, self.study, self.config = setup, study, setup.config
        self.progress = Progress(console, setup)
        self.live: dict[int, Live] = {}  # trial number → in flight
        self.stop = Stop()  # filled by SIGINT/SIGTERM (comparison/stop.py), read by the loop
        self.told = 0  # signals acted on so far
        self.pool: Any = None

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        from dnntrick.tuning.pool import Pool
        from dnntrick.tuning.report import write_reports

        folder = self.setup.folder
        self.pool = Pool(
            folder / ".stop",
            self.on_event,
            self.config.jobs,
            self.config.threads,
            self.config.executor,
            self.config.address,
        )
        self.progress.start(self.study, self.pool.where)
        try:
            with stop_on_signals(self.stop, "the running trials stop at their epoch end"):
                self._loop()
        except BaseException:
            self.pool.close(kill=True)
            raise
        finally:
            self.progress.stop()
        self.pool.close(kill=self.stop.urgent)  # a second signal: the workers go at once
        write_reports(self.study, self.setup)
        if self.stop.requested:
            self._stop()

    def _loop(self) -> None:
        while True:
            while (
                not self.stop.requested
                and self.pool.busy < self.pool.slots
                and self._counted() < (self.config.trials)
            ):
                self._start_trial()
            if not self.live:
                return
            for outcome in self.pool.wait():
                self._finished(outcome)
            if self.stop.count > self.told:  # a new signal: the running trials stop
                self.told = self.stop.count
                for live in self.live.values():
                    self.pool.cancel(self._job_id(live.trial.number, live.seed_index))
            if self.stop.urgent or (self.stop.requested and not self.pool.busy):
                return

    def _counted(self) -> int:
        """Trials toward the target: every one but the cut (their values run again)."""
        trials = self.study.trials
        return sum(
            t.user_attrs.get("status") != "cut" and t.state.name != "WAITING" for t in trials
        )

    def _start_trial(self) -> None:
        trial = self.study.ask()
        params = {d.key: d.suggest(trial) for d in self.setup.space}
        trial.set_user_attr("seeds", list(self.config.seeds))
        self.live[trial.number] = Live(trial, params)
        self._submit(self.live[trial.number])

    def _submit(self, live: Live) -> None:
        from dnntrick.tuning.search import override

        seed = self.config.seeds[live.seed_index]
        spec = self.setup_spec(live, seed)
        tuned = [override(k, v) for k, v in live.params.items()]
        job = Job(
            self._job_id(live.trial.number, live.seed_index),
            spec.model_dump(mode="json"),
            str(self.setup.folder / "runs"),
            self.config.spec,
            [*self.config.overrides, *tuned],
        )
        live.started, live.epoch = time.perf_counter(), ""
        self.progress.update(live)
        self.pool.submit(job)

    def setup_spec(self, live: Live, seed: int) -> Any:
        from dnntrick.tuning.config import trial_spec

        return trial_spec(self.setup, live.params, seed, live.trial.number)

    def _job_id(self, number: int, seed_index: int) -> int:
        return number * len(self.config.seeds) + seed_index

    def _owner(self, job_id: int) -> Live | None:
        return self.live.get(job_id // len(self.config.seeds))

    # ------------------------------------------------------------------ events and outcomes

    def on_event(self, event: Event) -> None:
        kind, job_id, payload = event
        live = self._owner(job_id)
        if live is None or kind != "epoch":
            return
        live.epoch = f"{payload['epoch']}/{payload['epochs']}"
        if payload.get("done"):
            live.epochs_run += 1
            live.last_val = float(payload["val_accuracy"])
            step = live.seed_index * int(payload["epochs"]) + int(payload["epoch"])
            live.trial.report(live.last_val, step)
            if not live.pruned and live.trial.should_prune():
                live.pruned = True
                self.pool.cancel(job_id)
        self.progress.update(live)

    def _finished(self, outcome: Outcome) -> None:
        live = self._owner(outcome.id)
        if live is None:
            return
        live.seconds += time.perf_counter() - live.started
        if self.stop.requested and outcome.status != "ok":  # stopped by Ctrl-C: cut, not pruned
            return
        seed = self.config.seeds[live.seed_index]
        live.run_dirs += self._run_dir(outcome, live, seed)
        if outcome.status == "ok" and outcome.summary:
            live.values[seed] = float(outcome.summary["best_val_accuracy"])
            live.trial.set_user_attr("seed_values", {str(s): v for s, v in live.values.items()})
            if live.pruned:  # its last epoch ended before the worker saw the flag
                self._tell(live, "pruned")
            elif live.seed_index + 1 == len(self.config.seeds):
                self._tell(live, "ok")
            elif live.trial.should_prune():  # the paired rule across seeds
                self._tell(live, "pruned")
            else:
                live.seed_index += 1
                self._submit(live)
        elif outcome.status == "cancelled":
            self._tell(live, "pruned")
        elif outcome.status == "diverged":
            live.values[seed] = live.last_val or 0.0
            self._tell(live, "diverged", outcome.error)
        elif outcome.exit_code in (EXIT_SIGINT, EXIT_SIGTERM):  # the run saw the signal first
            if not self.stop.requested:
                self.stop.request_from_exit(outcome.exit_code)
        elif outcome.exit_code == EXIT_USAGE:  # bad data or spec: every trial would fail so
            self._tell(live, "error", outcome.error)
            raise DnntrickError(outcome.error or "a run failed")
        else:
            self._tell(live, "error", outcome.error)

    def _run_dir(self, outcome: Outcome, live: Live, seed: int) -> list[str]:
        """The run's directory: from its summary, or (a stopped run has none) by its name."""
        if outcome.summary and outcome.summary.get("run_dir"):
            return [str(outcome.summary["run_dir"])]
        name = self.setup_spec(live, seed).name
        return [str(p) for p in sorted((self.setup.folder / "runs").glob(f"{name}-*"))[-1:]]

    def _tell(self, live: Live, status: str, error: str | None = None) -> None:
        import optuna

        from dnntrick.tuning.report import write_reports

        trial, states = live.trial, optuna.trial.TrialState
        mean, std = mean_std(list(live.values.values()))
        attrs = {
            "status": status,
            "seed_values": {str(s): v for s, v in live.values.items()},
            "seeds_run": self.config.seeds[: live.seed_index + 1],
            "value_std": std,
            "run_dirs": live.run_dirs,
            "epochs_run": live.epochs_run,
            "seconds": round(live.seconds, 3),
        }
        if error:
            attrs["error"] = error
        if status == "diverged":
            attrs["value"] = mean
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if status == "ok":
            self.study.tell(trial, mean)
        else:
            self.study.tell(trial, state=states.PRUNED if status == "pruned" else states.FAIL)
        del self.live[trial.number]
        self.progress.finished(self.study.trials[trial.number])
        write_reports(self.study, self.setup)

    def _stop(self) -> None:
        """Cut what was running, write the files, raise Interrupted with how to continue."""
        from dnntrick.tuning.report import write_reports

        cut_running(self.study, [live.trial for live in self.live.values()])
        self.live.clear()
        write_reports(self.study, self.setup)
        done = self._counted()
        raise Interrupted(
            f"interrupted ({self.stop.name or 'SIGINT'}); {done} finished trials kept in "
            f"{self.setup.folder}; continue with: dnntrick tune --resume {self.setup.folder}",
            self.stop.exit_code or EXIT_SIGINT,
        )
