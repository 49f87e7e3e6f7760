"""Run directories read back for `dnntrick runs` and `dnntrick show`: what each run is, how far it
got, how its spec differs from the defaults, its learning curves. Reads files only (spec.yaml,
summary.json, stopped.json, metrics.jsonl): no torch.

Status of a run directory: `finished` (summary.json), `interrupted` or `diverged` (stopped.json,
written when Ctrl-C/SIGTERM or a non-finite loss stopped it; resumable from its checkpoint), else
`failed or running` (the process died, e.g. killed or disk full, or is still training).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dnntrick.errors import UsageError
from dnntrick.training.rundir import STOPPED

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


def is_run_dir(path: Path) -> bool:
    return (path / "spec.yaml").is_file()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable (a run still writing)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a half-written last line (a killed run) is left out."""
    rows = []
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def read_spec(run_dir: Path) -> dict[str, Any]:
    """spec.yaml as a mapping (not validated: a run of another dnntrick version still shows)."""
    try:
        data = yaml.safe_load((run_dir / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def status(run_dir: Path) -> str:
    if read_json(run_dir / "summary.json") is not None:
        return "finished"
    stopped = read_json(run_dir / STOPPED)
    if stopped is not None and stopped.get("status") in ("interrupted", "diverged"):
        return str(stopped["status"])
    return "failed or running"


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


def read_run(run_dir: Path) -> RunInfo:
    """The RunInfo of one run directory (it must hold a spec.yaml)."""
    spec = read_spec(run_dir)
    summary = read_json(run_dir / "summary.json") or {}
    history = read_history(run_dir)
    when, key = started(run_dir)
    train, data = (v if isinstance(v := spec.get(k), dict) else {} for k in ("train", "data"))
    accuracy = summary.get("test_accuracy")
    return RunInfo(
        run_dir=str(run_dir),
        name=str(summary.get("name") or spec.get("name") or STAMP.sub("", run_dir.name)),
        started=when,
        status=status(run_dir),
        test_accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        epochs=len(history),
        planned_epochs=train.get("epochs") if isinstance(train.get("epochs"), int) else None,
        device=summary.get("device") or spec.get("device"),
        dataset=summary.get("dataset") or data.get("dataset"),
        sort_key=key,
    )


def list_runs(folder: Path) -> list[RunInfo]:
    """The run directories in `folder` (its sub-folders that hold a spec.yaml; others are
    skipped), newest first. A missing folder is a UsageError."""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "no such folder"
        raise UsageError(f"{folder}: {what} (give the folder that holds the run directories)")
    runs = [read_run(p) for p in folder.iterdir() if p.is_dir() and is_run_dir(p)]
    return sorted(runs, key=lambda r: (r.sort_key, r.run_dir), reverse=True)


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
    """Everything `dnntrick show` prints: status, summary, spec changes, per-epoch history."""
    if not run_dir.is_dir() or not is_run_dir(run_dir):
        raise UsageError(f"{run_dir}: not a run directory (no spec.yaml)")
    info = read_run(run_dir)
    return {
        **info.to_json(),
        "stopped": read_json(run_dir / STOPPED),
        "summary": read_json(run_dir / "summary.json"),
        "spec_changes": spec_changes(read_spec(run_dir)),
        "history": read_history(run_dir),
    }


def plot_curves(shown: dict[str, Any], path: Path) -> None:
    """Loss and accuracy against epoch (train and validation; the test figures as a dotted line
    when the run finished) as a PNG at `path`."""
    from dnntrick.comparison.plots import curves_figure, save_png

    title = f"{shown['name']} ({shown['status']}): {Path(shown['run_dir']).name}"
    save_png(curves_figure(shown["history"], title, shown["summary"]), path)
