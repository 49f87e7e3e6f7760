"""`dnntrick compare`'s model: inputs (specs, run directories, overrides, --vary grids) become
variants; each spec variant becomes one job per seed; finished runs are summarized per variant
against a baseline.

Seeds are shared: run i of every spec variant uses seed0 + i, where seed0 is the first spec's
seed, so the same seed means the same data split and data order in every variant (the runner
draws the data order from its own generator seeded with spec.seed) and differences are paired.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dnntrick.comparison.stats import Difference, mean_std, paired_difference
from dnntrick.errors import DnntrickError, SpecError, UsageError
from dnntrick.folders import (
    display,
    holds_a_run,
)
from dnntrick.spec.schema import Spec, suggest

KEY_PATTERN = r"[A-Za-z_]\w*(\.[A-Za-z_0-9]\w*)*"
HIDDEN_KEYS = ("name", "seed")  # never shown as "what differs": every variant has its own


@dataclass
class RunRecord:
    seed: int
    status: str = "queued"  # queued | running | ok | diverged | error
    summary: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0
    run_dir: str | None = None


@dataclass
class Variant:
    label: str  # what the table shows: spec name and/or the --vary values, e.g. "lr=0.1"
    source: str  # the spec file, or the run directory (or folder of runs) it was read from
    overrides: list[str] = field(default_factory=list)  # global overrides + this grid point
    params: dict[str, Any] = field(default_factory=dict)  # flattened spec, no name/seed
    specs: dict[int, Spec] = field(default_factory=dict)  # seed -> spec to run (empty: read)
    runs: list[RunRecord] = field(default_factory=list)
    error: str | None = None  # set for a spec that does not load: nothing is run
    exit_code: int = 0

    @property
    def ok_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == "ok" and r.summary is not None]

    @property
    def status(self) -> str:
        """ok, bad spec, or the failures, e.g. 'diverged 1/3'."""
        if self.error is not None:
            return "bad spec"
        failed = [r for r in self.runs if r.status not in ("ok", "queued", "running")]
        if not failed:
            return "ok"
        kinds = sorted({r.status for r in failed})
        return f"{'/'.join(kinds)} {len(failed)}/{len(self.runs)}"

    @property
    def failed(self) -> bool:
        return self.status != "ok"


# ---------------------------------------------------------------- inputs → variants


def split_inputs(args: list[str]) -> tuple[list[str], list[str]]:
    """(paths, overrides): an argument is an override when it reads KEY=VALUE and is no path."""
    paths: list[str] = []
    overrides: list[str] = []
    for arg in args:
        key = arg.partition("=")[0]
        is_override = "=" in arg and re.fullmatch(KEY_PATTERN, key) and not Path(arg).exists()
        (overrides if is_override else paths).append(arg)
    return paths, overrides


def split_values(text: str) -> list[str]:
    """Split 'a,b,[1,2],{x: 1, y: 2}' on the commas outside brackets and quotes."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def parse_vary(items: list[str]) -> list[tuple[str, list[str]]]:
    """--vary KEY=V1,V2,... → [(key, [v1, v2, ...])], each key once."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, text = item.partition("=")
        values = split_values(text) if sep else []
        if not re.fullmatch(KEY_PATTERN, key) or not values or "" in values:
            raise UsageError(
                f"--vary {item!r} is not KEY=V1,V2,... with a dotted key, "
                "e.g. --vary model.activation=relu,elu"
            )
        if key in (k for k, _ in grid):
            raise UsageError(f"--vary {key} is given twice; list all its values in one --vary")
        grid.append((key, values))
    return grid


def short_key(key: str, keys: list[str]) -> str:
    """The last informative part of a dotted key ('model.activation.name' → 'activation'),
    or the whole key when that part is ambiguous among `keys`."""

    def last(k: str) -> str:
        parts = k.split(".")
        return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]

    return last(key) if [last(k) for k in keys].count(last(key)) == 1 else key


def slug(label: str) -> str:
    """A run name (spec.name pattern) from a label: 'selu lr=0.1' → 'selu_lr-0.1'."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace("=", "-")).strip("._-")
    return (text or "variant")[:90]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}; lists stay values."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in flat.items()}


