"""Samples/s of the three loops, measured in one process with interleaved repeats.

For each (widths, batch size): build the three loops, warm each up, then for each repeat time
every loop on the same number of batches, rotating which loop goes first so that a burst of load
from other processes does not always hit the same one. Figures are medians over the repeats.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.loops import Setup, build_loops
from dnntrick.data import Splits


def time_loops(
    setup: Setup,
    splits: Splits,
    workdir: Path,
    repeats: int,
    samples: int,
    warmup_batches: int = 5,
) -> dict[str, Any]:
    """Median samples/s of loops a, b, c for `setup`, each timed on about `samples` samples."""
    loops = build_loops(setup, splits, workdir)
    n_batches = max(10, -(-samples // setup.batch_size))
    for loop in loops:
        loop.run(warmup_batches)
    rates: dict[str, list[float]] = {loop.name: [] for loop in loops}
    cpu_rates: dict[str, list[float]] = {loop.name: [] for loop in loops}
    for r in range(repeats):
        for loop in loops[r % 3 :] + loops[: r % 3]:
            before = loop.samples
            t0, c0 = time.perf_counter(), time.process_time()
            loop.run(n_batches)
            done = loop.samples - before
            rates[loop.name].append(done / (time.perf_counter() - t0))
            # per CPU second of this process (all its threads): less sensitive to other
            # processes taking the cores, though not immune (shared caches, spinning threads)
            cpu_rates[loop.name].append(done / (time.process_time() - c0))
    a, b, c = (statistics.median(rates[loop.name]) for loop in loops)
    cpu_a, cpu_b, cpu_c = (statistics.median(cpu_rates[loop.name]) for loop in loops)
    return {
        "hidden": list(setup.hidden),
        "batch_size": setup.batch_size,
        "batches_per_measure": n_batches,
        "samples_per_second": {"torchvision": a, "tensor": b, "dnntrick": c},
        "all_samples_per_second": rates,
        "c_over_a": c / a,
        "c_over_b": c / b,
        "samples_per_cpu_second": {"torchvision": cpu_a, "tensor": cpu_b, "dnntrick": cpu_c},
        "all_samples_per_cpu_second": cpu_rates,
        "cpu_c_over_a": cpu_c / cpu_a,
        "cpu_c_over_b": cpu_c / cpu_b,
    }


def run_grid(
    widths: list[tuple[int, ...]],
    batches: list[int],
    splits: Splits,
    workdir: Path,
    repeats: int,
    samples: int,
    base: Setup | None = None,
    progress: Any = print,
) -> list[dict[str, Any]]:
    """time_loops for every width × batch size."""
    base = base or Setup()
    rows = []
    for hidden in widths:
        for batch in batches:
            setup = replace(base, hidden=hidden, batch_size=batch)
            row = time_loops(setup, splits, workdir, repeats, samples)
            rows.append(row)
            rates = row["samples_per_second"]
            progress(
                f"  {'-'.join(map(str, hidden))} batch {batch}: "
                + "  ".join(f"{k} {v:,.0f}/s" for k, v in rates.items())
            )
    return rows
