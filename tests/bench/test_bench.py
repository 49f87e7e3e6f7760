"""The benchmark's three loops must do the same computation, so that their speeds compare fairly:
same initial weights, same batches in the same order, same losses step by step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.loops import DnntrickLoop, Setup, TensorLoop, TorchvisionLoop, build_loops
from dnntrick.data.datasets import load_splits
from tests.conftest import REPO


@pytest.fixture
def setup(tiny_root: Path) -> Setup:
    # 600 training images - 100 validation = 500 = 7 batches of 70 + one of 10 per epoch
    return Setup(hidden=(32, 16), batch_size=70, root=str(tiny_root), val_size=100)


@pytest.mark.integration
def test_three_loops_follow_the_same_loss_trajectory(setup: Setup, tmp_path: Path):
    loops = build_loops(setup, workdir=tmp_path)
    assert [type(loop) for loop in loops] == [TorchvisionLoop, TensorLoop, DnntrickLoop]
    # one batch at a time for 2 epochs and a bit (crosses epoch ends and their partial batches),
    # then chunks of 3 batches as the timing uses them
    chunks = [1] * 17 + [3] * 4
    trajectories = [[loop.run(k) for k in chunks] for loop in loops]
    a, b, c = (torch.tensor(t, dtype=torch.float64) for t in trajectories)
    assert a[0] > a[-1] + 0.3  # it learns: the comparison is not between three flat lines
    # (c)'s ELU (dnntrick.tricks.elu) rounds exp(x) - 1 where torch rounds expm1(x): ≤ 1.2e-7 apart
    # per activation, so (c) gets a looser tolerance than the two plain-torch loops
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, b, rtol=1e-4, atol=1e-5)
    weights = [[p.detach() for p in loop.model.parameters()] for loop in loops]
    for pa, pb, pc in zip(*weights, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pc, pb, rtol=1e-4, atol=1e-5)


def test_loops_start_from_the_same_weights_and_differ_with_the_seed(setup: Setup, tmp_path: Path):
    splits = load_splits(setup.spec().data)
    first = [p.detach().clone() for p in TensorLoop(setup, splits).model.parameters()]
    dnn = [p.detach().clone() for p in DnntrickLoop(setup, splits).model.parameters()]
    for x, y in zip(first, dnn, strict=True):
        assert torch.equal(x, y)
    other = TensorLoop(Setup(**{**setup.__dict__, "seed": 7}), splits)
    assert not torch.equal(next(other.model.parameters()), first[0])


def test_dnntrick_loop_runs_the_production_step(setup: Setup):
    from dnntrick.training.step import EagerStep

    loop = DnntrickLoop(setup, load_splits(setup.spec().data))
    assert type(loop.step) is EagerStep
    before = loop.model.hidden1.weight.detach().clone()
    loop.run(2)
    assert not torch.equal(before, loop.model.hidden1.weight)


def test_slow_spell_probe_restores_threads_and_classifies():
    from bench.throughput import CLEAN_SPEEDUP, is_clean, parallel_speedup

    threads = torch.get_num_threads()
    assert parallel_speedup(ops=4, samples=2) > 0
    assert torch.get_num_threads() == threads  # the probe leaves torch as it found it
    assert is_clean(CLEAN_SPEEDUP, 2) and not is_clean(0.8, 2)
    assert is_clean(0.5, 1)  # one thread: nothing to slow down


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--single-thread", "--no-single-thread"])
def test_single_thread_table_follows_its_flag(flag: str, fashion_root: Path, tmp_path: Path):
    """`python -m bench` end to end, kept small: the one-thread table is there unless
    --no-single-thread (with 2 threads; on one thread there is nothing to add)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    args = [
        "--root", str(fashion_root), "--widths", "32-16", "--batches", "500", "--samples", "500",
        "--repeats", "1", "--train-epochs", "1", "--train-repeats", "1", "--threads", "2",
        "--out", str(out), flag,
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO, capture_output=True, text=True, check=False,
        env={**__import__("os").environ, "DNNTRICK_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert len(results["throughput"]) == 1
    assert ("throughput_one_thread" in results) == (flag == "--single-thread")
    if flag == "--single-thread":
        assert results["throughput_one_thread"][0]["threads"] == 1


def test_busy_load_starts_and_kills_its_processes():
    from bench.threads import busy_load

    with busy_load(2) as pids:
        assert len(pids) == 2
        for pid in pids:
            assert Path(f"/proc/{pid}").exists()
    for pid in pids:  # killed and reaped: gone from the process table
        assert not Path(f"/proc/{pid}").exists()


def test_threads_table_has_fixed_columns_and_ratios():
    from bench.threads import table

    def part(load: float, rates: list[tuple[int, float, float]]) -> dict:
        rows = [
            {"batch_size": b, "samples_per_second": {"1": one, "2": two}} for b, one, two in rates
        ]
        return {"load_average": load, "rows": rows}

    results = {
        "thread_counts": [1, 2],
        "quiet": part(0.5, [(50, 30_000.0, 27_000.0), (200, 40_000.0, 60_000.0)]),
        "loaded": part(4.0, [(50, 15_000.0, 1_500.0)]),
    }
    lines = table(results).splitlines()
    assert lines[0].split() == ["machine", "batch", "1", "thread", "2", "threads", "2/1", "loadavg"]
    assert lines[1].split() == ["quiet", "50", "30,000", "27,000", "0.90", "0.50"]
    assert lines[2].split() == ["quiet", "200", "40,000", "60,000", "1.50", "0.50"]
    assert lines[3].split() == ["loaded", "50", "15,000", "1,500", "0.10", "4.00"]
    assert len({len(line) for line in lines}) == 1  # fixed columns


@pytest.mark.integration
def test_command_seconds_times_the_cli_and_refuses_a_failing_command():
    from bench.overhead import check_seconds, command_seconds

    timed = check_seconds(2)
    assert len(timed["all"]) == len(timed["all_cpu"]) == 2
    assert timed["cpu_median"] > 0 and 0 < timed["median"] < 60
    with pytest.raises(RuntimeError, match=r"dnntrick check nope\.yaml failed"):
        command_seconds(["check", "nope.yaml"], 1)