def spec_params(spec: Spec) -> dict[str, Any]:
    """The resolved spec as the run directory's spec.yaml holds it, flattened, no name/seed."""
    from dnntrick.spec.config import dump_spec

    flat = flatten(yaml.safe_load(dump_spec(spec)))
    return {k: v for k, v in flat.items() if k not in HIDDEN_KEYS}


MAX_RUNS = 10_000  # runs one compare may start (a grid of 100 × 100 at 1 seed)


def _seed0(data: dict[str, Any]) -> int | None:
    seed = data.get("seed", Spec.model_fields["seed"].default)
    return seed if isinstance(seed, int) and seed >= 0 else None


def expand_specs(
    paths: list[str], overrides: list[str], grid: list[tuple[str, list[str]]], seeds: int
) -> list[Variant]:
    """One variant per spec file × grid point, each with `seeds` specs (shared seed list)."""
    from dnntrick.spec.config import apply_overrides, read_spec_file, validate

    runs = len(paths) * math.prod(len(vs) for _, vs in grid) * seeds
    if runs > MAX_RUNS:  # before a single spec is built: 10^9 seeds would never finish
        sizes = " × ".join(
            [f"{len(paths)} spec(s)", *(f"{len(vs)} {k}" for k, vs in grid), f"{seeds} seeds"]
        )
        raise UsageError(
            f"compare: {sizes} is {runs:,} runs, more than {MAX_RUNS:,}; use fewer --seeds or "
            "--vary values"
        )

    raw: list[tuple[str, dict[str, Any] | DnntrickError]] = []
    for path in paths:
        try:
            raw.append((path, apply_overrides(read_spec_file(Path(path)), overrides)))
        except SpecError as err:
            raw.append((path, err))
    names = [
        str(d.get("name") or Path(p).stem) if isinstance(d, dict) else Path(p).stem for p, d in raw
    ]
    found = [seed for _, d in raw if isinstance(d, dict) and (seed := _seed0(d)) is not None]
    seed0 = found[0] if found else Spec.model_fields["seed"].default
    seed_list = [seed0 + i for i in range(seeds)]
    varied = [(k, vs) for k, vs in grid if len(vs) > 1]
    keys = [k for k, _ in varied]
    show_name = len(set(names)) > 1 or not varied
    variants: list[Variant] = []
    for (path, data), name in zip(raw, names, strict=True):
        for point in itertools.product(*(vs for _, vs in grid)) if grid else [()]:
            point_overrides = [f"{k}={v}" for (k, _), v in zip(grid, point, strict=True)]
            parts = [name] if show_name else []
            parts += [
                f"{short_key(k, keys)}={v}"
                for (k, vs), v in zip(grid, point, strict=True)
                if len(vs) > 1
            ]
            variant = Variant(" ".join(parts), path, overrides + point_overrides)
            if isinstance(data, DnntrickError):
                variant.error, variant.exit_code = str(data), data.exit_code
            else:
                try:
                    point_data = apply_overrides(data, point_overrides)
                    for seed in seed_list:
                        point_data = {**point_data, "seed": seed, "name": slug(variant.label)}
                        variant.specs[seed] = validate(point_data, path)
                    variant.params = spec_params(variant.specs[seed_list[0]])
                except DnntrickError as err:
                    variant.error, variant.exit_code = str(err), err.exit_code
                    variant.specs = {}
            variant.runs = [RunRecord(seed) for seed in variant.specs]
            variants.append(variant)
    return variants


def dedupe_labels(variants: list[Variant]) -> None:
    """Make labels unique ('elu', 'elu #2') so the table and --baseline can name each."""
    seen: dict[str, int] = {}
    for variant in variants:
        seen[variant.label] = seen.get(variant.label, 0) + 1
        if seen[variant.label] > 1:
            variant.label = f"{variant.label} #{seen[variant.label]}"
            for spec_seed, spec in variant.specs.items():
                variant.specs[spec_seed] = spec.model_copy(update={"name": slug(variant.label)})


def pick_baseline(variants: list[Variant], name: str | None) -> Variant:
    """The variant named `name` (label or run name), else the first one: the inputs' order as
    given; in a folder of runs, by run-directory name; in a comparison directory, its own
    order; in a --vary grid, its first point. `baseline_reason` says which rule chose it."""
    if name is None:
        return variants[0]
    for variant in variants:
        if name in (variant.label, slug(variant.label)):
            return variant
    labels = [v.label for v in variants]
    raise UsageError(
        f"--baseline {name!r} names no variant{suggest(name, labels)} "
        f"(variants: {', '.join(labels)})"
    )


