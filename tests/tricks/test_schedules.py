"""Each schedule's lr sequence against its formula, the lr recorded per epoch, and the spec
checks. Arguments are set away from their defaults so an ignored argument changes the numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.spec.schema import ScheduleSpec, TrainSpec
from dnntrick.training.lr import Scheduler
from dnntrick.tricks.schedules import SCHEDULES
from tests.conftest import tiny_overrides, write_spec

LR0 = 0.1


def lrs(schedule: dict, steps_per_epoch: int = 3, epochs: int = 4) -> list[float]:
    """The lr that Scheduler sets for every step of the run, read back from the optimizer."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    scheduler = Scheduler(ScheduleSpec(**schedule), LR0, steps_per_epoch, epochs, optimizer)
    seen = []
    for step in range(steps_per_epoch * epochs):
        scheduler.before_step(step)
        seen.append(optimizer.param_groups[0]["lr"])
    return seen


def test_exponential_per_step_is_the_seeds_formula():
    got = lrs({"name": "exponential", "decay_rate": 0.5, "period": 4})
    assert got == pytest.approx([LR0 * 0.5 ** (t / 4) for t in range(12)], rel=1e-12)
    seed = lrs({"name": "exponential"}, steps_per_epoch=1000, epochs=30)  # 0.1·0.1^(step/10000)
    assert seed[0] == LR0 and seed[10_000] == pytest.approx(LR0 * 0.1)
    assert seed[-1] == pytest.approx(LR0 * 0.1 ** (29_999 / 10_000))


