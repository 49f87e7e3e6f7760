"""Train one spec end to end: device, data, model, optimizer, loop, run directory.

Everything that can fail on bad input (device, data, model) happens before the run directory is
created, so a run that fails at start-up leaves nothing behind.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnntrick import distributed
from dnntrick.augment import build_augmenter
from dnntrick.checkpoint import FOLDER, Checkpointer, open_resume
from dnntrick.config import dump_spec
from dnntrick.data import Splits, load_splits
from dnntrick.diagnostics import Recorder
from dnntrick.errors import DivergedError, UsageError
from dnntrick.guard import set_determinism, signals_caught
from dnntrick.limits import Sizes, check_start
from dnntrick.loop import evaluate, fit
from dnntrick.model import build_model, count_parameters
from dnntrick.optimizers import build_optimizer
from dnntrick.regularization import describe, mc_evaluate
from dnntrick.report import Reporter
from dnntrick.rundir import git_sha, make_run_dir, versions
from dnntrick.spec import Spec, default_init


@dataclass
class RunResult:
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path
    model: torch.nn.Module


@dataclass
class Prepared:
    """What the loop trains once a prepare hook (transfer, pretraining) has set the model up.

    `model` may be a suffix of the built model (sharing its layers) and `data` its cached inputs.
    """

    model: torch.nn.Module
    data: Splits
    summary: dict[str, Any] = field(default_factory=dict)  # extra keys for summary.json
    after_epoch: Callable[[int, torch.optim.Optimizer], None] | None = None


Prepare = Callable[[Spec, torch.nn.Module, Splits, Reporter], Prepared]


def spec_prepare(spec: Spec) -> Prepare | None:
    """The prepare hook that the spec's `transfer:` or `pretrain:` section asks for, if any."""
    if spec.transfer is not None:
        from dnntrick.transfer import prepare_transfer

        return prepare_transfer
    if spec.pretrain is not None:
        from dnntrick.pretrain import prepare_pretrained

        return prepare_pretrained
    return None


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu. Asking for an absent device is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r}: CUDA is not available here; use device: cpu (or auto)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name!r}: MPS is not available here; use device: cpu")
    return device


def _speed_flags(spec: Spec) -> str:
    flags: list[str] = [spec.train.precision] if spec.train.precision != "fp32" else []
    flags += ["cuda graphs"] if spec.train.cuda_graphs else []
    return f" ({', '.join(flags)})" if flags else ""


