"""The GPU half of the benchmark (`python -m bench --cuda`): one prepared script for a machine
with a CUDA device, a few minutes long.

1. The book's MLP through the real product path (runner.run_spec, data resident on the GPU) at
   batch 50, 200 and 1000: eager fp32, CUDA graphs fp32, eager bf16, CUDA graphs bf16. Samples/s,
   test accuracy, peak GPU memory. Target: graphs ≥ 2× eager at batch 50, same accuracy.
2. Gradient clipping and an LR change under graphs: with global-norm clipping captured in the
   step, an lr set to 0 between replays (training.lr.set_lr) must freeze the weights, and the
   clipping's device step counter must count the replayed steps.
3. `dnntrick compare --jobs N` with N = 1, 4, 8 runs sharing the one GPU: aggregate samples/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 3


def _spec(batch: int, precision: str, graphs: bool, epochs: int = EPOCHS) -> Any:
    """The book's default experiment (784-300-100-10 ELU, He, Adam) on the GPU."""
    from dnntrick.spec.config import load_spec

    return load_spec(
        REPO / "experiments" / "default.yaml",
        [
            "device=cuda",
            f"train.epochs={epochs}",
            "train.early_stopping=null",
            f"train.batch_size={batch}",
            f"train.precision={precision}",
            f"train.cuda_graphs={str(graphs).lower()}",
        ],
    )


def one_run(batch: int, precision: str, graphs: bool, out: Path) -> dict[str, Any]:
    import torch

    from dnntrick.runner import run_spec

    torch.cuda.reset_peak_memory_stats()
    result = run_spec(_spec(batch, precision, graphs), out=out)
    s = result.summary
    return {
        "batch_size": batch,
        "precision": precision,
        "cuda_graphs": graphs,
        "samples_per_second": s["samples_per_second"],
        "test_accuracy": s["test_accuracy"],
        "train_seconds": s["train_seconds"],
        "wall_seconds": s["wall_seconds"],
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(),
    }


def lr_change_is_seen(out: Path) -> dict[str, Any]:
    """Under graphs, an lr set between steps must reach the replayed optimizer step."""
    import torch

    from dnntrick.data.datasets import load_splits
    from dnntrick.spec.schema import ClipSpec
    from dnntrick.training.loop import train_epoch
    from dnntrick.training.lr import set_lr
    from dnntrick.training.model import build_model
    from dnntrick.training.report import Reporter
    from dnntrick.training.step import StepParts, make_step
    from dnntrick.tricks.optimizers import build_optimizer
    from dnntrick.tricks.regularization import StepTricks

    spec = _spec(50, "fp32", True, epochs=1)
    train = spec.train.model_copy(update={"clip": ClipSpec(by="global_norm", threshold=1.0)})
    data = load_splits(spec.data, "cuda")
    finals = []
    for lr_after in (spec.train.optimizer.lr, 0.0):
        torch.manual_seed(0)
        model = build_model(spec.model, data.in_features, data.n_classes).cuda()
        opt = build_optimizer(spec.train.optimizer, model.parameters(), "cuda", capturable=True)
        params = list(model.parameters())
        tricks = StepTricks(model, train)  # global-norm clipping inside the captured step
        step = make_step(StepParts(model, opt, tricks=tricks), data.x_train, data.y_train, train)
        order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))
        train_epoch(step, order[:5000].cuda(), 50, Reporter())  # warm-up, capture, replays
        set_lr(opt, lr_after)
        before = params[0].detach().clone()
        train_epoch(step, order[5000:10000].cuda(), 50, Reporter())
        finals.append(float((params[0] - before).abs().max()))
        clipped_steps = int(tricks.steps.item())  # counts replays too: a device counter
    return {
        "clip_steps_counted_in_second_run": clipped_steps,  # expected 200 (2 × 100 steps)
        "max_weight_change_lr_kept": finals[0],
        "max_weight_change_lr_zero": finals[1],
        "lr_change_seen_by_graph": finals[0] > 0 and finals[1] == 0.0,
    }


