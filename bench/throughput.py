"""Samples/s of the three loops, measured in one process with interleaved repeats.

For each (widths, batch size): build the three loops, warm each up, then for each repeat time
every loop on the same number of batches, rotating which loop goes first so that a burst of load
from other processes does not always hit the same one. Figures are medians over the repeats.

A repeat is "contended" when the host slows torch's threads down: on the 2-vCPU VMs here, for
seconds to minutes at a time, every parallel region costs more than it gains (small steps run at
half speed with 2 threads, while 1 thread is unaffected). parallel_speedup() checks before and
after each repeat; the medians use the clean repeats when there are any, the table says how many
were clean, and the JSON keeps every repeat.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.loops import Setup, build_loops
from dnntrick.data.datasets import Splits

PROBE = torch.Size([50, 2000])  # 100k floats: above torch's parallel grain, tiny work


def parallel_speedup(ops: int = 40, samples: int = 5) -> float:
    """How many times faster torch's threads run `ops` small in-place multiplications than one
    thread does, now (median of `samples`): about 1.2 with 2 threads on a quiet 2-vCPU VM, 0.8
    while the host makes parallel regions slow."""
    threads = torch.get_num_threads()
    x = torch.randn(PROBE)
    seconds = {}
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            x.mul_(1.0)  # warm up this thread count
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                for _ in range(ops):
                    x.mul_(1.0)
                times.append(time.perf_counter() - t0)
            seconds[n] = statistics.median(times)
    finally:
        torch.set_num_threads(threads)
    return seconds[1] / seconds[threads]


CLEAN_SPEEDUP = 1.05  # seen here: 1.09–1.22 in quiet spells, 0.72–1.0 in slow ones (10–90 %)


def is_clean(speedup: float, threads: int) -> bool:
    """A repeat is clean when torch's threads were worth having around it (always, on one)."""
    return threads == 1 or speedup >= CLEAN_SPEEDUP


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
    speedups: list[tuple[float, float]] = []
    for r in range(repeats):
        before_probe = parallel_speedup()
        for loop in loops[r % 3 :] + loops[: r % 3]:
            before = loop.samples
            t0, c0 = time.perf_counter(), time.process_time()
            loop.run(n_batches)
            done = loop.samples - before
            rates[loop.name].append(done / (time.perf_counter() - t0))
            # per CPU second of this process (all its threads): less sensitive to other
            # processes taking the cores, though not immune (shared caches, spinning threads)
            cpu_rates[loop.name].append(done / (time.process_time() - c0))
        speedups.append((before_probe, parallel_speedup()))
    threads = torch.get_num_threads()
    clean = [is_clean(min(pair), threads) for pair in speedups]
    keep = [r for r in range(repeats) if clean[r]] or list(range(repeats))

    def median(values: list[float]) -> float:
        return statistics.median(values[r] for r in keep)

    a, b, c = (median(rates[loop.name]) for loop in loops)
    cpu_a, cpu_b, cpu_c = (median(cpu_rates[loop.name]) for loop in loops)
    return {
        "hidden": list(setup.hidden),
        "batch_size": setup.batch_size,
        "batches_per_measure": n_batches,
        "threads": threads,
        "samples_per_second": {"torchvision": a, "tensor": b, "dnntrick": c},
        "repeats_clean": sum(clean),
        "repeats": repeats,
        "parallel_speedup_before_after": speedups,
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
