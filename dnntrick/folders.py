"""One folder read as a run directory, every file parsed and checked once, for `dnntrick runs`,
`dnntrick show`, `dnntrick compare RUN_DIR` and `dnntrick.load_run`. Files only: no torch.

`read_folder` checks what the readers use (the keys and types of summary.json, each row of
metrics.jsonl, spec.yaml through the spec's hardened YAML reader) and says in `Folder.problem`,
on one line, why a folder cannot be read as a run: damaged (a file empty, cut, not JSON, not
UTF-8, a key missing or of the wrong kind) or foreign (an lr-find folder, a comparison folder,
an empty folder, no spec.yaml, a symlink loop, a name that is not UTF-8). The readers skip such
a folder with that line (`runs`, `compare`) or refuse it with it (`show`, `load_run`).

Status of a readable run directory: `finished` (summary.json), `interrupted` or `diverged`
(stopped.json, written when Ctrl-C/SIGTERM or a non-finite loss stopped it; resumable from its
checkpoint), else `failed or running` (the process died, e.g. killed or disk full, or is still
training).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnntrick.errors import SpecError, UsageError
from dnntrick.training.rundir import STOPPED

# What the readers use of summary.json and of each metrics.jsonl row, and of which kind. dnntrick
# writes NaN for the metrics of an empty split and for a diverged loss: NaN is a number here.
SUMMARY_KEYS = {
    "name": "text",
    "seed": "count",
    "dataset": "text",
    "device": "text",
    "test_accuracy": "fraction",
    "test_loss": "number",
    "best_val_accuracy": "fraction",
    "best_epoch": "count",
    "epochs_run": "count",
    "train_seconds": "number",
    "samples_per_second": "number",
    "parameters": "count",
}
ROW_KEYS = {
    "epoch": "count",
    "train_loss": "number",
    "train_accuracy": "fraction",
    "val_loss": "number",
    "val_accuracy": "fraction",
    "lr": "number",
}
KINDS = {
    "text": "a string",
    "count": "a whole number ≥ 0",
    "number": "a number",
    "fraction": "a number from 0 to 1",
}


def display(path: Path | str) -> str:
    """A path as text that prints anywhere: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _of_kind(value: Any, kind: str) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if kind == "count":
        return isinstance(value, int) and value >= 0
    return kind == "number" or math.isnan(value) or 0 <= value <= 1


def fields_problem(obj: dict[str, Any], kinds: dict[str, str], where: str) -> str | None:
    """The first key of `kinds` that `obj` lacks or holds with the wrong kind of value, said."""
    for key, kind in kinds.items():
        if key not in obj:
            return f"{where} has no {key!r}"
        if not _of_kind(obj[key], kind):
            return f"{where}: {key} is {json.dumps(obj[key])[:40]}, not {KINDS[kind]}"
    return None


