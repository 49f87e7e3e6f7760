"""Standard logs beside metrics.jsonl (`train.log: [csv, tensorboard]`, opt-in).

- csv: `metrics.csv`, Lightning's CSVLogger layout: a header (epoch, train_loss, …) and one row
  per epoch, the scalar columns of metrics.jsonl in their order. Rewritten atomically from every
  row at each epoch's end, so a resumed run's file holds the checkpoint's rows and then the new
  ones, never an epoch twice.
- tensorboard: event files in `tensorboard/`, written by torch.utils.tensorboard.SummaryWriter
  and flushed at each epoch's end; global step = epoch. Tags: train_X → train/X, val_X → val/X,
  the rest under their own names (lr, lr_mean, seconds, grad_norm_mean, …); test/loss and
  test/accuracy at the last epoch when the run ends. A resumed run opens a new event file with
  purge_step = the first epoch it trains again, so TensorBoard's reader drops the old file's
  later epochs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dnntrick.errors import UsageError
from dnntrick.training.rundir import atomic_write

CSV_FILE = "metrics.csv"
TB_FOLDER = "tensorboard"


def scalars(row: dict[str, Any]) -> dict[str, float | int]:
    """The numeric entries of a metrics row (nested ones, e.g. diagnostics, left out)."""
    return {k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def tag(key: str) -> str:
    """TensorBoard tag of a metrics key: train_loss → train/loss, val_accuracy → val/accuracy."""
    for prefix in ("train", "val", "test"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1 :]}"
    return key


def csv_text(rows: list[dict[str, Any]]) -> str:
    """metrics.csv's text: the columns every row's scalars name, in order of first appearance;
    an epoch without a column leaves its cell empty."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in scalars(row) if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(scalars(row))  # floats as repr (str in Python 3): as json.dumps writes them
    return buffer.getvalue()


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or a UsageError naming the extra when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "train.log: tensorboard needs the tensorboard package: "
            "pip install 'dnntrick[tensorboard]' (or drop tensorboard from train.log)"
        ) from None
    return SummaryWriter


class RunLogs:
    """The logs a run asked for. Created before the run directory (a missing package fails
    there, leaving nothing behind), opened on it, fed each epoch's row, closed with the summary."""

    def __init__(self, kinds: Sequence[str]):
        self.kinds = tuple(kinds)
        self.writer_class = summary_writer_class() if "tensorboard" in self.kinds else None
        self.path: Path | None = None
        self.rows: list[dict[str, Any]] = []
        self.writer: Any = None

    def open(self, run_dir: Path, rows: list[dict[str, Any]]) -> None:
        """Start writing into `run_dir`; `rows`: the epochs already done (a resumed run's)."""
        self.path, self.rows = run_dir, list(rows)
        if "csv" in self.kinds and self.rows:
            atomic_write(run_dir / CSV_FILE, csv_text(self.rows).encode())
        elif "csv" in self.kinds:  # resumed before the first epoch ended: no rows to keep
            (run_dir / CSV_FILE).unlink(missing_ok=True)
        if self.writer_class is not None:
            folder = run_dir / TB_FOLDER
            resumed = folder.is_dir() and any(folder.iterdir())
            first = self.rows[-1]["epoch"] + 1 if self.rows else 1
            self.writer = self.writer_class(
                log_dir=str(folder), purge_step=first if resumed else None
            )
            if not resumed:  # e.g. --force added tensorboard: log the checkpoint's epochs too
                for row in self.rows:
                    self._add(row)
            self.writer.flush()

    def epoch(self, row: dict[str, Any]) -> None:
        """Log one finished epoch (after metrics.jsonl has it)."""
        if self.path is None:
            return
        self.rows.append(row)
        if "csv" in self.kinds:
            atomic_write(self.path / CSV_FILE, csv_text(self.rows).encode())
        if self.writer is not None:
            self._add(row)
            self.writer.flush()  # a live TensorBoard sees each epoch as it ends

    def _add(self, row: dict[str, Any]) -> None:
        for key, value in scalars(row).items():
            if key != "epoch":
                self.writer.add_scalar(tag(key), value, global_step=row["epoch"])

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Write the test metrics (when the run finished) and close the event file."""
        if self.writer is None:
            return
        if summary is not None and self.rows:
            for key in ("test_loss", "test_accuracy"):
                value = summary.get(key)
                if isinstance(value, int | float):
                    self.writer.add_scalar(tag(key), value, global_step=self.rows[-1]["epoch"])
        self.writer.close()
        self.writer = None
