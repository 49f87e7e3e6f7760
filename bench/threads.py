"""`python -m bench.threads`: the real training step's samples/s with one torch thread against
all of them, on the book's MLP (784-300-100-10 ELU, Adam) at batch 50 and 200, on this machine as
it is ("quiet") and with one busy-loop process per core started by the benchmark itself
("loaded": the same added load on every machine and every rerun).

The figures behind `train.threads: auto` (dnntrick/training/build.py AUTO_THREADS). Each timing
runs `--samples` samples through dnntrick's step (bench/loops.DnntrickLoop: the code `dnntrick
train` runs); thread counts alternate within each repeat and the median is kept. Prints a
fixed-column table with the ratio all/1 and writes every timing to
bench/results-threads-<host>.json.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from dnntrick.comparison.executor import cpu_count as cores  # affinity-aware

HERE = Path(__file__).resolve().parent
BUSY_LOOP = "while True: pass"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@contextmanager
def busy_load(processes: int) -> Iterator[list[int]]:
    """`processes` Python busy loops (one core each) for the duration; their pids. They are
    killed on the way out, also on Ctrl-C."""
    procs = [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    try:
        time.sleep(0.5)  # let the scheduler spread them
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()


def time_step(loop: Any, threads: int, samples: int) -> float:
    """Samples/s of `loop` trained on about `samples` samples with `threads` torch threads."""
    import torch

    torch.set_num_threads(threads)
    loop.run(2)  # warm this thread count up
    batches = max(5, -(-samples // loop.bs))
    before = loop.samples
    t0 = time.perf_counter()
    loop.run(batches)
    return (loop.samples - before) / (time.perf_counter() - t0)


def measure(
    batches: list[int], counts: list[int], repeats: int, samples: int, root: str | None
) -> list[dict[str, Any]]:
    """One row per batch size: the median samples/s of each thread count, thread counts
    alternating (and their order rotating) within each repeat."""
    import torch

    from bench.loops import DnntrickLoop, Setup
    from dnntrick.data.datasets import load_splits

    before = torch.get_num_threads()
    splits = load_splits(Setup(root=root).spec().data, "cpu")
    rows = []
    try:
        for batch in batches:
            loop = DnntrickLoop(Setup(batch_size=batch, root=root), splits)
            rates: dict[int, list[float]] = {n: [] for n in counts}
            for r in range(repeats):
                for n in counts[r % len(counts) :] + counts[: r % len(counts)]:
                    rates[n].append(time_step(loop, n, samples))
            rows.append(
                {
                    "batch_size": batch,
                    "samples_per_second": {str(n): statistics.median(v) for n, v in rates.items()},
                    "all_samples_per_second": {str(n): v for n, v in rates.items()},
                }
            )
    finally:
        torch.set_num_threads(before)
    return rows


def table(results: dict[str, Any]) -> str:
    """The fixed-column table: one line per (load, batch size)."""
    one, many = results["thread_counts"]
    lines = [
        f"{'machine':<8} {'batch':>5} {f'{one} thread':>12} {f'{many} threads':>12} "
        f"{f'{many}/{one}':>7}  {'loadavg':>7}"
    ]
    for load in ("quiet", "loaded"):
        part = results[load]
        for row in part["rows"]:
            a, b = (row["samples_per_second"][str(n)] for n in (one, many))
            lines.append(
                f"{load:<8} {row['batch_size']:>5} {a:>12,.0f} {b:>12,.0f} {b / a:>7.2f}  "
                f"{part['load_average']:>7.2f}"
            )
    return "\n".join(lines)


@app.command()
def main(
    batches: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "50,200",
    repeats: Annotated[int, typer.Option(help="Timings per thread count (the median).")] = 3,
    samples: Annotated[int, typer.Option(help="Samples per timing.")] = 10_000,
    load: Annotated[
        int | None, typer.Option(help="Busy-loop processes for 'loaded' (default: one per core).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="The many-threads count (default: all cores).")
    ] = None,
    root: Annotated[
        str | None, typer.Option(help="Folder of the IDX files (default: dnntrick's lookup).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file for the figures.")] = None,
) -> None:
    """Time dnntrick's step with 1 thread and with all, quiet and loaded; print the table."""
    import torch

    sizes = [int(b) for b in batches.split(",") if b]
    counts = [1, threads or cores()]
    results: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpus": cores(),
        "torch": torch.__version__,
        "thread_counts": counts,
        "options": {"repeats": repeats, "samples": samples},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    busy = cores() if load is None else load
    for name in ("quiet", "loaded"):
        print(f"{name} …", file=sys.stderr, flush=True)
        with busy_load(busy if name == "loaded" else 0):
            start = os.getloadavg()[0]
            rows = measure(sizes, counts, repeats, samples, root)
            results[name] = {
                "busy_processes": busy if name == "loaded" else 0,
                "load_average": max(start, os.getloadavg()[0]),
                "rows": rows,
            }
    print(table(results))
    print(
        f"(samples/s of dnntrick's step, book MLP, median of {repeats}; loaded: {busy} busy-loop "
        f"processes; {results['cpus']} cores, torch {results['torch']}; loadavg: 1-minute load "
        "average during the part, the benchmark's own work included)"
    )
    path = out or HERE / f"results-threads-{socket.gethostname()}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {path}")


if __name__ == "__main__":
    app()