def read_text(path: Path) -> tuple[str | None, str | None]:
    """(the file's text, None); (None, None) when there is no such file; (None, why) when it
    cannot be read as UTF-8 text."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return None, f"{path.name} is a folder, not a file"
        if not stat.S_ISREG(mode):  # a FIFO or a device would be read forever
            return None, f"{path.name} is not a regular file"
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"{path.name}: cannot read it ({err.strerror})"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return None, f"{path.name} is not UTF-8 text (byte {err.start} is {raw[err.start]:#04x})"


def read_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in the file, None); (None, None) when there is no such file; (None, why)
    when it is empty, not JSON or not an object."""
    text, problem = read_text(path)
    if text is None:
        return None, problem
    if not text.strip():
        return None, f"{path.name} is empty"
    try:
        value = json.loads(text)
    except ValueError as err:
        return None, f"{path.name} is not JSON ({err})"
    if not isinstance(value, dict):
        return None, f"{path.name} holds {type(value).__name__} {text.strip()[:20]}, not an object"
    return value, None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable (a run still writing)."""
    return read_object(path)[0]


def read_rows(run_dir: Path, finished: bool) -> tuple[list[dict[str, Any]], str | None]:
    """(metrics.jsonl's rows, None), or (the rows before the first bad one, what is wrong).
    An unfinished run may have died writing its last line: that line is left out, not a
    problem. A finished run's file must be whole."""
    path = run_dir / "metrics.jsonl"
    text, problem = read_text(path)
    if text is None:
        return [], problem or ("no metrics.jsonl" if finished else None)
    lines = text.splitlines()
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        where = f"metrics.jsonl line {number}"
        try:
            row = json.loads(line)
        except ValueError:
            if number == len(lines) and not finished:
                break  # a killed run's half-written row
            return rows, f"{where} is cut off or not JSON: {line[:30]!r}"
        if not isinstance(row, dict):
            return rows, f"{where} holds {type(row).__name__} {line.strip()[:20]}, not an object"
        problem = fields_problem(row, ROW_KEYS, where)
        if problem is None and row["epoch"] != number:
            problem = f"{where} is epoch {row['epoch']}, not {number}"
        if problem:
            return rows, problem
        rows.append(row)
    return rows, None


def read_spec_checked(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """(spec.yaml's mapping, None), or ({}, why it cannot be read) – through the spec's own
    hardened YAML reader (size, depth and alias caps)."""
    from dnntrick.spec.config import read_spec_file

    path = run_dir / "spec.yaml"
    if not (path.is_file() or path.is_symlink()):
        return {}, "spec.yaml is a folder, not a file" if path.is_dir() else "no spec.yaml"
    try:
        return read_spec_file(path), None
    except SpecError as err:
        return {}, f"spec.yaml: {err.problems[0]}"


@dataclass
class Folder:
    """One folder read as a run directory, every file parsed and checked once. `problem`: why it
    cannot be read as a run (damaged or foreign, one line), else None."""

    path: Path
    problem: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None  # None: the run did not finish
    stopped: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        """finished | interrupted | diverged | failed or running."""
        if self.summary is not None:
            return "finished"
        status = (self.stopped or {}).get("status")
        return str(status) if status in ("interrupted", "diverged") else "failed or running"


def utf8_name(path: Path) -> bool:
    """Whether `path` prints and writes as UTF-8 (a name in other bytes does not)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode kept the raw bytes as surrogates
        return False
    return True


def holds_a_run(path: Path) -> bool:
    """Whether `path` holds a run's files (a run directory, maybe damaged), not other folders."""
    names = ["spec.yaml", "summary.json", "metrics.jsonl", STOPPED, "model.safetensors"]
    names += ["checkpoints", "lr_find.csv"]
    return any((path / name).exists() or (path / name).is_symlink() for name in names)


def symlink_loop(path: Path) -> bool:
    """Whether `path` is a symlink that leads back to itself (neither a file nor a folder)."""
    try:
        path.stat()
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def foreign(path: Path) -> str | None:
    """Why `path` is not a run directory at all (a file, a loop, an lr-find or comparison
    folder, no spec.yaml…), or None when it is one to read."""
    if not utf8_name(path):
        return f"its path has bytes that are not UTF-8 ({display(path.name)}); rename it"
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symlink loop"
        if path.is_symlink():
            return "a broken symlink (its target does not exist)"
        return "no such folder" if err.errno == errno.ENOENT else f"cannot read it ({err.strerror})"
    if not stat.S_ISDIR(mode):
        return "a file, not a run directory"
    if (path / "comparison.json").exists() and not (path / "spec.yaml").exists():
        return "a comparison folder, not a run directory (`dnntrick compare` reads its runs)"
    if (path / "lr_find.csv").exists():
        return "an lr-find folder (lr_find.csv), not a training run"
    try:
        empty = next(path.iterdir(), None) is None
    except OSError as err:
        return f"cannot list it ({err.strerror})"
    if empty:
        return "an empty folder, not a run directory"
    return None


def read_folder(path: Path) -> Folder:
    """Read and check the run directory at `path` (see the module's docstring)."""
    found = Folder(path, foreign(path))
    if found.problem is not None:
        return found
    found.spec, found.problem = read_spec_checked(path)
    if found.problem is not None:
        if found.problem == "no spec.yaml":
            found.problem = "not a run directory (no spec.yaml)"
        return found
    found.stopped = read_json(path / STOPPED)
    found.summary, found.problem = read_object(path / "summary.json")
    if found.summary is not None:
        found.problem = fields_problem(found.summary, SUMMARY_KEYS, "summary.json")
    if found.problem is not None:
        found.summary = None
        return found
    finished = found.summary is not None
    found.history, found.problem = read_rows(path, finished)
    if found.problem is None and found.summary is not None:
        ran, rows = found.summary["epochs_run"], len(found.history)
        if ran != rows:
            found.problem = f"metrics.jsonl has {rows} rows, summary.json says {ran} epochs ran"
    return found


def unfinished(found: Folder) -> str:
    """Why a readable run directory without summary.json holds no result, and what to do."""
    command = f"dnntrick train --resume {display(found.path)}"
    if found.status == "interrupted":
        return f"interrupted, not finished; `{command}` continues it"
    if found.status == "diverged":
        return "diverged (stopped.json), no summary.json"
    if (found.path / "checkpoints").is_dir():
        return f"not finished (no summary.json): still running, or `{command}` continues it"
    return "not finished (no summary.json): still running, or it failed"


def sub_folders(folder: Path) -> list[Path]:
    """The entries of `folder` that are (or claim to be, as a broken link may) folders, by name;
    hidden ones and plain files are left out."""
    if not utf8_name(folder):
        raise UsageError(f"{display(folder)}: {foreign(folder)}")
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise UsageError(f"{display(folder)}: cannot list it ({err.strerror})") from None
    return [p for p in entries if not p.name.startswith(".") and (p.is_dir() or p.is_symlink())]
