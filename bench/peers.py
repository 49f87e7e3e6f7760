"""`python -m bench.peers` (`make bench-peers`): dnntrick against plain PyTorch, PyTorch Lightning
and Keras 3 on the same work, each run a fresh process.

The work (bench/peers_work.py says it in full): Fashion-MNIST 55k/5k/10k, pixels / 255, an MLP
784-300-100-10 ELU with He-normal weights, Adam 1e-3, batch 50 and 200, 3 epochs, validation after
each epoch, test accuracy at the end. dnntrick runs `python -m dnntrick train` on that spec
(SPEC below) from the project's venv; the peers run bench/peers_work.py from their own venv
(.venv-peers, made by `make bench-peers`), which never imports dnntrick.

Rounds interleave: round r runs every batch size, and within it every peer in an order rotated by
r, so a slow spell of a shared machine falls on all of them. Every process gets the same thread
count (OMP/MKL/TF environment variables and the frameworks' own calls). Per run: the whole-process
wall (start to exit, imports included), the train time (each epoch's training steps, validation
excluded: dnntrick's summary.json train_seconds, measured the same way inside each peer), train
samples/s and test accuracy. The table gives the medians (test accuracy: the mean) and the ratios
dnntrick/peer: of train samples/s (> 1: dnntrick trains faster) and of wall (< 1: dnntrick's
whole run is shorter). Every run goes to bench/results-peers.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.peers_work import MARKER
from bench.peers_work import PEERS as FRAMEWORK_PEERS

REPO = Path(__file__).resolve().parent.parent
PEERS = ("dnntrick", *FRAMEWORK_PEERS)
# the Python modules each peer needs in the peers' venv
NEEDS = {
    "torch-dataloader": ("torch",),
    "torch-preloaded": ("torch",),
    "lightning": ("torch", "lightning"),
    "keras-torch": ("torch", "keras"),
    "keras-tf": ("keras", "tensorflow"),
}
SPEC = """\
# bench/peers.py: the benchmark's work as a dnntrick spec (epochs, batch and seed: overrides)
name: peers
device: cpu
data: {dataset: fashion-mnist, root: ROOT, val_size: VAL_SIZE, val_from: last}
model: {hidden: [300, 100], activation: elu, init: he_normal}
train:
  batch_size: 50
  optimizer: {name: adam, lr: 0.001}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; --quick makes rounds and epochs 1 where they are not given."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers", description="dnntrick against PyTorch, Lightning, Keras."
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    parser.add_argument("--batches", default="50,200", help="batch sizes, comma-separated")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch/TF threads in every run")
    parser.add_argument("--peers", default=",".join(PEERS), help="a comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 1 round, 1 epoch")
    parser.add_argument(
        "--peers-python",
        type=Path,
        default=REPO / ".venv-peers" / "bin" / "python",
        help="the peers' interpreter",
    )
    parser.add_argument("--root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--val-size", type=int, default=5000, help=argparse.SUPPRESS)
    parser.add_argument("--train-limit", type=int, default=None, help="first N training images")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first runs")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run each process on --threads CPUs alone (TensorFlow drives its compute thread "
        "from a second, Python thread: pinned, every peer gets the same cores)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-peers.json")
    args = parser.parse_args(argv)
    default = 1 if args.quick else 3
    args.rounds = default if args.rounds is None else args.rounds
    args.epochs = default if args.epochs is None else args.epochs
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        parser.error(f"--batches {args.batches!r}: give integers, e.g. 50,200")
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        parser.error(f"--peers: unknown {', '.join(unknown)} (choose from {', '.join(PEERS)})")
    if min([args.rounds, args.epochs, args.threads, *args.batches]) < 1:
        parser.error("--rounds, --epochs, --threads and --batches must be at least 1")
    return args


def round_order(peers: list[str], r: int) -> list[str]:
    """Round r's order: the peers rotated left by r."""
    k = r % len(peers)
    return peers[k:] + peers[:k]


def missing_modules(python: Path) -> dict[str, str]:
    """{module: reason} for the peers' modules that `python` cannot import (found by name, not
    imported: TensorFlow's import alone takes seconds)."""
    if not python.exists():
        return {m: f"no {python}: run `make bench-peers`" for m in ("torch", "lightning", "keras")}
    probe = (
        "import importlib.util, json; print(json.dumps([m for m in "
        "('torch', 'lightning', 'keras', 'tensorflow') if importlib.util.find_spec(m) is None]))"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    missing: dict[str, str] = {}
    log = python.parent.parent / "tensorflow-install.log"
    for module in json.loads(done.stdout):
        reason = f"not in {python.parent.parent}"
        if module == "tensorflow" and log.is_file():
            reason = tensorflow_reason(log)
        missing[module] = reason
    return missing


def tensorflow_reason(log: Path) -> str:
    """Why `make bench-peers` could not install TensorFlow: the first error line of pip's log."""
    lines = [ln.strip() for ln in log.read_text().splitlines() if ln.startswith("ERROR")]
    return f"pip could not install tensorflow-cpu here: {(lines or ['see ' + str(log)])[0]}"


def thread_env(threads: int) -> dict[str, str]:
    """The environment that holds every framework to `threads` threads."""
    n = str(threads)
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": "1",
    }