def run_spec(
    spec: Spec,
    out: Path | str = "runs",
    reporter: Reporter | None = None,
    source: str | None = None,
    overrides: list[str] | None = None,
    prepare: Prepare | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    resume: Path | None = None,
    force: bool = False,
) -> RunResult:
    """Train `spec` and write its run directory under `out`, or continue the run in `resume`
    from its last checkpoint (`force`: even if the spec differs from the checkpoint's).

    `prepare` (default: the spec's transfer/pretrain hook) runs after the model is built and
    before the run directory exists, so its start-up errors leave nothing behind. `arrays`: the
    data set's decoded arrays (as `load_arrays` returns them) when the caller has them already,
    e.g. from Ray's object store; else they are read from disk.
    """
    reporter = distributed.rank_reporter(reporter or Reporter())  # torchrun: rank 0 alone
    overrides = list(overrides or [])
    started = time.perf_counter()
    spec_yaml = dump_spec(spec)
    loaded = open_resume(resume, spec_yaml, force) if resume is not None else None
    set_determinism(spec.train.deterministic)  # before CUDA starts (cuBLAS reads its env once)
    device = distributed.local_device(resolve_device(spec.device))
    if spec.train.cuda_graphs and device.type != "cuda":  # device: auto found no GPU
        raise UsageError(
            f"train.cuda_graphs: needs a CUDA device (device {spec.device!r} is {device}); "
            "set train.cuda_graphs: false"
        )
    torch.manual_seed(spec.seed)  # weights (and any dropout) draw from torch's global RNG
    data = load_splits(spec.data, device, arrays)
    n = len(data.x_train), len(data.x_val), len(data.x_test)
    sizes = Sizes(*n, data.in_features, data.n_classes)
    start_warnings = check_start(spec, sizes, str(device))  # memory, time, lr: before allocating
    model = build_model(spec.model, data.in_features, data.n_classes).to(device)
    prepare = prepare or spec_prepare(spec)
    prepared = prepare(spec, model, data, reporter) if prepare else Prepared(model, data)
    trainable = [p for p in prepared.model.parameters() if p.requires_grad]  # frozen ones: out
    optimizer = build_optimizer(
        spec.train.optimizer, trainable, device.type, capturable=spec.train.cuda_graphs
    )
    generator = torch.Generator().manual_seed(spec.seed)  # data order: its own stream
    distributed.check(spec.train, len(prepared.data.x_train))
    augment = build_augmenter(
        spec.data.augment, data.in_features, spec.seed, device, data.pixel_mean, data.pixel_std
    )

    if loaded is None:
        run = distributed.main_run_dir(lambda: make_run_dir(out, spec.name))  # rank 0's
        run.write_spec(spec_yaml, source, overrides)
    else:  # the same folder: metrics continue from the checkpoint's rows
        run = distributed.main_run_dir(lambda: Path(resume or "."))
        run.restore_metrics(loaded.state["result"]["history"])
        reporter.message(f"resuming {loaded.path} ({loaded.describe()})")
    for line in start_warnings:
        reporter.message(line)
    parameters = count_parameters(model)
    tricks = describe(spec)
    reporter.start(
        spec.name,
        {
            "data": f"{spec.data.dataset} {len(data.x_train)}/{len(data.x_val)}/{len(data.x_test)}",
            "model": "-".join(str(h) for h in spec.model.hidden) + f" {spec.model.activation.name}"
            f" ({default_init(spec.model)})",
            "optimizer": f"{spec.train.optimizer.name} lr {spec.train.optimizer.lr:g}"
            + (f" {spec.train.schedule.name}" if spec.train.schedule else ""),
            "device": str(device) + _speed_flags(spec),
            "parameters": f"{parameters:,}",
            **distributed.describe(),
            **({"tricks": tricks} if tricks else {}),
        },
    )

    done = 0  # optimizer steps already taken by a resumed run: the recorder counts on from there
    if loaded is not None:
        per_epoch = -(-len(prepared.data.x_train) // spec.train.batch_size)
        done = (loaded.position.epoch - 1) * per_epoch + loaded.position.step
    # None when off; the hooks go on the model that trains (the head, with cached frozen layers)
    recorder = Recorder.attach(prepared.model, optimizer, spec.train.diagnostics, done)

    def end_epoch(row: dict[str, Any]) -> None:
        if recorder is not None:
            row["diagnostics"] = recorder.flush()  # one host read per epoch
        run.append_metrics(row)
        if prepared.after_epoch is not None:
            prepared.after_epoch(row["epoch"], optimizer)

    if loaded is not None and prepared.after_epoch is not None:  # e.g. unfreezing: redo it
        for epoch in range(1, loaded.position.epoch):
            prepared.after_epoch(epoch, optimizer)
    distributed.seed_ranks(spec.seed)
    folder = run.path / FOLDER if distributed.is_main() else None  # torchrun: rank 0 writes
    keeper = Checkpointer(folder, spec_yaml, spec.train.checkpoint_every)
    try:
        with signals_caught(f"dnntrick train --resume {shlex.quote(str(run.path))}"):
            fitted = fit(
                prepared.model,
                optimizer,
                prepared.data,
                spec.train,
                generator,
                reporter,
                on_epoch_end=end_epoch,
                keeper=keeper,
                resume=loaded,
                augment=augment,
            )
    except DivergedError:
        if recorder is not None:  # the per-layer verdicts explain the divergence
            recorder.finish(spec, reporter)
        raise
    diagnosis = recorder.finish(spec, reporter) if recorder is not None else None  # unhooks
    test = prepared.data
    test_loss, test_accuracy = evaluate(
        prepared.model, test.x_test, test.y_test, spec.train.eval_batch_size
    )
    run.save_weights(model.state_dict(), metadata={"name": spec.name})
    summary = {
        "name": spec.name,
        "dataset": spec.data.dataset,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "best_val_accuracy": fitted.best_val_accuracy,
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history),
        "stopped_early": fitted.stopped_early,
        "train_seconds": fitted.train_seconds,
        "samples_per_second": fitted.train_samples / max(fitted.train_seconds, 1e-9),
        "wall_seconds": time.perf_counter() - started,
        "parameters": parameters,
        "device": str(device),
        **distributed.describe(),
        "seed": spec.seed,
        "versions": versions(),
        "git_sha": git_sha(),
        "spec_file": source,
        "overrides": overrides,
        **prepared.summary,
        "run_dir": str(run.path),
    }
    if spec.train.mc_dropout:  # the same weights, the softmax averaged over dropout samples
        summary["mc_dropout_samples"] = spec.train.mc_dropout.samples
        summary["mc_test_loss"], summary["mc_test_accuracy"] = mc_evaluate(
            model,
            data.x_test,
            data.y_test,
            spec.train.eval_batch_size,
            spec.train.mc_dropout.samples,
            seed=spec.seed,
        )
    if diagnosis is not None:
        summary["diagnosis"] = diagnosis
    if loaded is not None and loaded.state["spec"] != spec_yaml:  # --force with changes
        run.write_spec(spec_yaml, source, overrides)
    run.write_summary(summary)
    reporter.finish(summary)
    return RunResult(summary, fitted.history, run.path, model)
