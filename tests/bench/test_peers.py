"""bench/peers.py without the peers' venv: its standalone loader gives dnntrick's splits, its
options, round order, ratios and table are right, and (integration) the plain-PyTorch peers run
end to end beside dnntrick in the project's venv."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import peers_work
from bench.peers import (
    PEERS,
    available,
    format_table,
    main,
    parse_args,
    parse_result,
    round_order,
    summarize,
    tensorflow_reason,
)
from bench.peers_work import MARKER, load_data
from dnntrick.data.datasets import load_splits
from dnntrick.spec.schema import DataSpec
from tests.conftest import make_tiny_idx


@pytest.mark.parametrize("limit", [None, 50])
def test_loader_gives_dnntrick_splits(tiny_root: Path, limit: int | None):
    mine = load_data(tiny_root, val_size=100, train_limit=limit)
    spec = DataSpec(root=str(tiny_root), val_size=100, train_limit=limit)
    theirs = load_splits(spec)
    assert len(mine["x_train"]) == (limit or 500) and mine["x_train"].dtype == np.float32
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(mine[key], getattr(theirs, key).numpy(), err_msg=key)


def test_loader_reads_raw_idx_as_gz(tiny_root: Path, tmp_path: Path):
    raw = load_data(make_tiny_idx(tmp_path / "raw", gz=False), val_size=100)
    for key, value in load_data(tiny_root, val_size=100).items():
        np.testing.assert_array_equal(raw[key], value, err_msg=key)


def test_options_defaults_quick_and_errors(capsys: pytest.CaptureFixture[str]):
    args = parse_args([])
    assert (args.rounds, args.epochs, args.batches, args.threads) == (3, 3, [50, 200], 1)
    assert args.peers == list(PEERS) and not args.pin and not args.no_warmup
    quick = parse_args(["--quick", "--epochs", "2", "--peers", "dnntrick,keras-tf"])
    assert (quick.rounds, quick.epochs, quick.peers) == (1, 2, ["dnntrick", "keras-tf"])
    for bad, named in (
        (["--peers", "dnntrick,jax"], "unknown jax"),
        (["--batches", "50,x"], "--batches '50,x'"),
        (["--threads", "0"], "at least 1"),
    ):
        with pytest.raises(SystemExit) as stop:
            parse_args(bad)
        assert stop.value.code == 2
        assert named in capsys.readouterr().err


def test_rounds_rotate_so_each_peer_leads_once():
    peers = list(PEERS)
    orders = [round_order(peers, r) for r in range(len(peers))]
    assert sorted(order[0] for order in orders) == sorted(peers)
    assert all(sorted(order) == sorted(peers) for order in orders)
    assert round_order(peers, len(peers)) == peers


def _record(peer: str, batch: int, sps: float, wall: float, acc: float) -> dict:
    return {
        "peer": peer,
        "batch_size": batch,
        "samples_per_second": sps,
        "wall_seconds": wall,
        "cpu_seconds": wall / 2,
        "test_accuracy": acc,
    }


def test_ratios_of_medians_and_the_table():
    records = [
        *(_record("dnntrick", 50, s, w, 0.85) for s, w in ((100, 5), (120, 7), (110, 6))),
        *(_record("lightning", 50, s, w, a) for s, w, a in ((50, 10, 0.8), (60, 8, 0.9))),
        _record("lightning", 50, 1, 1, 0.1) | {"error": "exit 1: boom"},  # failed: left out
        _record("dnntrick", 200, 100, 5, 0.86),
        _record("keras-torch", 200, 200, 4, 0.87),
        _record("keras-tf", 50, 10, 20, 0.8),
    ]
    rows = {(r["peer"], r["batch_size"]): r for r in summarize(records)}
    light = rows["lightning", 50]
    assert light["runs"] == 2 and light["test_accuracy"] == pytest.approx(0.85)
    assert light["samples_per_second"] == 55 and light["wall_seconds"] == 9
    assert light["sps_ratio"] == pytest.approx(2.0) and light["wall_ratio"] == pytest.approx(6 / 9)
    assert light["ahead"] is True
    keras = rows["keras-torch", 200]  # faster and shorter than dnntrick: not ahead
    assert keras["sps_ratio"] == pytest.approx(0.5) and keras["wall_ratio"] == 1.25
    assert keras["ahead"] is False
    table = format_table(list(rows.values())).splitlines()
    assert table[0].split()[:4] == ["peer", "batch", "runs", "test"]
    light_line = next(line for line in table if line.startswith("lightning"))
    expected = "lightning 50 2 0.8500 55 9.00 4.50 2.00 0.67 yes"
    assert light_line.split() == expected.split()
    assert next(line for line in table if line.startswith("keras-torch")).endswith("NO")
    assert {len(line) for line in table} == {len(table[0])}  # fixed columns


def test_results_are_read_from_noisy_output():
    line = MARKER + json.dumps({"samples_per_second": 5.0, "test_accuracy": 0.5})
    noisy = f"GPU available: False\n{line}\n`Trainer.fit` stopped\n"
    assert parse_result("lightning", noisy)["samples_per_second"] == 5.0
    summary = {"train_seconds": 2.0, "samples_per_second": 3.0, "test_accuracy": 0.8, "x": 1}
    assert parse_result("dnntrick", json.dumps(summary, indent=2)) == {
        "train_seconds": 2.0,
        "samples_per_second": 3.0,
        "test_accuracy": 0.8,
    }


def test_peers_without_their_modules_are_skipped_with_the_reason(tmp_path: Path):
    runnable, skipped = available(["dnntrick", "lightning"], tmp_path / "venv" / "bin" / "python")
    assert runnable == ["dnntrick"]
    assert skipped["lightning"].startswith("torch: not installed (no ")
    assert "lightning: not installed" in skipped["lightning"]
    assert "make bench-peers" in skipped["lightning"]
    log = tmp_path / "tensorflow-install.log"
    log.write_text("Looking\nERROR: No matching distribution found for tensorflow-cpu\nmore\n")
    assert tensorflow_reason(log).endswith(
        "ERROR: No matching distribution found for tensorflow-cpu"
    )


def test_peer_script_never_imports_dnntrick():
    source = (Path(__file__).parents[2] / "bench" / "peers_work.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"dnntrick", "bench", "tests"}
    assert "numpy" in imported


@pytest.mark.parametrize("peer", ["torch-dataloader", "torch-preloaded"])
def test_plain_pytorch_peer_learns_and_times_the_steps(
    peer: str, tiny_root: Path, capsys: pytest.CaptureFixture[str]
):
    threads = torch.get_num_threads()
    try:
        argv = ["--peer", peer, "--batch", "20", "--epochs", "2", "--root", str(tiny_root)]
        result = peers_work.main([*argv, "--val-size", "100", "--seed", "3"])
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out == MARKER + json.dumps(result) + "\n"
    assert result["test_accuracy"] > 0.5 and result["val_accuracy"] > 0.5  # chance: 0.1
    assert result["train_samples"] == 2 * 500 and result["threads"] == 1
    assert result["samples_per_second"] == pytest.approx(1000 / result["train_seconds"])


@pytest.mark.integration
def test_runs_beside_dnntrick_in_fresh_processes(tiny_root: Path, tmp_path: Path):
    out = tmp_path / "peers.json"
    argv = ["--quick", "--peers", "torch-preloaded,dnntrick", "--batches", "20"]
    argv += ["--peers-python", sys.executable, "--root", str(tiny_root), "--val-size", "100"]
    results = main([*argv, "--no-warmup", "--pin", "--out", str(out)])  # pinned: one CPU each
    assert json.loads(out.read_text())["summary"] == results["summary"]
    runs = results["runs"]
    assert [r["peer"] for r in runs] == ["torch-preloaded", "dnntrick"]
    assert not [r for r in runs if "error" in r]
    for run in runs:
        assert run["test_accuracy"] > 0.5  # the bars are learnt in one epoch: chance is 0.1
        assert 0 < run["train_seconds"] < run["wall_seconds"]
        assert run["samples_per_second"] == pytest.approx(500 / run["train_seconds"], rel=1e-6)
    dnn, peer = sorted(results["summary"], key=lambda r: r["peer"])
    assert dnn["ahead"] is None and peer["ahead"] is not None
    mine, theirs = runs[1], runs[0]
    assert peer["sps_ratio"] == mine["samples_per_second"] / theirs["samples_per_second"]
    assert peer["wall_ratio"] == mine["wall_seconds"] / theirs["wall_seconds"]