def timed_process(
    cmd: list[str], env: dict[str, str], cwd: Path, cpus: set[int] | None = None
) -> dict[str, Any]:
    """Run cmd to its exit (on `cpus` alone when given): wall seconds (start to exit), return
    code, output, CPU seconds, peak RSS."""
    pin = None if cpus is None else lambda: os.sched_setaffinity(0, cpus)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, preexec_fn=pin)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        wall = time.perf_counter() - t0
        out.seek(0), err.seek(0)
        return {
            "wall_seconds": wall,
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.read(),
            "stderr": err.read(),
            "cpu_seconds": usage.ru_utime + usage.ru_stime,  # the child's own: steadier under load
            "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        }


def dnntrick_threads_override(threads: int) -> list[str]:
    """`train.threads=N` where the spec has that field (older dnntrick: OMP_NUM_THREADS only)."""
    from dnntrick.spec.schema import TrainSpec

    return [f"train.threads={threads}"] if "threads" in TrainSpec.model_fields else []


def command(peer: str, batch: int, epochs: int, seed: int, args: argparse.Namespace) -> list[str]:
    """The command line of one run."""
    if peer == "dnntrick":
        cmd = [sys.executable, "-m", "dnntrick", "train", str(args.work / "peers.yaml")]
        cmd += [f"train.epochs={epochs}", f"train.batch_size={batch}", f"seed={seed}"]
        if args.train_limit:
            cmd.append(f"data.train_limit={args.train_limit}")
        cmd += dnntrick_threads_override(args.threads)
        return [*cmd, "--out", str(args.work / "runs"), "--json", "--quiet"]
    cmd = [str(args.peers_python), str(REPO / "bench" / "peers_work.py"), "--peer", peer]
    cmd += [f"--batch={batch}", f"--epochs={epochs}", f"--seed={seed}"]
    cmd += [f"--threads={args.threads}", f"--root={args.root}", f"--val-size={args.val_size}"]
    return cmd + ([f"--train-limit={args.train_limit}"] if args.train_limit else [])


def parse_result(peer: str, stdout: str) -> dict[str, Any]:
    """The figures a run printed: dnntrick's summary JSON, a peer's PEER-RESULT line."""
    if peer == "dnntrick":
        summary = json.loads(stdout)
        keys = ("train_seconds", "samples_per_second", "test_accuracy", "train_samples")
        return {k: summary[k] for k in keys if k in summary}
    line = next(ln for ln in stdout.splitlines() if ln.startswith(MARKER))
    return json.loads(line[len(MARKER) :])


def run_one(
    peer: str, batch: int, epochs: int, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One run in a fresh process; its record (with `error` when it failed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **thread_env(args.threads)}
    env["DNNTRICK_CACHE"] = str(args.work / "cache")
    cpus = set(sorted(os.sched_getaffinity(0))[: args.threads]) if args.pin else None
    proc = timed_process(command(peer, batch, epochs, seed, args), env, REPO, cpus)
    record: dict[str, Any] = {"peer": peer, "batch_size": batch, "seed": seed}
    record.update({k: proc[k] for k in ("wall_seconds", "cpu_seconds", "peak_rss_bytes")})
    try:
        if proc["returncode"] != 0:
            raise ValueError(f"exit {proc['returncode']}")
        record.update(parse_result(peer, proc["stdout"]))
    except (ValueError, StopIteration, KeyError) as err:
        tail = (proc["stderr"].strip().splitlines() or [""])[-1]
        record["error"] = f"{err or type(err).__name__}: {tail[-300:]}"
    return record


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (batch, peer) with successful runs: the mean test accuracy, the median train
    samples/s and wall, and the ratios dnntrick/peer of those medians (None without dnntrick)."""
    ok = [r for r in records if "error" not in r]
    rows = []
    for batch in sorted({r["batch_size"] for r in ok}):
        for peer in PEERS:
            runs = [r for r in ok if r["peer"] == peer and r["batch_size"] == batch]
            if runs:
                rows.append(
                    {
                        "peer": peer,
                        "batch_size": batch,
                        "runs": len(runs),
                        "test_accuracy": statistics.fmean(r["test_accuracy"] for r in runs),
                        "samples_per_second": statistics.median(
                            r["samples_per_second"] for r in runs
                        ),
                        "wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
                        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
                    }
                )
    for row in rows:
        base = next(
            (r for r in rows if r["peer"] == "dnntrick" and r["batch_size"] == row["batch_size"]),
            None,
        )
        row["sps_ratio"] = base and base["samples_per_second"] / row["samples_per_second"]
        row["wall_ratio"] = base and base["wall_seconds"] / row["wall_seconds"]
        mine = row["peer"] == "dnntrick"
        row["ahead"] = None if mine or not base else row["sps_ratio"] > 1 > row["wall_ratio"]
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The fixed-column table of summarize's rows."""
    head = (
        f"{'peer':<17}{'batch':>6}{'runs':>5}{'test acc':>10}{'train samples/s':>17}"
        f"{'wall s':>9}{'cpu s':>8}{'sps dnn/peer':>14}{'wall dnn/peer':>15}{'ahead':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ahead = "—" if r["ahead"] is None else ("yes" if r["ahead"] else "NO")
        sps = "—" if r["ahead"] is None else f"{r['sps_ratio']:.2f}"
        wall = "—" if r["ahead"] is None else f"{r['wall_ratio']:.2f}"
        lines.append(
            f"{r['peer']:<17}{r['batch_size']:>6}{r['runs']:>5}{r['test_accuracy']:>10.4f}"
            f"{r['samples_per_second']:>17,.0f}{r['wall_seconds']:>9.2f}{r['cpu_seconds']:>8.2f}{sps:>14}{wall:>15}{ahead:>7}"
        )
    return "\n".join(lines)


def available(peers: list[str], python: Path) -> tuple[list[str], dict[str, str]]:
    """The peers that can run, and {peer: why not} for the others."""
    missing = missing_modules(python) if any(p != "dnntrick" for p in peers) else {}
    skipped = {}
    for peer in peers:
        gone = [m for m in NEEDS.get(peer, ()) if m in missing]
        if gone:
            skipped[peer] = "; ".join(f"{m}: not installed ({missing[m]})" for m in gone)
    return [p for p in peers if p not in skipped], skipped


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the rounds, print the table, write the JSON; the results."""
    args = parse_args(argv)
    peers, skipped = available(args.peers, args.peers_python)
    for peer, why in skipped.items():
        print(f"{peer}: skipped, {why}", flush=True)
    results: dict[str, Any] = {
        "machine": {
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "options": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "work"
        },
        "skipped": skipped,
        "warmup_failed": {},
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="dnntrick-peers-") as tmp:
        args.work = Path(tmp)
        spec = SPEC.replace("ROOT", str(args.root)).replace("VAL_SIZE", str(args.val_size))
        (args.work / "peers.yaml").write_text(spec)
        if not args.no_warmup:  # page cache, dnntrick's decoded-data cache, and a check each runs
            for peer in list(peers):
                warm = run_one(peer, args.batches[0], 1, 0, args)
                if "error" in warm:
                    print(f"{peer}: failed in the warm-up run, left out: {warm['error']}")
                    results["warmup_failed"][peer] = warm["error"]
                    peers.remove(peer)
        total = args.rounds * len(args.batches) * len(peers)
        for r in range(args.rounds):
            for batch in args.batches:
                for peer in round_order(peers, r):
                    record = run_one(peer, batch, args.epochs, 42 + r, args)
                    record["round"] = r
                    results["runs"].append(record)
                    done = len(results["runs"])
                    figures = record.get("error") or (
                        f"{record['samples_per_second']:,.0f} samples/s, wall "
                        f"{record['wall_seconds']:.2f} s, test acc {record['test_accuracy']:.4f}"
                    )
                    print(f"[{done}/{total}] round {r} batch {batch} {peer}: {figures}", flush=True)
    results["machine"]["load_average_after"] = list(os.getloadavg())
    results["summary"] = summarize(results["runs"])
    print()
    print(format_table(results["summary"]))
    m = results["machine"]
    print(
        f"{args.rounds} rounds × {args.epochs} epochs, {args.threads} thread(s) each, "
        f"{m['cpus']} CPUs, load average {m['load_average'][0]:.2f} before, "
        f"{m['load_average_after'][0]:.2f} after; train samples/s: the training steps alone "
        "(validation excluded); wall: process start to exit; cpu: the process's user + system time"
    )
    for peer, why in {**skipped, **results["warmup_failed"]}.items():
        print(f"{peer}: not run ({why})")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"every run written to {args.out}")
    return results


if __name__ == "__main__":
    main()
