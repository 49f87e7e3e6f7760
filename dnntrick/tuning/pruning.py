"""Pruning across seeds: a trial's runs go one seed after another, and after each finished seed
its values are paired with the best finished trial's on the same seeds (the paired t interval
compare uses); a trial whose whole interval lies below is stopped before its next seed.

Within a run, the inner Optuna pruner (median or successive halving) sees each epoch's
validation accuracy at step seed_index × epochs + epoch: the same step is the same seed and
epoch in every trial, so it compares like with like.
"""

from __future__ import annotations

from typing import Any

import optuna

from dnntrick.comparison.stats import paired_difference


def seed_values(trial: optuna.trial.FrozenTrial) -> dict[int, float]:
    """seed → objective of each finished run of the trial."""
    return {int(s): float(v) for s, v in trial.user_attrs.get("seed_values", {}).items()}


class SeedPruner(optuna.pruners.BasePruner):
    """`inner` per epoch, then the paired rule across seeds."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.inner.prune(study, trial):
            return True
        return worse_than_best(study, trial)


def worse_than_best(study: Any, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial's finished seeds (two or more) are worse than the best finished
    trial's on the same seeds: the 95% interval of the paired difference lies below 0."""
    mine = seed_values(trial)
    if len(mine) < 2:
        return False
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return False
    best = max(complete, key=lambda t: t.value)
    return paired_difference(mine, seed_values(best)).verdict == "worse"