def baseline_reason(variants: list[Variant], baseline: Variant, name: str | None) -> str:
    """Why `baseline` is the baseline (pick_baseline's rule), as compare prints it after
    'baseline: LABEL' and comparison.json keeps it."""
    if name is not None:
        return f"--baseline {name}"
    source, other = baseline.source, "--baseline LABEL picks another"
    first = f"the first input, {display(source)}"
    siblings = sum(v.source == source for v in variants)
    folder = Path(source).is_dir() and not holds_a_run(Path(source))  # runs/, a comparison
    if siblings == 1:
        return f"{first}{', holds 1 variant' if folder else ''}; {other}"
    if not folder:
        rule = "the first point of the --vary grid"
    elif (Path(source) / "comparison.json").is_file():
        rule = "the comparison's first variant"
    else:
        rule = "the variant of the first run directory by name"
    return f"{first}, holds {siblings} variants: {rule}; {other}"


# ---------------------------------------------------------------- results → numbers


def epochs_to(history: list[dict[str, Any]], target: float) -> int | None:
    """The first epoch whose validation accuracy reaches `target`, or None."""
    return next((r["epoch"] for r in history if (r.get("val_accuracy") or 0) >= target), None)


def what_differs(variant: Variant, baseline: Variant) -> dict[str, Any]:
    """Spec keys whose value differs from the baseline's, with this variant's value."""
    if variant is baseline or variant.error or baseline.error:
        return {}
    mine, theirs = variant.params, baseline.params
    differs = {}
    for key in sorted(set(mine) | set(theirs)):
        choice = key.rsplit(".", 1)[0] + ".name"  # an argument of a choice (activation alpha…)
        if key not in mine and choice in mine and mine[choice] != theirs.get(choice):
            continue  # …that this variant's different choice does not take
        if mine.get(key) != theirs.get(key):
            differs[key] = mine.get(key)
    return differs


@dataclass
class Stats:
    """One variant's numbers over its successful seeds (means unless said)."""

    n: int
    test_accuracy: tuple[float, float]  # (mean, std)
    best_val_accuracy: float
    best_epoch: float
    epochs_run: float
    epochs_to_target: float | None  # mean over the seeds that reached it
    reached: int  # seeds that reached the target
    train_seconds: float
    samples_per_second: float
    parameters: int | None
    difference: Difference | None  # against the baseline; None for the baseline itself


def summarize(variant: Variant, baseline: Variant, target: float | None) -> Stats:
    runs = variant.ok_runs
    summaries = [r.summary for r in runs if r.summary is not None]

    def mean_of(key: str) -> float:
        return mean_std([float(s[key]) for s in summaries])[0]

    reached = [e for r in runs if target is not None and (e := epochs_to(r.history, target))]
    difference = None
    if variant is not baseline:
        difference = paired_difference(accuracies(variant), accuracies(baseline))
    return Stats(
        n=len(runs),
        test_accuracy=mean_std([float(s["test_accuracy"]) for s in summaries]),
        best_val_accuracy=mean_of("best_val_accuracy"),
        best_epoch=mean_of("best_epoch"),
        epochs_run=mean_of("epochs_run"),
        epochs_to_target=mean_std([float(e) for e in reached])[0] if reached else None,
        reached=len(reached),
        train_seconds=mean_of("train_seconds"),
        samples_per_second=mean_of("samples_per_second"),
        parameters=summaries[0]["parameters"] if summaries else None,
        difference=difference,
    )


def accuracies(variant: Variant) -> dict[int, float]:
    """seed → test accuracy of the successful runs (the pairs for the paired difference)."""
    return {r.seed: float(r.summary["test_accuracy"]) for r in variant.ok_runs if r.summary}


def exit_code(variants: list[Variant]) -> int:
    """0 when every variant ran; 2 when all failures are bad input (spec, data, usage); else 1."""
    codes = [v.exit_code for v in variants if v.error] + [
        r.exit_code for v in variants for r in v.runs if r.status in ("diverged", "error")
    ]
    if not codes:
        return 0
    return 2 if all(c == 2 for c in codes) else 1
