"""A tuning study: the Optuna study in `DIR/study.db` (SQLite), its seeded TPE sampler and
pruner, the entry points `run_tune` / `resume_tune` and their result, `TuneResult`.

The study's settings live in the study itself (a user attribute), so `--resume DIR` needs
nothing but the folder. The trial loop is in trials.py, what it writes in report.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.errors import UsageError
from dnntrick.tuning.config import STUDY, Setup, TuneConfig, check_trials, prepare
from dnntrick.tuning.search import spec_values

MEDIAN_STARTUP = 3  # finished trials before the median pruner stops any (the first few set it)

if TYPE_CHECKING:
    import optuna
    from rich.console import Console


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Per-epoch pruning (median or successive halving) plus the paired rule across seeds."""
    import optuna

    from dnntrick.tuning.pruning import SeedPruner

    inner: optuna.pruners.BasePruner
    if name == "median":
        inner = optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=0)
    elif name == "halving":
        inner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    else:
        return optuna.pruners.NopPruner()
    return SeedPruner(inner)


def make_sampler(config: TuneConfig, done: int) -> optuna.samplers.BaseSampler:
    """TPE, seeded: the same seed (and --jobs 1) proposes the same trials. A resumed study
    reseeds with seed + trials so far: the same seed again would re-propose the first points."""
    import optuna

    startup = max(1, min(10, config.trials // 2))  # random points first, then TPE's model
    return optuna.samplers.TPESampler(
        seed=config.sampler_seed + done, n_startup_trials=startup, constant_liar=config.jobs > 1
    )


def storage_url(folder: Path) -> str:
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def open_study(folder: Path, config: TuneConfig, create: bool) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our table says what happens
    storage = optuna.storages.RDBStorage(storage_url(folder))
    if create:
        study = optuna.create_study(
            study_name=STUDY,
            storage=storage,
            direction="maximize",
            sampler=make_sampler(config, 0),
            pruner=make_pruner(config.pruner),
        )
        study.set_user_attr("config", asdict(config))
        return study
    done = len(optuna.load_study(study_name=STUDY, storage=storage).trials)
    return optuna.load_study(
        study_name=STUDY,
        storage=storage,
        sampler=make_sampler(config, done),
        pruner=make_pruner(config.pruner),
    )


def run_tune(
    config: TuneConfig, out: Path | str = "runs", console: Console | None = None
) -> TuneResult:
    """Check everything, create `out`/tune-<time>/ and run the study to config.trials trials."""
    setup = prepare(config)
    from dnntrick.training.rundir import make_run_dir

    setup.folder = make_run_dir(out, "tune")
    study = open_study(setup.folder, config, create=True)
    if config.default_first and (values := spec_values(setup.data, setup.space)) is not None:
        study.enqueue_trial(values, user_attrs={"default": True})
    return _optimize(setup, study, console)


def resume_tune(
    folder: Path | str, trials: int | None = None, console: Console | None = None
) -> TuneResult:
    """Continue the study in `folder` to `trials` trials (default: the number it was started
    with); finished trials stay as they are, cut ones run again."""
    import optuna

    folder = Path(folder)
    if not (folder / "study.db").is_file():
        raise UsageError(f"--resume {folder}: no study.db in it (give a tune-<time> folder)")
    try:
        stored = optuna.load_study(study_name=STUDY, storage=storage_url(folder))
    except KeyError:
        raise UsageError(f"--resume {folder}: study.db holds no dnntrick study") from None
    config = TuneConfig(**stored.user_attrs["config"])
    if trials is not None:
        check_trials(trials)
        config.trials = trials
    setup = prepare(config)
    setup.folder = folder
    study = open_study(folder, config, create=False)
    study.set_user_attr("config", asdict(config))
    from dnntrick.tuning.trials import cut_running

    cut_running(study, [t for t in study.trials if t.state.name == "RUNNING"])  # a hard kill
    return _optimize(setup, study, console)


def _optimize(setup: Setup, study: optuna.Study, console: Console | None) -> TuneResult:
    from dnntrick.tuning.trials import TrialLoop

    started = time.perf_counter()
    loop = TrialLoop(setup, study, console)
    loop.run()
    return TuneResult(setup, study, time.perf_counter() - started)


class TuneResult:
    """A finished (or resumed) study: `.best`, `.trials` (`.trials.to_pandas()`), `.plot()`,
    `.study` (the Optuna study), `.folder`."""

    def __init__(self, setup: Setup, study: optuna.Study, wall_seconds: float = math.nan):
        self.setup, self.study, self.folder = setup, study, setup.folder
        self.wall_seconds = wall_seconds

    @property
    def document(self) -> dict[str, Any]:
        """tune.json's content."""
        import json

        return dict(json.loads((self.folder / "tune.json").read_text()))

    @property
    def best(self) -> dict[str, Any] | None:
        """{'number', 'values', 'value', 'value_std', ...} of the best trial, None if none
        finished."""
        best = self.document.get("best")
        return dict(best) if best else None

    @property
    def trials(self) -> Any:
        """One row per trial as trials.csv has it (a list of dicts with `.to_pandas()`)."""
        from dnntrick.tuning.report import Trials, trial_rows

        return Trials(trial_rows(self.study, self.setup.space))

    def plot(self, path: Path | str | None = None) -> Any:
        """The objective by trial and by each searched key: a matplotlib Figure (saved to
        `path` when given)."""
        from dnntrick.tuning.report import plot_study

        return plot_study(self.trials, self.setup.space, Path(path) if path else None)

    def __repr__(self) -> str:
        best = self.best
        what = f"best {best['value']:.4f} at {best['values']}" if best else "no finished trial"
        return f"<TuneResult {self.folder}: {len(self.study.trials)} trials, {what}>"
