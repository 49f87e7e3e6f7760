"""`dnntrick compare SPEC... --tune KEY=DIST --trials N`: each variant gets its own study first,
then the usual paired comparison runs every variant at its best values.

The studies run on tuning seeds (seed0 + TUNE_SEED_OFFSET + i) disjoint from the comparison's
(seed0 + i), so the verdict is judged on seeds the selection never saw. run_comparison calls
`check` before anything is created and `run` once the comparison's folder exists; what `run`
returns goes into the comparison's plan (so `compare --resume` keeps it) and its comparison.json
("tuned": {KEY: value} per variant).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.tuning.search import override, parse_search, yaml_text

if TYPE_CHECKING:
    from rich.console import Console

    from dnntrick.comparison.variants import Variant
    from dnntrick.tuning.config import TuneConfig

TUNE_SEED_OFFSET = 1000  # tuning seeds start here above the comparison's first seed


class TuneVariants:
    """The --tune options of one compare; `tuned[label]` holds each variant's best values."""

    def __init__(self, search: list[str], trials: int, seeds: int = 1, pruner: str = "median"):
        from dnntrick.tuning.config import check_trials

        parse_search(list(search), "--tune")  # a bad DIST: one line before anything
        check_trials(trials)
        self.search, self.trials, self.seeds, self.pruner = list(search), trials, seeds, pruner
        self.tuned: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, str] = {}

    def _config(self, variant: Variant, jobs: int | None, executor: str) -> TuneConfig:
        from dnntrick.tuning.api import run_threads
        from dnntrick.tuning.config import TuneConfig

        seed0 = min(variant.specs) + TUNE_SEED_OFFSET
        jobs = jobs or 1
        return TuneConfig(
            spec=variant.source,
            overrides=list(variant.overrides),
            search=self.search,
            trials=self.trials,
            seeds=[seed0 + i for i in range(self.seeds)],
            pruner=self.pruner,
            sampler_seed=seed0,
            jobs=jobs,
            threads=run_threads(jobs),
            executor=executor,
        )

    def check(self, variants: list[Variant]) -> None:
        """Every spec variant accepts the search space (UsageError otherwise)."""
        from dnntrick.tuning.config import prepare

        for variant in variants:
            if variant.specs:
                prepare(self._config(variant, None, "process"), "--tune")

    def run(
        self,
        variants: list[Variant],
        folder: Path,
        console: Console,
        jobs: int | None = None,
        executor: str = "process",
    ) -> dict[str, Any]:
        """Tune each spec variant, then give its specs the best values. The record: "tuned"
        (label → values), "notes" (the lines to show), the search, trials, seeds, studies."""
        from dnntrick.comparison.variants import slug, spec_params
        from dnntrick.spec.config import apply_overrides, validate
        from dnntrick.tuning.config import prepare
        from dnntrick.tuning.study import run_tune

        notes = []
        for variant in variants:
            if not variant.specs:
                continue
            config = self._config(variant, jobs, executor)
            prepare(config, "--tune")
            result = run_tune(config, folder / "tuning" / slug(variant.label), console)
            self.folders[variant.label] = str(result.folder)
            best = result.best
            if best is None:
                variant.error = f"tuning found no finished trial (see {result.folder}/trials.csv)"
                variant.exit_code, variant.specs, variant.runs = 1, {}, []
                continue
            tuned = dict(best["values"])
            extra = [override(k, v) for k, v in tuned.items()]
            for seed, spec in variant.specs.items():
                variant.specs[seed] = validate(
                    apply_overrides(spec.model_dump(mode="json"), extra), variant.source
                )
            variant.overrides = [*variant.overrides, *extra]
            variant.params = spec_params(variant.specs[min(variant.specs)])
            self.tuned[variant.label] = tuned
            values = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={yaml_text(v)}"
                for k, v in tuned.items()
            )
            notes.append(
                f"tuned {variant.label}: {values} (trial {best['number']} of {self.trials}, "
                f"mean best val acc {best['value']:.4f} on tuning seeds "
                f"{', '.join(map(str, config.seeds))})"
            )
        first = min((min(v.specs) for v in variants if v.specs), default=0)
        return {
            "tuned": self.tuned,
            "notes": notes,
            "search": self.search,
            "trials": self.trials,
            "seeds": [first + TUNE_SEED_OFFSET + i for i in range(self.seeds)],
            "studies": self.folders,
        }
