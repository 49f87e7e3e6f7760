"""What a run will cost, checked before anything is allocated: memory, time, and a learning rate
that stays a positive finite number at every step.

The estimates are deliberately rough (within a factor of ~2) and err on the side of running:
memory counts float32 parameters, their gradients, the optimizer's per-parameter state, one
training batch's saved activations, the data on the device and an evaluation batch; time counts
~6 FLOPs per parameter per training image (forward 2, backward 4) at an assumed throughput. A run
is refused only when it cannot fit or would take longer than a year; a day or more is a warning.
Pure Python: `dnntrick check` uses it without torch (with the built-in data sets' nominal sizes).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.errors import UsageError

if TYPE_CHECKING:
    from dnntrick.spec.schema import Spec, TrainSpec

FLOAT = 4  # bytes of a float32
# (training images, test images, features) of the built-in data sets (all 28×28, 60k/10k)
NOMINAL = {name: (60_000, 10_000, 784) for name in ("mnist", "fashion-mnist", "kmnist")}
# per-parameter state tensors of each optimizer (momentum buffer, moments, accumulators)
OPTIMIZER_STATES = {
    "sgd": 0,
    "momentum": 1,
    "nesterov": 1,
    "adagrad": 1,
    "rmsprop": 1,
    "adam": 2,
    "adamax": 2,
    "nadam": 2,
    "adamw": 2,
}
# assumed FLOP/s and per-step overhead (s): a fast estimate, not a benchmark
THROUGHPUT = {"cpu": (2e10, 1e-4), "cuda": (2e12, 3e-5), "mps": (2e11, 1e-4)}
EPOCH_OVERHEAD_S = 0.02  # evaluation launch, the metrics row and the checkpoint's fsyncs
WARN_SECONDS = 24 * 3600
REFUSE_SECONDS = 365 * 24 * 3600


@dataclass(frozen=True)
class Sizes:
    """What the run trains on: images in each split and features per image."""

    train: int
    val: int
    test: int
    features: int
    classes: int


def nominal_sizes(spec: Spec) -> Sizes | None:
    """The sizes of a built-in data set after val_size and train_limit (data.classes keeps
    about k/10 of each split); None for a data set whose size only its files tell."""
    if spec.data.dataset not in NOMINAL:
        return None
    train, test, features = NOMINAL[spec.data.dataset]
    classes = len(spec.data.classes) if spec.data.classes else 10
    val = min(spec.data.val_size, train)
    train -= val
    if spec.data.classes:
        share = classes / 10
        train, val, test = (math.ceil(n * share) for n in (train, val, test))
    if spec.data.train_limit is not None:
        train = min(train, spec.data.train_limit)
    return Sizes(train, val, test, features, classes)


def parameters(spec: Spec, sizes: Sizes) -> int:
    """Parameters of the MLP (with biases; batch norm's scale and shift)."""
    widths = [sizes.features, *spec.model.hidden, sizes.classes]
    count = sum(a * b + b for a, b in itertools.pairwise(widths))
    if spec.model.norm is not None:
        count += 2 * sum(widths[1:])
    return count


def optimizer_states(spec: TrainSpec) -> int:
    o = spec.optimizer
    extra = int(bool(o.amsgrad)) + int(bool(o.centered)) + int(bool(o.momentum))
    return OPTIMIZER_STATES.get(o.name, 2) + (
        extra if o.name in ("rmsprop", "adam", "adamw") else 0
    )


def memory_parts(spec: Spec, sizes: Sizes) -> dict[str, int]:
    """Bytes of each part of a run on its training device, by name."""
    p = parameters(spec, sizes)
    units = sum(spec.model.hidden) + sizes.classes
    widest = max([sizes.features, *spec.model.hidden, sizes.classes])
    batch = min(spec.train.batch_size, max(sizes.train, 1))
    # per unit and image, saved for backward: pre-activation, output, their gradients, and
    # batch norm's normalized copy and dropout's mask when present
    saved = 4 + 2 * (spec.model.norm is not None) + (spec.model.dropout is not None)
    evaluated = min(spec.train.eval_batch_size, max(sizes.train, sizes.val, sizes.test))
    copies = 1 + (spec.train.early_stopping is not None) + (spec.pretrain is not None)
    images = sizes.train + sizes.val + sizes.test
    return {
        "parameters": p * FLOAT * copies,  # + the best epoch's copy; + the pretraining decoder
        "gradients": p * FLOAT,
        "optimizer state": p * FLOAT * optimizer_states(spec.train),
        "a batch's activations": batch * (units * saved + 2 * sizes.features) * FLOAT,
        "an evaluation batch": evaluated * 3 * widest * FLOAT,
        "data": images * (sizes.features * FLOAT + 8),
    }


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**29 else f"{n / 2**20:,.1f} MiB"


def available_ram() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup's limit."""
    free: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return free


def check_memory(spec: Spec, sizes: Sizes, device: str, free: int | None, where: str) -> None:
    """Refuse a run whose estimate exceeds `free` bytes of `where` (e.g. 'RAM', 'cuda:0')."""
    parts = memory_parts(spec, sizes)
    need = sum(parts.values())
    if free is None or need <= free:
        return
    detail = ", ".join(f"{name} {gib(n)}" for name, n in parts.items() if n >= 2**20)
    raise UsageError(
        f"the run needs about {gib(need)} on {device} ({detail}) but {where} has "
        f"{gib(max(free, 0))} available; use fewer or narrower layers (model.hidden), a smaller "
        "train.batch_size or train.eval_batch_size, or fewer images (data.train_limit)"
    )


def check_host_memory(spec: Spec, sizes: Sizes, device: str) -> None:
    """What must fit in RAM whatever the device: the model is built and initialized on the CPU
    and the data passes through it. On a CPU device, everything."""
    free = available_ram()
    if device == "cpu":
        check_memory(spec, sizes, "cpu", free, "RAM")
        return
    p = parameters(spec, sizes) * FLOAT
    data = (sizes.train + sizes.val + sizes.test) * sizes.features * FLOAT
    if free is not None and p + data > free:
        raise UsageError(
            f"the model's {parameters(spec, sizes):,} parameters ({gib(p)}) and the data "
            f"({gib(data)}) are built in RAM first, which has {gib(max(free, 0))} available; "
            "use fewer or narrower layers (model.hidden)"
        )


def estimate_seconds(spec: Spec, sizes: Sizes, device_type: str) -> float:
    """Rough wall time of the whole run on a device of this type."""
    flops, overhead = THROUGHPUT.get(device_type, THROUGHPUT["cpu"])
    p = parameters(spec, sizes)
    t = spec.train
    steps = -(-sizes.train // t.batch_size) * t.epochs
    work = t.epochs * (sizes.train * 6 * p + sizes.val * 2 * p)
    work += sizes.test * 2 * p * (1 + (t.mc_dropout.samples if t.mc_dropout else 0))
    if spec.pretrain is not None:
        images = min(spec.pretrain.images or sizes.train, sizes.train)
        layers = len(spec.model.hidden) if spec.pretrain.mode == "greedy" else 1
        work += spec.pretrain.epochs * layers * images * 12 * p
        steps += spec.pretrain.epochs * layers * -(-images // spec.pretrain.batch_size)
    return work / flops + steps * overhead + t.epochs * EPOCH_OVERHEAD_S


def duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds / 60:,.0f} minutes"


def check_time(spec: Spec, sizes: Sizes, device_type: str) -> str | None:
    """Refuse a run estimated at more than a year; a warning line for one of more than a day."""
    seconds = estimate_seconds(spec, sizes, device_type)
    if seconds < WARN_SECONDS:
        return None
    what = (
        f"{spec.train.epochs:,} epochs of {sizes.train:,} images with "
        f"{parameters(spec, sizes):,} parameters would take about {duration(seconds)} on "
        f"{device_type} (a rough estimate)"
    )
    if seconds > REFUSE_SECONDS:
        raise UsageError(f"train.epochs: {what}; lower train.epochs or the model's size")
    return f"warning: {what}"


def check_schedule(spec: TrainSpec, steps_per_epoch: int) -> None:
    """Refuse a schedule whose lr is not a positive, finite, normal float at some step of the
    run. Every schedule in the registry is monotone between its breakpoints (warm-up end, the
    1cycle halves, piecewise boundaries), so the ends, the breakpoints and an even sample of the
    steps find the extremes without evaluating 10^9 steps."""
    schedule = spec.schedule
    if schedule is None:
        return
    if schedule.name == "performance":
        _check_performance(spec)
        return
    total = spec.epochs * steps_per_epoch
    if schedule.final_steps is not None and schedule.final_steps >= total:
        raise UsageError(
            f"train.schedule.final_steps: {schedule.final_steps:,} is not less than the run's "
            f"{total:,} steps, so 1cycle has no cycle before its final drop; lower it or leave "
            "it unset (a tenth of the run)"
        )
    from functools import partial

    from dnntrick.tricks.schedules import Args, lr_at

    rate = partial(
        lr_at,
        Args(schedule, spec.optimizer.lr),
        steps_per_epoch=steps_per_epoch,
        epochs=spec.epochs,
    )  # pure Python: `check` imports no torch
    good = -1  # the last step seen with a usable lr
    for step in _candidate_steps(spec, steps_per_epoch, total):
        if _lr_problem(rate, step) is None:
            good = step
            continue
        while step - good > 1:  # monotone between candidates: bisect to the first bad step
            middle = (good + step) // 2
            good, step = (middle, step) if _lr_problem(rate, middle) is None else (good, middle)
        raise UsageError(
            f"train.schedule: {schedule.name}'s lr {_lr_problem(rate, step)} at step "
            f"{step:,} (epoch {step // steps_per_epoch + 1} of {spec.epochs:,}); it must stay a "
            "positive finite number over the whole run: change the schedule's parameters or "
            "lower train.epochs"
        )


def _lr_problem(rate: Any, step: int) -> str | None:
    try:
        lr = rate(step)
    except (OverflowError, ZeroDivisionError):
        return "overflows"
    if math.isnan(lr):
        return "is not a number"
    if math.isinf(lr):
        return "overflows"
    if lr < 0:
        return f"turns negative ({lr:.3g})"
    if lr < sys.float_info.min:
        return f"underflows ({lr:.3g})"
    return None


def _candidate_steps(spec: TrainSpec, per_epoch: int, total: int) -> list[int]:
    if total <= 20_000:
        return list(range(total))
    from dnntrick.tricks.schedules import SCHEDULES

    s = spec.schedule
    assert s is not None
    unit = s.unit or SCHEDULES[s.name].defaults.get("unit", "step")
    scale = per_epoch if unit == "epoch" else 1
    marks = [*(s.boundaries or []), s.warmup or 0]
    last = s.final_steps if s.final_steps is not None else total // 10 + 1
    half = max((total - last) // 2, 1)
    marks_steps = [m * scale + d for m in marks for d in (-1, 0, 1)] + [half, 2 * half]
    even = [total * i // 10_000 for i in range(10_000)]
    steps = {*range(1000), *range(total - 1000, total), *even, *marks_steps}
    return sorted(s for s in steps if 0 <= s < total)


def _check_performance(spec: TrainSpec) -> None:
    """Performance scheduling can only cut the lr, once per `patience` epochs at most: its
    lowest possible lr is max(lr0 · factor^cuts, min_lr)."""
    s = spec.schedule
    assert s is not None
    factor, patience = s.factor or 0.1, s.patience or 10
    if s.min_lr:
        return
    cuts = spec.epochs // patience
    # log10 of the lr after each cut: the first cut that leaves the normal floats
    floor = math.log10(sys.float_info.min)
    per_cut = math.log10(factor)
    needed = math.floor((floor - math.log10(spec.optimizer.lr)) / per_cut) + 1
    if needed <= cuts:
        raise UsageError(
            f"train.schedule: performance may cut the lr {cuts:,} times (every {patience} epochs "
            f"of {spec.epochs:,}), and after {needed:,} cuts by {factor:g} it underflows to 0; "
            "set min_lr (e.g. 1e-6) or a larger factor"
        )


def check_start(spec: Spec, sizes: Sizes, device: str) -> list[str]:
    """Everything above for a run about to start on `device` (torch is imported by then):
    raises UsageError, or returns warning lines for the reporter."""
    check_host_memory(spec, sizes, device)
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        check_memory(spec, sizes, device, free, device)
    check_schedule(spec.train, -(-sizes.train // spec.train.batch_size))
    warnings = [w] if (w := check_time(spec, sizes, device.split(":")[0])) else []
    if spec.train.batch_size > sizes.train:
        warnings.append(
            f"warning: train.batch_size {spec.train.batch_size:,} is more than the "
            f"{sizes.train:,} training images: every step uses all of them"
        )
    return warnings


def check_spec(spec: Spec) -> list[str]:
    """The checks `dnntrick check` can make without torch or the data: with the built-in data
    sets' nominal sizes, against this machine's RAM, at the speed of the spec's device type (auto:
    a GPU if the driver lists one); the run itself checks again on its real device and data."""
    sizes = nominal_sizes(spec)
    if sizes is None:
        return []
    if sizes.train == 0:  # the run's load_splits says the same, with the files' own count
        raise UsageError(
            f"data.val_size: {spec.data.val_size} leaves no training images (the training set "
            f"has {NOMINAL[spec.data.dataset][0]:,}); use a smaller value"
        )
    device = _device_type(spec.device)
    check_host_memory(spec, sizes, "cpu" if device == "cpu" else "gpu")
    check_schedule(spec.train, -(-sizes.train // spec.train.batch_size))
    if spec.data.augment is not None and spec.data.augment.shift >= math.isqrt(sizes.features):
        side = math.isqrt(sizes.features)
        raise UsageError(
            f"data.augment.shift: {spec.data.augment.shift} pixels moves a {side}×{side} image "
            f"entirely out of view; use at most {side - 1} (a few pixels, e.g. 2)"
        )
    warning = check_time(spec, sizes, device)
    return [warning] if warning else []


def _device_type(name: str) -> str:
    """The spec's device type without importing torch: `auto` is cuda when the NVIDIA driver
    lists a GPU (/proc/driver/nvidia/gpus), else cpu."""
    if name != "auto":
        return name.split(":")[0]
    gpus = Path("/proc/driver/nvidia/gpus")
    return "cuda" if gpus.is_dir() and any(gpus.iterdir()) else "cpu"
