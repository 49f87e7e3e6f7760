"""`python -m bench` (`make bench`): dnntrick's speed against plain PyTorch loops on this machine.

Prints two fixed-column tables (throughput; start-up and bookkeeping) with the targets, and writes
every figure (medians and each repeat) to bench/results-<host>.json or --out. With --cuda it runs
the GPU half instead (bench/cuda.py).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
console = Console(highlight=False, width=110)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

TARGETS = {
    "c_over_b": 0.95,  # at batch 50 and 200, the book's MLP
    "c_over_a": 3.0,
    "help_seconds": 0.3,
    "check_seconds": 0.3,
    "load_cached_seconds": 0.3,
    "non_training_fraction": 0.15,
    "peak_rss_bytes": 1.5 * 2**30,
}


def _widths(text: str) -> list[tuple[int, ...]]:
    """'300-100,1024-1024-1024' -> [(300, 100), (1024, 1024, 1024)]."""
    return [tuple(int(u) for u in w.split("-")) for w in text.split(",") if w]


def _machine() -> dict[str, Any]:
    import torch

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def throughput_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    names = (
        "widths", "batch", "(a)", "(b)", "(c)", "c/a", "c/b", "target", "CPU c/a", "CPU c/b",
        "clean",
    )  # fmt: skip
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        rates = row["samples_per_second"]
        seed = row["hidden"] == [300, 100] and row["batch_size"] in (50, 200)
        ok = row["c_over_a"] >= TARGETS["c_over_a"] and row["c_over_b"] >= TARGETS["c_over_b"]
        target = ("[green]met[/]" if ok else "[red]missed[/]") if seed else "—"
        table.add_row(
            "-".join(map(str, row["hidden"])),
            str(row["batch_size"]),
            f"{rates['torchvision']:,.0f}",
            f"{rates['tensor']:,.0f}",
            f"{rates['dnntrick']:,.0f}",
            f"{row['c_over_a']:.2f}",
            f"{row['c_over_b']:.3f}",
            target,
            f"{row['cpu_c_over_a']:.2f}",
            f"{row['cpu_c_over_b']:.3f}",
            f"{row['repeats_clean']}/{row['repeats']}",
        )
    return table


def overhead_table(o: dict[str, Any]) -> Table:
    table = Table(title="start-up and bookkeeping")
    for name in ("measure", "value", "target", ""):
        table.add_column(name, justify="right" if name != "measure" else "left", no_wrap=True)

    def add(name: str, value: str, target: str, ok: bool | None) -> None:
        mark = "" if ok is None else "[green]met[/]" if ok else "[red]missed[/]"
        table.add_row(name, value, target, mark)

    load, run = o["load"], o["train_run"]
    for name, key in (("dnntrick --help", "help_seconds"), ("dnntrick check", "check_seconds")):
        wall, cpu = o[key]["median"], o[key]["cpu_median"]
        add(f"{name} (CPU {cpu:.3f} s)", f"{wall:.3f} s", "< 0.3 s", wall < TARGETS[key])
    add("load Fashion-MNIST, first (.gz)", f"{load['first']:.3f} s", "", None)
    add(
        "load Fashion-MNIST, cached",
        f"{load['cached']:.3f} s",
        "< 0.3 s",
        load["cached"] < TARGETS["load_cached_seconds"],
    )
    epochs = o["train_epochs"]
    imports = o["imports"]
    floor = imports["torch"] + imports["torch._dynamo"]
    add("import torch", f"{imports['torch']:.2f} s", "", None)
    add("import torch._dynamo (by torch.optim)", f"{imports['torch._dynamo']:.2f} s", "", None)
    add(f"{epochs}-epoch dnntrick train: wall", f"{run['wall_seconds']:.2f} s", "", None)
    add("  of which training", f"{run['train_seconds']:.2f} s", "", None)
    add("  start-up and exit (imports, spec)", f"{run['startup_seconds']:.2f} s", "", None)
    add(
        "  in-run, not training (data, eval, files)",
        f"{run['run_wall_seconds'] - run['train_seconds']:.2f} s",
        "",
        None,
    )
    frac = run["non_training_fraction"]
    add("  not training", f"{100 * frac:.1f} %", "< 15 %", frac < TARGETS["non_training_fraction"])
    # what any script that imports torch and builds a torch.optim optimizer pays before training
    wall = run["wall_seconds"]
    add("    PyTorch's imports (the two above)", f"{100 * floor / wall:.1f} %", "", None)
    own = wall - run["train_seconds"] - floor
    add("    dnntrick's own", f"{own:.2f} s = {100 * own / wall:.1f} %", "", None)
    rss = run["peak_rss_bytes"]
    add(
        "peak RSS of that run",
        f"{rss / 2**30:.2f} GiB",
        "< 1.5 GiB",
        rss < TARGETS["peak_rss_bytes"],
    )
    return table


@app.command()
def main(
    repeats: Annotated[int, typer.Option(help="Interleaved timing repeats per loop.")] = 5,
    samples: Annotated[int, typer.Option(help="Samples per timing (≥ 10 batches).")] = 10_000,
    widths: Annotated[
        str, typer.Option(help="Hidden widths to time, comma-separated.")
    ] = "300-100,1024-1024-1024",
    batches: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "50,200,1000",
    train_epochs: Annotated[int, typer.Option(help="Epochs of the whole-run measure.")] = 3,
    train_repeats: Annotated[int, typer.Option(help="Whole runs (the median is kept).")] = 2,
    root: Annotated[
        str | None, typer.Option(help="Folder of the IDX files (default: dnntrick's lookup).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file for the figures.")] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="torch threads, here and in the subprocesses (default: torch's)."),
    ] = None,
    single: Annotated[
        bool,
        typer.Option(
            "--single-thread/--no-single-thread",
            help="Also time the first widths' rows with one torch thread for all three loops.",
        ),
    ] = True,
    cuda: Annotated[bool, typer.Option("--cuda", help="Run the GPU half (bench/cuda.py).")] = False,
) -> None:
    """Time dnntrick against plain PyTorch loops; print the tables; write the JSON."""
    if cuda:
        from bench.cuda import run_cuda

        gpu = run_cuda(console)
        path = out or HERE / f"results-{socket.gethostname()}-cuda.json"
        path.write_text(json.dumps(gpu, indent=2) + "\n")
        console.print(f"figures written to {path}")
        return

    import statistics

    import torch

    from bench.loops import Setup
    from bench.overhead import (
        check_seconds,
        help_seconds,
        import_seconds,
        load_seconds,
        train_run,
    )
    from bench.throughput import run_grid
    from dnntrick.data.datasets import load_splits

    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the `dnntrick train` subprocesses too
    results: dict[str, Any] = {"machine": _machine(), "targets": TARGETS}
    results["options"] = {
        "repeats": repeats,
        "samples": samples,
        "widths": widths,
        "batches": batches,
        "train_epochs": train_epochs,
        "train_repeats": train_repeats,
    }
    with tempfile.TemporaryDirectory(prefix="dnntrick-bench-") as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        console.print("start-up and bookkeeping …")
        overhead: dict[str, Any] = {
            "help_seconds": help_seconds(10),
            "check_seconds": check_seconds(10),
            "train_epochs": train_epochs,
        }
        overhead["imports"] = import_seconds(3)
        overhead["load"] = load_seconds(cache, 3, root)
        runs = [
            train_run(cache / "cold-0", train_epochs, extra=[f"data.root={root}"] if root else [])
            for _ in range(train_repeats)
        ]
        median_wall = statistics.median(r["wall_seconds"] for r in runs)
        overhead["train_run"] = min(runs, key=lambda r: abs(r["wall_seconds"] - median_wall))
        overhead["train_runs"] = runs
        results["overhead"] = overhead

        console.print("throughput (a: torchvision, b: preloaded tensor, c: dnntrick) …")
        torch.manual_seed(0)
        base = Setup(root=root)
        os.environ["DNNTRICK_CACHE"] = str(cache / "cold-0")
        splits = load_splits(base.spec().data, "cpu")
        batch_sizes = [int(b) for b in batches.split(",")]

        def grid(hidden: list[tuple[int, ...]]) -> list[dict[str, Any]]:
            return run_grid(
                hidden, batch_sizes, splits, work, repeats, samples, base, console.print
            )

        results["throughput"] = grid(_widths(widths))
        threads_used = torch.get_num_threads()
        if single and threads_used > 1:
            console.print("the same with one torch thread …")
            torch.set_num_threads(1)
            results["throughput_one_thread"] = grid(_widths(widths)[:1])
            torch.set_num_threads(threads_used)
    results["machine"]["load_average_after"] = list(os.getloadavg())
    title = "samples/s (wall clock), median of the clean repeats"
    console.print(throughput_table(results["throughput"], f"{title}, {threads_used} torch threads"))
    if "throughput_one_thread" in results:
        console.print(throughput_table(results["throughput_one_thread"], f"{title}, one thread"))
    console.print(
        "[dim](a) torchvision FashionMNIST + ToTensor + DataLoader, (b) preloaded tensor, batches "
        "by index, (c) dnntrick's step; CPU c/a, c/b: the same ratios per CPU second; clean: "
        "repeats during which torch's threads sped small ops up (bench/throughput.py)[/]"
    )
    console.print(overhead_table(results["overhead"]))
    load = results["machine"]
    console.print(
        f"[dim]{load['host']}, {load['cpus']} CPUs, torch {load['torch']} with "
        f"{load['torch_threads']} threads; load average before {load['load_average'][0]:.2f}, "
        f"after {load['load_average_after'][0]:.2f} (other processes share the cores: rerun "
        "when the machine is quiet)[/]"
    )
    path = out or HERE / f"results-{socket.gethostname()}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"figures written to {path}")


if __name__ == "__main__":
    app()
