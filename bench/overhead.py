"""What is not training: `dnntrick --help` and `check`, data loading, and a whole `dnntrick
train` run's wall time against its pure training time, with the run's peak RSS. The commands run
as subprocesses of this one (the real entry point, a cold interpreter each time)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def command_seconds(args: list[str], repeats: int) -> dict[str, Any]:
    """Wall and CPU (user + system) time of `python -m dnntrick ARGS`, interpreter start
    included: medians and every run. CPU time counts this process alone, so it moves less than
    wall time when other processes share the cores."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dnntrick", *args],
            env=_env(),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t0)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"dnntrick {' '.join(args)} failed")
    return {
        "median": statistics.median(walls),
        "cpu_median": statistics.median(cpus),
        "all": walls,
        "all_cpu": cpus,
    }


def help_seconds(repeats: int) -> dict[str, Any]:
    """`dnntrick --help` (command_seconds)."""
    return command_seconds(["--help"], repeats)


def check_seconds(repeats: int, spec: str = "experiments/selu.yaml") -> dict[str, Any]:
    """`dnntrick check SPEC` (command_seconds): YAML, the pydantic model, the limits."""
    return command_seconds(["check", spec], repeats)


IMPORTS = """
import json, time
t0 = time.perf_counter(); import torch
t1 = time.perf_counter(); import torch._dynamo  # what torch.optim pulls in at the first optimizer
t2 = time.perf_counter(); import dnntrick.runner
t3 = time.perf_counter()
print(json.dumps({"torch": t1 - t0, "torch._dynamo": t2 - t1, "dnntrick.runner": t3 - t2}))
"""


def import_seconds(repeats: int) -> dict[str, Any]:
    """The import floor of any run: `import torch`, then torch._dynamo (torch.optim imports it in
    Optimizer.__init__ and step in torch 2.x), then the rest of dnntrick; medians in seconds."""
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", IMPORTS], env=_env(), capture_output=True, check=True
            ).stdout
        )
        for _ in range(repeats)
    ]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def load_seconds(cache: Path, repeats: int, root: str | None = None) -> dict[str, Any]:
    """load_splits of Fashion-MNIST from the .gz files: first (empty decoded cache) and cached.

    Runs in this process (torch already imported): the figure is the data path alone.
    """
    from dnntrick.data.datasets import load_splits
    from dnntrick.spec.schema import DataSpec

    spec = DataSpec(root=root)
    first, cached = [], []
    old = os.environ.get("DNNTRICK_CACHE")
    try:
        for r in range(repeats):
            os.environ["DNNTRICK_CACHE"] = str(cache / f"cold-{r}")
            t0 = time.perf_counter()
            load_splits(spec)
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            load_splits(spec)
            cached.append(time.perf_counter() - t0)
    finally:
        if old is None:
            os.environ.pop("DNNTRICK_CACHE", None)
        else:
            os.environ["DNNTRICK_CACHE"] = old
    return {
        "first": statistics.median(first),
        "cached": statistics.median(cached),
        "all_first": first,
        "all_cached": cached,
    }


def train_run(
    cache: Path, epochs: int, spec: str = "experiments/default.yaml", extra: list[str] | None = None
) -> dict[str, Any]:
    """One `dnntrick train SPEC train.epochs=N --quiet --json` subprocess: wall time (process
    start to exit), its summary's train_seconds and wall_seconds, and its peak RSS."""
    with tempfile.TemporaryDirectory(prefix="dnntrick-bench-runs-") as out:
        cmd = [sys.executable, "-m", "dnntrick", "train", str(REPO / spec)]
        cmd += [f"train.epochs={epochs}", *(extra or []), "--out", out, "--json", "--quiet"]
        stdout_path, stderr_path = Path(out) / "stdout.json", Path(out) / "stderr.txt"
        with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                cmd, env=_env(DNNTRICK_CACHE=str(cache)), stdout=stdout, stderr=stderr
            )
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
            wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {stderr_path.read_text()[-500:]}")
        summary = json.loads(stdout_path.read_text())
    peak_rss = usage.ru_maxrss * 1024  # Linux reports KiB
    train = summary["train_seconds"]
    return {
        "wall_seconds": wall,
        "train_seconds": train,
        "run_wall_seconds": summary["wall_seconds"],  # inside run_spec: data, model, loop, files
        "startup_seconds": wall - summary["wall_seconds"],  # interpreter, imports, spec
        "non_training_fraction": (wall - train) / wall,
        "samples_per_second": summary["samples_per_second"],
        "test_accuracy": summary["test_accuracy"],
        "peak_rss_bytes": peak_rss,
    }
