"""Run directories read back as variants (`compare RUN_DIR…`, `compare runs/`): runs of the same
name and spec but seed are one variant; a folder that holds no result to compare is skipped
with one line saying why (dnntrick/folders.py reads and checks each folder once).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dnntrick.comparison.variants import HIDDEN_KEYS, RunRecord, Variant, flatten, spec_params
from dnntrick.errors import SpecError, UsageError
from dnntrick.folders import (
    display,
    holds_a_run,
    read_folder,
    read_json,
    sub_folders,
    unfinished,
    utf8_name,
)
from dnntrick.spec.schema import Spec


class Skipped(Exception):
    """A folder that compare leaves out; the message says why, on one line."""


def read_run(folder: Path) -> tuple[RunRecord, str, dict[str, Any]]:
    """(record, run name, params) of a run directory that holds a result: a finished run, or
    one a diverging loss stopped. Raises Skipped for any other folder (damaged, unfinished, not
    a training run), saying why."""
    found = read_folder(folder)
    if found.problem is not None:
        raise Skipped(found.problem)
    if found.summary is None and found.status != "diverged":
        raise Skipped(unfinished(found))
    if found.summary is not None and math.isnan(found.summary["test_accuracy"]):
        raise Skipped("summary.json: test_accuracy is NaN (no test split): nothing to compare")
    name, seed, params = _identity(found.spec, folder)
    record = RunRecord(seed, "ok", found.summary, found.history, run_dir=str(folder))
    if found.summary is None or not _finite(record):
        record.status, record.exit_code = "diverged", 3
        record.error = "the loss became NaN or infinite"
    return record, name, params


def _identity(data: dict[str, Any], folder: Path) -> tuple[str, int, dict[str, Any]]:
    """(name, seed, params) of a run's spec.yaml mapping."""
    from dnntrick.spec.config import validate

    try:
        spec = validate(dict(data), str(folder / "spec.yaml"))
        return spec.name, spec.seed, spec_params(spec)
    except SpecError:  # a spec from another dnntrick version: compare what it says
        flat = flatten(data)
    seed = flat.get("seed", Spec.model_fields["seed"].default)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise Skipped(f"spec.yaml: seed is {json.dumps(seed, default=str)[:40]}, not a seed")
    params = {k: v for k, v in flat.items() if k not in HIDDEN_KEYS}
    return str(flat.get("name") or folder.name), seed, params


def _finite(record: RunRecord) -> bool:
    losses = [r.get("train_loss") for r in record.history]
    losses.append((record.summary or {}).get("test_loss"))
    return all(isinstance(v, int | float) and math.isfinite(v) for v in losses)


def run_folders(path: Path) -> tuple[list[Path], bool]:
    """(the folders to read as runs, whether `path` holds them): `path` itself when it is a run
    directory (or damaged, or no folder: reading it says so), else its sub-folders (a
    comparison directory, a runs/ folder)."""
    if not utf8_name(path) or not path.is_dir() or holds_a_run(path):
        return [path], False
    try:
        folders = sub_folders(path)
    except UsageError:  # unlistable: reading it as one folder says why
        return [path], False
    return (folders, True) if folders else ([path], False)  # none: it says what it is


def read_run_dirs(paths: list[str]) -> tuple[list[Variant], list[tuple[str, str]]]:
    """Variants from run directories: runs with the same name and spec (but seed) are one
    variant with several seeds; a comparison directory keeps its labels and order. And the
    folders left out, as (folder, why): damaged, unfinished, not a training run, a seed read
    twice, or a folder with no run in it."""
    groups: dict[str, Variant] = {}
    skipped: list[tuple[str, str]] = []
    for path in paths:
        folders, holds = run_folders(Path(path))
        labels = _labels(Path(path))
        folders.sort(key=lambda f: labels.get(f.name, (len(labels), ""))[0])
        before = len(skipped)
        for folder in folders:
            try:
                record, name, params = read_run(folder)
            except Skipped as err:
                skipped.append((display(folder), str(err)))
                continue
            label = labels.get(folder.name, (0, name))[1]
            key = label + json.dumps(params, sort_keys=True, default=str)
            variant = groups.setdefault(key, Variant(label, path, params=params))
            twin = next((r.run_dir for r in variant.runs if r.seed == record.seed), None)
            if twin is not None:  # a copy or a rerun: one seed counts once in the statistics
                why = f"seed {record.seed} of {label} again ({display(twin)} is compared)"
                skipped.append((display(folder), why))
                continue
            variant.runs.append(record)
        if holds and len(skipped) - before == len(folders):
            skipped.append((display(path), "no run directory to compare in it (all skipped)"))
    return [v for v in groups.values() if v.runs], skipped


def _labels(folder: Path) -> dict[str, tuple[int, str]]:
    """run-dir name → (variant index, label), from the folder's comparison.json if it has one
    (a damaged one gives none: the runs are named by their specs)."""
    document = read_json(folder / "comparison.json") or {}
    variants = document.get("variants")
    labels = {}
    for i, variant in enumerate(variants if isinstance(variants, list) else []):
        runs = variant.get("runs") if isinstance(variant, dict) else None
        if not isinstance(runs, list) or not isinstance(variant.get("label"), str):
            continue
        for run in runs:
            if isinstance(run, dict) and isinstance(run.get("run_dir"), str):
                labels[Path(run["run_dir"]).name] = (i, variant["label"])
    return labels
