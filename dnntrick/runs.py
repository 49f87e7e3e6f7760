"""Run directories read back for `dnntrick runs` and `dnntrick show`: what each run is, how far it
got, how its spec differs from the defaults, its learning curves. Each folder is read and checked
by `folders.read_folder`: a damaged or foreign one is skipped (runs) or refused (show) with one
line that says why. Reads files only: no torch.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dnntrick.errors import UsageError
from dnntrick.folders import Folder, display, foreign, read_folder, sub_folders, utf8_name

STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")  # rundir.make_run_dir's <name>-<time>[-k]


@dataclass
class RunInfo:
    """One run directory at a glance (a row of `dnntrick runs`)."""

    run_dir: str
    name: str
    started: str  # local time, YYYY-mm-dd HH:MM:SS
    status: str  # finished | interrupted | diverged | failed or running
    test_accuracy: float | None
    epochs: int  # rows in metrics.jsonl
    planned_epochs: int | None  # the spec's train.epochs
    device: str | None
    dataset: str | None
    sort_key: float = field(default=0.0, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["sort_key"]
        return out


def started(run_dir: Path) -> tuple[str, float]:
    """(start time as text, seconds since the epoch): the folder's stamp, else spec.yaml's mtime."""
    match = STAMP.search(run_dir.name)
    if match:
        try:
            parsed = time.strptime(match.group(1), "%Y%m%d-%H%M%S")
            return time.strftime("%Y-%m-%d %H:%M:%S", parsed), time.mktime(parsed)
        except ValueError:
            pass
    mtime = (run_dir / "spec.yaml").stat().st_mtime
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime)), mtime


def _text(*values: Any) -> str | None:
    """The first value that is a non-empty string (a spec of another version may hold others)."""
    return next((v for v in values if isinstance(v, str) and v), None)


def run_info(found: Folder) -> RunInfo:
    """The RunInfo of a run directory that `read_folder` found readable."""
    spec, summary = found.spec, found.summary or {}
    when, key = started(found.path)
    train, data = (v if isinstance(v := spec.get(k), dict) else {} for k in ("train", "data"))
    accuracy = summary.get("test_accuracy")
    planned = train.get("epochs")
    return RunInfo(
        run_dir=str(found.path),
        name=_text(summary.get("name"), spec.get("name")) or STAMP.sub("", found.path.name),
        started=when,
        status=found.status,
        test_accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        epochs=len(found.history),
        planned_epochs=planned
        if isinstance(planned, int) and not isinstance(planned, bool)
        else None,
        device=_text(summary.get("device"), spec.get("device")),
        dataset=_text(summary.get("dataset"), data.get("dataset")),
        sort_key=key,
    )


def read_run(run_dir: Path) -> RunInfo:
    """The RunInfo of one run directory; a damaged or foreign folder is a UsageError that says
    what is wrong."""
    found = read_folder(run_dir)
    if found.problem is not None:
        raise UsageError(f"{display(run_dir)}: {found.problem}")
    return run_info(found)


def list_runs(folder: Path) -> tuple[list[RunInfo], list[tuple[Path, str]]]:
    """(the run directories in `folder`, newest first; the sub-folders skipped, each with why:
    damaged, or not a run directory). A missing folder is a UsageError."""
    if not folder.is_dir():
        what = foreign(folder) if folder.is_symlink() or not utf8_name(folder) else None
        what = what or ("is a file, not a folder" if folder.exists() else "no such folder")
        raise UsageError(
            f"{display(folder)}: {what} (give the folder that holds the run directories)"
        )
    runs, skipped = [], []
    for path in sub_folders(folder):
        found = read_folder(path)
        if found.problem is None:
            runs.append(run_info(found))
        else:
            skipped.append((path, found.problem))
    return sorted(runs, key=lambda r: (r.sort_key, r.run_dir), reverse=True), skipped


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested mappings; lists and scalars are leaves."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def spec_changes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's fields that differ from `Spec`'s defaults: [{key, default, value}] by dotted
    key. A section the defaults leave null (train.schedule…) shows its fields with default None;
    an argument the defaults do not set shows default None too."""
    from dnntrick.spec.config import dump_spec
    from dnntrick.spec.schema import Spec

    defaults = flatten(yaml.safe_load(dump_spec(Spec(name="default"))))
    values = flatten(spec)
    changes = []
    for key in sorted(set(defaults) | set(values)):
        if key == "name":
            continue
        default, value = defaults.get(key), values.get(key)
        inside = [k for k in (values if key in defaults else defaults) if k.startswith(key + ".")]
        if default == value or (inside and (default is None or value is None)):
            continue  # equal, or a null section whose fields are listed one by one
        changes.append({"key": key, "default": default, "value": value})
    return changes


def show_run(run_dir: Path) -> dict[str, Any]:
    """Everything `dnntrick show` prints: status, summary, spec changes, per-epoch history. A
    damaged or foreign folder is a UsageError that says what is wrong."""
    found = read_folder(run_dir)
    if found.problem is not None:
        raise UsageError(f"{display(run_dir)}: {found.problem}")
    return {
        **run_info(found).to_json(),
        "stopped": found.stopped,
        "summary": found.summary,
        "spec_changes": spec_changes(found.spec),
        "history": found.history,
    }