def test_exponential_per_epoch_and_staircase():
    per_epoch = lrs({"name": "exponential", "decay_rate": 0.1, "period": 2, "unit": "epoch"})
    assert per_epoch == pytest.approx([LR0 * 0.1 ** ((t // 3) / 2) for t in range(12)])
    stairs = lrs({"name": "exponential", "decay_rate": 0.5, "period": 4, "staircase": True})
    assert stairs == pytest.approx([LR0 * 0.5 ** (t // 4) for t in range(12)])


def test_power_is_inverse_time():
    got = lrs({"name": "power", "period": 5})
    assert got == pytest.approx([LR0 / (1 + t / 5) for t in range(12)])
    squared = lrs({"name": "power", "period": 5, "power": 2})
    assert squared == pytest.approx([LR0 / (1 + t / 5) ** 2 for t in range(12)])


def test_piecewise_in_epochs_and_in_steps():
    got = lrs({"name": "piecewise", "boundaries": [1, 3], "values": [0.05, 0.01]})
    assert got == [LR0] * 3 + [0.05] * 6 + [0.01] * 3  # 3 steps per epoch
    steps = lrs({"name": "piecewise", "boundaries": [2], "values": [0.02], "unit": "step"})
    assert steps == [LR0] * 2 + [0.02] * 10


def book_one_cycle(iterations: int, max_rate: float) -> list[float]:
    """The book's OneCycleScheduler (handson-ml2, chapter 11), transcribed."""
    start_rate = max_rate / 10
    last_iterations = iterations // 10 + 1
    half_iteration = (iterations - last_iterations) // 2
    last_rate = start_rate / 1000

    def interpolate(iteration: int, iter1: int, iter2: int, rate1: float, rate2: float) -> float:
        return (rate2 - rate1) * (iteration - iter1) / (iter2 - iter1) + rate1

    rates = []
    for it in range(iterations):
        if it < half_iteration:
            rate = interpolate(it, 0, half_iteration, start_rate, max_rate)
        elif it < 2 * half_iteration:
            rate = interpolate(it, half_iteration, 2 * half_iteration, max_rate, start_rate)
        else:
            rate = interpolate(it, 2 * half_iteration, iterations, start_rate, last_rate)
        rates.append(rate)
    return rates


def test_one_cycle_is_the_books():
    got = lrs({"name": "one_cycle"}, steps_per_epoch=10, epochs=10)
    assert got == pytest.approx(book_one_cycle(100, LR0), rel=1e-12)
    assert max(got) == pytest.approx(LR0) and got[0] == pytest.approx(LR0 / 10)
    custom = lrs(
        {"name": "one_cycle", "start_lr": 0.02, "final_lr": 1e-4, "final_steps": 20}, 10, 10
    )
    assert custom[0] == pytest.approx(0.02) and custom[40] == pytest.approx(LR0)
    assert custom[80] == pytest.approx(0.02) and custom[99] == pytest.approx(
        0.02 + (1e-4 - 0.02) * 19 / 20
    )


def test_cosine_with_warmup():
    got = lrs({"name": "cosine", "warmup": 3, "min_lr": 0.01}, steps_per_epoch=5, epochs=2)
    expected = [LR0 * (t + 1) / 3 for t in range(3)]
    expected += [
        0.01 + (LR0 - 0.01) * (1 + math.cos(math.pi * (t - 3) / 7)) / 2 for t in range(3, 10)
    ]
    assert got == pytest.approx(expected)


def test_performance_cuts_the_lr_after_patience_epochs_without_improvement():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    spec = ScheduleSpec(name="performance", factor=0.5, patience=2, min_delta=0.0)
    scheduler = Scheduler(spec, LR0, 3, 10, optimizer)
    seen = []
    for epoch, val_loss in enumerate([1.0, 0.9, 0.95, 0.92, 0.8, 0.85, 0.81, 0.9, 0.9]):
        scheduler.before_step(epoch * 3)
        seen.append(optimizer.param_groups[0]["lr"])
        scheduler.after_epoch({"val_loss": val_loss})
    # epochs 2-3 (0-based) fail to beat 0.9: cut; 5-6 fail to beat 0.8: cut; 7-8 too: cut
    assert seen == pytest.approx([LR0] * 4 + [LR0 / 2] * 3 + [LR0 / 4] * 2)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR0 / 8)


def test_scheduler_keeps_the_ratio_of_parameter_groups():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": LR0 / 10}], lr=LR0)
    scheduler = Scheduler(ScheduleSpec(name="power", period=1), LR0, 1, 3, optimizer)
    scheduler.before_step(1)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([LR0 / 2, LR0 / 20])


def test_every_schedule_is_tested():
    assert set(SCHEDULES) == {
        "exponential",
        "power",
        "piecewise",
        "performance",
        "one_cycle",
        "cosine",
    }


def test_schedule_spec_errors():
    with pytest.raises(ValueError, match="one value per boundary"):
        ScheduleSpec(name="piecewise", boundaries=[5, 15], values=[0.005])
    with pytest.raises(ValueError, match="must increase"):
        ScheduleSpec(name="piecewise", boundaries=[15, 5], values=[0.005, 0.001])
    with pytest.raises(ValueError, match="'power' does not take decay_rate"):
        ScheduleSpec(name="power", decay_rate=0.1)
    with pytest.raises(ValueError, match="did you mean 'one_cycle'"):
        ScheduleSpec(name="onecycle")
    assert TrainSpec(schedule="one_cycle").schedule == ScheduleSpec(name="one_cycle")


SPEC = """\
name: sched
seed: 1
model: {hidden: [16]}
train:
  batch_size: 100
  optimizer: {name: momentum, lr: 0.1}
  schedule: {name: exponential, decay_rate: 0.5, period: 3}
"""


def test_metrics_record_the_lr_actually_used(tmp_path: Path, tiny_root: Path):
    # 500 training images, batch 100: 5 steps per epoch
    spec = load_spec(write_spec(tmp_path, SPEC), tiny_overrides(tiny_root, 2))
    result = run_spec(spec, out=tmp_path / "runs")
    rows = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    per_step = [0.1 * 0.5 ** (t / 3) for t in range(10)]
    assert [r["lr"] for r in rows] == pytest.approx([per_step[0], per_step[5]], rel=1e-12)
    assert [r["lr_mean"] for r in rows] == pytest.approx(
        [sum(per_step[:5]) / 5, sum(per_step[5:]) / 5], rel=1e-12
    )


def test_resume_mid_epoch_with_a_schedule_and_augmentation_is_bitwise(
    cli, monkeypatch, tmp_path: Path, tiny_root: Path
):
    """The performance schedule's cuts and the augmentation generator are checkpointed."""
    from tests.conftest import RESUME_SPEC, assert_same_run, rows, signal_at

    text = RESUME_SPEC.format(root=tiny_root).replace(
        "val_size: 100}", "val_size: 100, augment: {shift: 2, erase: 0.5}}"
    ) + (
        "  schedule: {name: performance, factor: 0.5, patience: 1, min_delta: 10.0}\n"
    )  # min_delta 10: no epoch after the first counts as better, so each halves the lr
    spec = write_spec(tmp_path, text)
    code, _, err = cli("train", str(spec), "--out", str(tmp_path / "whole"), "-q")
    assert code == 0, err
    [reference] = (tmp_path / "whole").iterdir()
    assert [r["lr"] for r in rows(reference)] == pytest.approx([0.003, 0.003, 0.0015])

    signal_at(monkeypatch, 16, True)  # after step 6 of epoch 2
    code, _, err = cli("train", str(spec), "--out", str(tmp_path / "runs"), "-q")
    monkeypatch.undo()
    [run_dir] = (tmp_path / "runs").iterdir()
    assert code == 130, err
    code, _, err = cli("train", "--resume", str(run_dir), "-q")
    assert code == 0, err
    assert_same_run(reference, run_dir)


def test_a_tensor_lr_is_filled_in_place():
    """Under CUDA graphs the optimizer is capturable and its lr a tensor the graph reads."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=torch.tensor(LR0))
    lr = optimizer.param_groups[0]["lr"]
    Scheduler(ScheduleSpec(name="power", period=1), LR0, 1, 3, optimizer).before_step(1)
    assert optimizer.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(LR0 / 2)


def test_spec_refuses_what_cannot_work(tmp_path: Path):
    from dnntrick.errors import SpecError

    path = write_spec(tmp_path, "data: {val_size: 0}\ntrain: {schedule: performance}\n")
    with pytest.raises(SpecError, match=r"performance watches val_loss, but data\.val_size is 0"):
        load_spec(path)
    assert load_spec(path, ["train.schedule.monitor=train_loss"]).train.schedule.monitor
    graphs = write_spec(
        tmp_path,
        "device: cuda\ndata: {augment: {shift: 1}}\ntrain: {cuda_graphs: true}\n",
        "g.yaml",
    )
    with pytest.raises(SpecError, match=r"set data\.augment: null or train\.cuda_graphs: false"):
        load_spec(graphs)
