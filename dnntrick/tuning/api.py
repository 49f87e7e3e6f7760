"""`dnntrick.tune(...)` and the CLI's entry: the options as they are given → a TuneConfig."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from dnntrick.tuning.study import TuneResult

DEFAULT_TRIALS = 20


def run_threads(jobs: int) -> int:
    """torch threads per run: one (an MLP step gains little from more, and on a busy machine
    they cost a lot: comparison/executor.py's THREADS_PER_CPU_RUN), more only for spare cores."""
    from dnntrick.comparison.executor import THREADS_PER_CPU_RUN, cpu_count

    return max(THREADS_PER_CPU_RUN, cpu_count() // jobs) if jobs > 1 else THREADS_PER_CPU_RUN


def tune_spec(
    spec: str | Path,
    overrides: list[str] | None = None,
    search: list[str] | None = None,
    trials: int | None = None,
    seeds: int = 1,
    jobs: int | None = None,
    pruner: str = "median",
    sampler_seed: int | None = None,
    executor: str = "process",
    out: Path | str = "runs",
    console: Console | None = None,
    seed_offset: int = 0,
) -> TuneResult:
    """Tune `spec` over `search` (KEY=DIST items) for `trials` trials of `seeds` runs each (seeds
    spec.seed + seed_offset + i). Usage errors are raised before anything is created."""
    from dnntrick.spec.config import apply_overrides, read_spec_file
    from dnntrick.tuning.config import TuneConfig, check_trials
    from dnntrick.tuning.study import run_tune

    trials = DEFAULT_TRIALS if trials is None else trials
    check_trials(trials)
    if seeds < 1:
        raise UsageError(f"--seeds {seeds}: give at least 1")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: give at least 1")
    if not Path(spec).is_file():
        raise UsageError(f"{spec}: no such spec file")
    data = apply_overrides(read_spec_file(Path(spec)), list(overrides or []))
    seed0 = data.get("seed", 42)
    seed0 = (seed0 if isinstance(seed0, int) and seed0 >= 0 else 42) + seed_offset
    jobs = jobs or 1
    config = TuneConfig(
        spec=str(spec),
        overrides=list(overrides or []),
        search=list(search or []),
        trials=trials,
        seeds=[seed0 + i for i in range(seeds)],
        pruner=pruner,
        sampler_seed=seed0 if sampler_seed is None else sampler_seed,
        jobs=jobs,
        threads=run_threads(jobs),
        executor=executor,
    )
    return run_tune(config, out, console)


def tune(
    spec: str | Path,
    search: list[str] | dict[str, str],
    trials: int = DEFAULT_TRIALS,
    seeds: int = 1,
    overrides: list[str] | None = None,
    jobs: int | None = None,
    pruner: str = "median",
    out: Path | str = "runs",
    verbose: bool = False,
    **kwargs: Any,
) -> TuneResult:
    """The Python API: `dnntrick.tune("experiments/selu.yaml", {"train.optimizer.lr":
    "loguniform:1e-3:1e-1"}, trials=16, seeds=2)` → a TuneResult (`.best`, `.trials`,
    `.plot()`, `.study`). Keyword overrides as in `dnntrick.train` (`**{"train.epochs": 2}`)."""
    from rich.console import Console

    from dnntrick.tuning.search import override

    items = [f"{k}={v}" for k, v in search.items()] if isinstance(search, dict) else list(search)
    extra = [override(k, v) for k, v in kwargs.items()]
    console = Console(stderr=True, highlight=False, quiet=not verbose)
    return tune_spec(
        spec,
        [*(overrides or []), *extra],
        items,
        trials,
        seeds,
        jobs,
        pruner,
        out=out,
        console=console,
    )
