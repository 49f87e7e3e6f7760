"""The run directory: runs/<name>-<YYYYmmdd-HHMMSS>/ with spec.yaml, metrics.jsonl, summary.json
and model.safetensors. Every file is written atomically: a temp file in the same folder, flushed
and fsynced, then renamed over the target, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from dnntrick.errors import UsageError, WriteError

STOPPED = "stopped.json"  # {"status": "interrupted" | "diverged", "message", "time"}
SUMMARY = "summary.json"  # written last: the commit point of a finished run


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix.
    A failed write (disk full…) removes its temp file and raises WriteError naming `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise WriteError(path, err) from None
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def make_run_dir(out: Path | str, name: str) -> Path:
    """Create out/<name>-<timestamp>[-k]/ (never an existing folder, never outside `out`)."""
    out = Path(out)
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise UsageError(f"run name {name!r} must not contain path separators or start with '.'")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        path = out / (f"{name}-{stamp}" if k == 1 else f"{name}-{stamp}-{k}")
        if path.resolve().parent != out.resolve():
            raise UsageError(f"run name {name!r} would write outside {out}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise UsageError(f"--out {out}: cannot create a run folder ({err.strerror})") from None
    raise UsageError(f"too many runs named {name!r} this second in {out}")


PREPROCESSING = "preprocessing.safetensors"


class RunDir:
    """Writes one run's files. Metrics rows are kept so the .jsonl can be rewritten atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def write_spec(self, spec_yaml: str, source: str | None, overrides: list[str]) -> None:
        head = f"# resolved spec of {source or 'an in-memory spec'}"
        head += f"; overrides: {' '.join(overrides)}\n" if overrides else "\n"
        atomic_write(self.path / "spec.yaml", (head + spec_yaml).encode())

    def append_metrics(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        text = "".join(json.dumps(r) + "\n" for r in self.rows)
        atomic_write(self.path / "metrics.jsonl", text.encode())

    def restore_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Start from a checkpoint's rows (later rows, from after that checkpoint, are dropped);
        the run goes on, so an earlier stop's record goes, and so does the summary of a finished
        run trained further (--force): until the new one is written the folder reads as
        resumable, not as finished with the old numbers."""
        self.rows = list(rows)
        text = "".join(json.dumps(r) + "\n" for r in self.rows)
        atomic_write(self.path / "metrics.jsonl", text.encode())
        (self.path / STOPPED).unlink(missing_ok=True)
        (self.path / SUMMARY).unlink(missing_ok=True)

    def write_stopped(self, status: str, message: str) -> None:
        """Record why training stopped early (interrupted, diverged): read by `dnntrick runs`."""
        write_json(self.path / STOPPED, {"status": status, "message": message, "time": time.time()})

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / SUMMARY, summary)

    def save_preprocessing(
        self, divisor: float, mean: Any | None = None, std: Any | None = None
    ) -> None:
        """preprocessing.safetensors: how raw inputs become the model's inputs (x / divisor, then
        (x - mean) / std when the run standardized), so a reopened run can predict."""
        from safetensors.torch import save

        tensors = {} if mean is None or std is None else {"mean": mean.cpu(), "std": std.cpu()}
        atomic_write(
            self.path / PREPROCESSING, save(tensors, metadata={"divisor": repr(float(divisor))})
        )

    def save_weights(self, state: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save

        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        atomic_write(self.path / "model.safetensors", save(tensors, metadata=metadata))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import torch

    try:
        ours = version("dnntrick")
    except PackageNotFoundError:  # a source tree that was never installed
        ours = "unknown"
    return {
        "dnntrick": ours,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def git_sha() -> str | None:
    """HEAD of the git checkout holding dnntrick's source, or None outside one."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
