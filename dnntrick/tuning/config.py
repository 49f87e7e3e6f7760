"""A study's settings (`TuneConfig`, stored in study.db) and their check before anything runs:
the spec read with its overrides, the search space parsed and validated against it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.errors import UsageError
from dnntrick.tuning.search import Dimension, check_space, override, parse_search

if TYPE_CHECKING:
    from dnntrick.spec.schema import Spec

PRUNERS = ("median", "halving", "none")
STUDY = "tune"
MAX_TRIALS = 10_000


@dataclass
class TuneConfig:
    """What a study runs; stored in study.db so that --resume needs only the folder."""

    spec: str
    overrides: list[str]
    search: list[str]
    trials: int
    seeds: list[int]
    pruner: str = "median"
    sampler_seed: int = 0
    jobs: int = 1
    threads: int = 1
    executor: str = "process"
    address: str | None = None
    default_first: bool = True  # trial 0 runs the spec's own values (when they lie in the space)


@dataclass
class Setup:
    """A checked config: the spec's raw data (overrides applied), the space and the spec."""

    config: TuneConfig
    data: dict[str, Any]
    space: list[Dimension]
    spec: Spec
    folder: Path = field(default_factory=Path)


def check_trials(trials: int, option: str = "--trials") -> None:
    if not 1 <= trials <= MAX_TRIALS:
        raise UsageError(f"{option} {trials}: give a number of trials from 1 to {MAX_TRIALS:,}")


def prepare(config: TuneConfig, option: str = "--search") -> Setup:
    """Read the spec, apply the overrides, parse and check the space: every usage error here,
    before a folder or a run exists."""
    from dnntrick.spec.config import apply_overrides, read_spec_file, validate

    check_trials(config.trials)
    if config.pruner not in PRUNERS:
        raise UsageError(f"--pruner {config.pruner!r}: choose one of {', '.join(PRUNERS)}")
    if config.executor not in ("process", "ray"):
        raise UsageError(f"executor {config.executor!r}: choose one of process, ray")
    if not config.seeds:
        raise UsageError("--seeds must be at least 1")
    space = parse_search(list(config.search), option)
    set_keys = {o.partition("=")[0] for o in config.overrides}
    for dim in space:
        if dim.key in set_keys:
            raise UsageError(f"{dim.key} is both set (KEY=VALUE) and searched ({option}); drop one")
    path = Path(config.spec)
    if not path.is_file():
        raise UsageError(f"{config.spec}: no such spec file")
    data = apply_overrides(read_spec_file(path), list(config.overrides))
    spec = validate(data, config.spec)
    check_space(data, space, config.spec, option)
    if config.executor == "ray":
        from dnntrick.comparison.ray_executor import import_ray

        import_ray()
    return Setup(config, data, space, spec)


def trial_spec(setup: Setup, params: dict[str, Any], seed: int, number: int) -> Spec:
    """The spec one run of trial `number` trains: the searched values, this seed, its name."""
    from dnntrick.spec.config import apply_overrides, validate

    name = f"{setup.spec.name}_t{number}_s{seed}"[:90]
    extra = [override(k, v) for k, v in params.items()] + [f"seed={seed}", f"name={name}"]
    return validate(apply_overrides(setup.data, extra), setup.config.spec)