def _runs_in(obj: Any) -> list[dict[str, Any]]:
    """Every per-run record (a dict with a seed and samples_per_second) in compare's JSON."""
    if isinstance(obj, dict):
        if "seed" in obj and "samples_per_second" in obj:
            return [obj]
        return [r for v in obj.values() for r in _runs_in(v)]
    if isinstance(obj, list):
        return [r for v in obj for r in _runs_in(v)]
    return []


def concurrent_runs(n: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """`dnntrick compare --jobs N --seeds N` on the GPU: N runs of the book's MLP share it.
    Aggregate samples/s = the sum of the runs' own training rates (they overlap), and also all
    training samples over the command's whole wall time (start-up included)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "dnntrick", "compare", str(REPO / "experiments/default.yaml")]
        cmd += [f"--seeds={n}", f"--jobs={n}", "device=cuda", f"train.epochs={epochs}"]
        cmd += ["train.early_stopping=null", "--out", out, "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-400:]}")
        runs = _runs_in(json.loads(proc.stdout))
    rates = [float(r["samples_per_second"]) for r in runs]
    return {
        "runs": n,
        "aggregate_samples_per_second": sum(rates),
        "per_run_samples_per_second": rates,
        "samples_per_wall_second": n * epochs * 55_000 / wall,
        "wall_seconds": wall,
        "test_accuracies": [r.get("test_accuracy") for r in runs],
        "method": "dnntrick compare --jobs N --seeds N (N runs of experiments/default.yaml)",
    }


def run_cuda(console: Console) -> dict[str, Any]:
    """Run every GPU measure, print the tables, return the figures."""
    import torch

    if not torch.cuda.is_available():
        console.print("error: --cuda needs a CUDA device (torch.cuda.is_available() is False)")
        raise SystemExit(2)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "epochs": EPOCHS,
    }
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        one_run(50, "fp32", False, out)  # warm-up: CUDA context, cuBLAS, data cache
        for batch in (50, 200, 1000):
            for precision in ("fp32", "bf16"):
                for graphs in (False, True):
                    runs.append(one_run(batch, precision, graphs, out))
                    r = runs[-1]
                    console.print(
                        f"  batch {batch} {precision} graphs={graphs}: "
                        f"{r['samples_per_second']:,.0f}/s acc {r['test_accuracy']:.4f}"
                    )
        results["runs"] = runs
        results["lr_under_graphs"] = lr_change_is_seen(out)
    results["concurrent"] = [concurrent_runs(n) for n in (1, 4, 8)]

    table = Table(title=f"the book's MLP on {results['device']}, {EPOCHS} epochs, samples/s")
    for name in (
        "batch",
        "precision",
        "graphs",
        "samples/s",
        "× eager fp32",
        "test acc",
        "GPU MiB",
    ):
        table.add_column(name, justify="right", no_wrap=True)
    base = {r["batch_size"]: r for r in runs if r["precision"] == "fp32" and not r["cuda_graphs"]}
    for r in runs:
        ratio = r["samples_per_second"] / base[r["batch_size"]]["samples_per_second"]
        table.add_row(
            str(r["batch_size"]),
            r["precision"],
            "yes" if r["cuda_graphs"] else "no",
            f"{r['samples_per_second']:,.0f}",
            f"{ratio:.2f}",
            f"{r['test_accuracy']:.4f}",
            f"{r['peak_gpu_memory_bytes'] / 2**20:,.0f}",
        )
    console.print(table)
    console.print(f"lr set between replays reaches the graph: {results['lr_under_graphs']}")
    conc = Table(title="dnntrick compare --jobs N on one GPU (the book's MLP, batch 50)")
    for name in ("runs", "aggregate samples/s", "per run", "incl. start-up", "wall s"):
        conc.add_column(name, justify="right")
    for c in results["concurrent"]:
        conc.add_row(
            str(c["runs"]),
            f"{c['aggregate_samples_per_second']:,.0f}",
            f"{c['aggregate_samples_per_second'] / c['runs']:,.0f}",
            f"{c['samples_per_wall_second']:,.0f}",
            f"{c['wall_seconds']:.1f}",
        )
    console.print(conc)
    return results
