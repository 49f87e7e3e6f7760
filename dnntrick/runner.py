"""Train one spec end to end: build (training/build.py) → fit (training/loop.py) → summarize →
run directory. Above training/: it adds the reuse/ hooks (transfer, pretraining) and diagnosis/
hooks (train.diagnostics) to a run.

Everything that can fail on bad input (device, data, model) happens in `build`, and a resumed
checkpoint is restored, before the run directory is created or touched, so a run that fails at
start-up leaves nothing behind and a refused resume leaves its folder as it was. Signals are
caught over the whole run; summary.json, written last, is the commit point of a finished run.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnntrick.data import own
from dnntrick.diagnosis.hooks import Recorder
from dnntrick.errors import DivergedError, Interrupted
from dnntrick.spec.config import dump_spec
from dnntrick.spec.schema import Spec, default_init
from dnntrick.training import distributed
from dnntrick.training.build import Built, Prepare, build, resolve_threads, torch_threads
from dnntrick.training.checkpoint import FOLDER, Checkpointer, Loaded
from dnntrick.training.logs import RunLogs
from dnntrick.training.loop import FitResult, evaluate, fit, mc_evaluate
from dnntrick.training.model import count_parameters
from dnntrick.training.report import Reporter
from dnntrick.training.resume import open_resume
from dnntrick.training.rundir import SUMMARY, RunDir, git_sha, make_run_dir, versions
from dnntrick.training.signals import INTERRUPT, signals_caught, test_point
from dnntrick.tricks.regularization import describe


@dataclass
class RunResult:
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path
    model: torch.nn.Module


def spec_prepare(spec: Spec) -> Prepare | None:
    """The prepare hook that the spec's `transfer:` or `pretrain:` section asks for, if any."""
    if spec.transfer is not None:
        from dnntrick.reuse.transfer import prepare_transfer

        return prepare_transfer
    if spec.pretrain is not None:
        from dnntrick.reuse.pretrain import prepare_pretrained

        return prepare_pretrained
    return None


def _speed_flags(spec: Spec) -> str:
    threads = torch.get_num_threads()  # what this run got (build.resolve_threads)
    flags = [f"{threads} thread{'s' if threads > 1 else ''}"]
    flags += [spec.train.precision] if spec.train.precision != "fp32" else []
    flags += ["cuda graphs"] if spec.train.cuda_graphs else []
    return f" ({', '.join(flags)})"


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
    threads: int | None = None,
) -> RunResult:
    """Train `spec` and write its run directory under `out`, or continue the run in `resume`
    from its last checkpoint (`force`: even if the spec differs from the checkpoint's).

    Every check that can refuse (the spec against the checkpoint, the data, the model, whether
    the checkpoint fits the model and optimizer) runs before anything in a run directory is
    written, so a refused resume leaves the folder byte for byte as it was. SIGINT/SIGTERM are
    caught over the whole call (training/signals.py): whenever one arrives, Interrupted is raised
    at the next safe point and the folder is resumable from its last checkpoint, or finished
    (summary.json, written last). `prepare` (default: the spec's transfer/pretrain hook) runs
    after the model is built. `arrays`: the data set's decoded arrays (as `load_arrays` returns
    them) when the caller has them already, e.g. from Ray's object store; else read from disk.
    `threads`: the torch thread count `train.threads: auto` keeps (compare's workers pass
    theirs; build.resolve_threads); torch's count is put back when the run ends.
    """
    with torch_threads(resolve_threads(spec.train.threads, threads)):
        return _run_spec(spec, out, reporter, source, overrides, prepare, arrays, resume, force)


def _run_spec(
    spec: Spec,
    out: Path | str,
    reporter: Reporter | None,
    source: str | None,
    overrides: list[str] | None,
    prepare: Prepare | None,
    arrays: dict[str, np.ndarray] | None,
    resume: Path | None,
    force: bool,
) -> RunResult:
    reporter = distributed.rank_reporter(reporter or Reporter())  # torchrun: rank 0 alone
    overrides = list(overrides or [])
    started = time.perf_counter()
    spec_yaml = dump_spec(spec)
    with signals_caught() as interrupt:
        interrupt.stage = "starting"
        loaded = open_resume(resume, spec_yaml, force) if resume is not None else None
        built = build(spec, reporter, arrays, prepare or spec_prepare(spec))
        distributed.check(spec.train, len(built.prepared.data.x_train))
        logs = RunLogs(spec.train.log if distributed.is_main() else [])  # no tensorboard: here
        test_point("built")
        interrupt.check()  # e.g. while torch imported or the data decoded: nothing written
        keeper = Checkpointer(None, spec_yaml, spec.train.checkpoint_every)
        opened: list[RunDir] = []

        def open_run() -> RunDir:
            """The first write into a run directory: fit calls it once the checkpoint is
            restored into the model and optimizer, the last check that can refuse."""
            interrupt.stage = "training"
            if loaded is None:
                run = distributed.main_run_dir(lambda: make_run_dir(out, spec.name))  # rank 0's
                run.write_spec(spec_yaml, source, overrides)
            else:  # the same folder: metrics continue from the checkpoint's rows
                run = distributed.main_run_dir(lambda: Path(resume or "."))
                run.restore_metrics(loaded.state["result"]["history"])
                if loaded.state["spec"] != spec_yaml:  # --force: the run goes on with this spec
                    run.write_spec(spec_yaml, source, overrides)
                reporter.message(f"resuming {loaded.path} ({loaded.describe()})")
            opened.append(run)
            interrupt.run_dir = run.path
            interrupt.hint = f"; resume with: dnntrick train --resume {shlex.quote(str(run.path))}"
            keeper.open(run.path / FOLDER if distributed.is_main() else None)  # rank 0 writes
            logs.open(run.path, run.rows)  # metrics.csv, tensorboard/ (train.log), same rows
            for line in built.warnings:  # start-up warnings (a run of days, a batch too big)
                reporter.message(line)
            reporter.start(spec.name, _header(built))
            test_point("opened")
            return run

        try:
            fitted, diagnosis = train_built(built, open_run, reporter, keeper, loaded, logs)
            run = opened[0]
            interrupt.stage = "finishing"
            summary = _finish(built, fitted, run, logs, keeper, started, source, overrides)
            if diagnosis is not None:
                summary["diagnosis"] = diagnosis
            run.write_summary(summary)  # the commit point: from here on the run is finished
            test_point("committed")
        except (DivergedError, Interrupted) as err:
            if opened and not (opened[0].path / SUMMARY).exists():  # a finished run stays so
                status = "diverged" if isinstance(err, DivergedError) else "interrupted"
                opened[0].write_stopped(status, str(err))  # for `dnntrick runs`
            logs.close()
            raise
        interrupt.stage = "finished"
        interrupt.check()  # a signal during the commit write: say so, exit 130/143
        test_point("finished")
        reporter.finish(summary)
        return RunResult(summary, fitted.history, run.path, built.model)


def _finish(
    built: Built,
    fitted: FitResult,
    run: RunDir,
    logs: RunLogs,
    keeper: Checkpointer,
    started: float,
    source: str | None,
    overrides: list[str],
) -> dict[str, Any]:
    """Score a fitted run and write its final files but the summary, checking for a signal
    after each step: until summary.json exists the last checkpoint (the final epoch's) resumes
    the run into these same steps, and a signal stops it there (INTERRUPT.check)."""
    test_point("fitted")
    INTERRUPT.check(keeper.last)
    summary = summarize(built, fitted, started, source, overrides)
    summary["run_dir"] = str(run.path)
    test_point("summarized")
    INTERRUPT.check(keeper.last)
    data = built.data
    writes = {
        "weights": lambda: run.save_weights(
            built.model.state_dict(), metadata={"name": built.spec.name}
        ),
        "preprocessing": lambda: run.save_preprocessing(
            data.input_divisor, data.pixel_mean, data.pixel_std
        ),
        "logs": lambda: logs.close(summary),  # tensorboard's test scalars
    }
    for name, write in writes.items():
        write()
        test_point(name)
        INTERRUPT.check(keeper.last)
    return summary


def _header(built: Built) -> dict[str, str]:
    """The run header's lines: data, model, optimizer, device, parameters, tricks."""
    spec, data = built.spec, built.data
    tricks = describe(spec)
    return {
        "data": f"{spec.data.dataset} {len(data.x_train)}/{len(data.x_val)}/{len(data.x_test)}",
        "model": "-".join(str(h) for h in spec.model.hidden) + f" {spec.model.activation.name}"
        f" ({default_init(spec.model)})",
        "optimizer": f"{spec.train.optimizer.name} lr {spec.train.optimizer.lr:g}"
        + (f" {spec.train.schedule.name}" if spec.train.schedule else ""),
        "device": str(built.device) + _speed_flags(spec),
        "parameters": f"{count_parameters(built.model):,}",
        **distributed.describe(),
        **({"tricks": tricks} if tricks else {}),
    }


def train_built(
    built: Built,
    open_run: Callable[[], RunDir],
    reporter: Reporter,
    keeper: Checkpointer,
    loaded: Loaded | None = None,
    logs: RunLogs | None = None,
) -> tuple[FitResult, dict[str, Any] | None]:
    """Fit a built run: `open_run` gives the run directory once the checkpoint (if any) is
    restored; each epoch's row goes to it (and to `logs`), `keeper` checkpoints into it.
    (the fit, the diagnostics verdicts when train.diagnostics is on)."""
    logs = logs or RunLogs([])
    spec, prepared, optimizer = built.spec, built.prepared, built.optimizer
    assert optimizer is not None, "built for a probe: no optimizer"
    done = 0  # optimizer steps already taken by a resumed run: the recorder counts on from there
    if loaded is not None:
        per_epoch = -(-len(prepared.data.x_train) // spec.train.batch_size)
        done = (loaded.position.epoch - 1) * per_epoch + loaded.position.step
    # None when off; the hooks go on the model that trains (the head, with cached frozen layers)
    recorder = Recorder.attach(prepared.model, optimizer, spec.train.diagnostics, done)
    runs: list[RunDir] = []

    def end_epoch(row: dict[str, Any]) -> None:
        if recorder is not None:
            row["diagnostics"] = recorder.flush()  # one host read per epoch
        runs[0].append_metrics(row)
        logs.epoch(row)
        if prepared.after_epoch is not None:
            prepared.after_epoch(row["epoch"], optimizer)

    if loaded is not None and prepared.after_epoch is not None:  # e.g. unfreezing: redo it
        for epoch in range(1, loaded.position.epoch):
            prepared.after_epoch(epoch, optimizer)
    distributed.seed_ranks(spec.seed)
    try:
        fitted = fit(
            prepared.model,
            optimizer,
            prepared.data,
            spec.train,
            built.generator,
            reporter,
            on_epoch_end=end_epoch,
            keeper=keeper,
            resume=loaded,
            augment=built.augment,
            on_start=lambda: runs.append(open_run()),
        )
    except DivergedError:
        if recorder is not None:  # the per-layer verdicts explain the divergence
            recorder.finish(spec, reporter)
        raise
    return fitted, recorder.finish(spec, reporter) if recorder is not None else None  # unhooks


def summarize(
    built: Built,
    fitted: FitResult,
    started: float,
    source: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """summary.json's record of a fitted run: test metrics (MC dropout too), speed, provenance."""
    spec, prepared = built.spec, built.prepared
    test_loss, test_accuracy = evaluate(
        prepared.model, prepared.data.x_test, prepared.data.y_test, spec.train.eval_batch_size
    )
    summary = {
        "name": spec.name,
        "dataset": spec.data.dataset,
        **own.provenance(spec.data),  # own data: each file's path, size and sha256
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "best_val_accuracy": fitted.best_val_accuracy,
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history),
        "stopped_early": fitted.stopped_early,
        "train_seconds": fitted.train_seconds,
        "samples_per_second": fitted.train_samples / max(fitted.train_seconds, 1e-9),
        "wall_seconds": time.perf_counter() - started,
        "parameters": count_parameters(built.model),
        "device": str(built.device),
        "threads": torch.get_num_threads(),
        **distributed.describe(),
        "seed": spec.seed,
        "versions": versions(),
        "git_sha": git_sha(),
        "spec_file": source,
        "overrides": list(overrides or []),
        **prepared.summary,
    }
    if spec.train.mc_dropout:  # the same weights, the softmax averaged over dropout samples
        summary["mc_dropout_samples"] = spec.train.mc_dropout.samples
        summary["mc_test_loss"], summary["mc_test_accuracy"] = mc_evaluate(
            built.model,
            built.data.x_test,
            built.data.y_test,
            spec.train.eval_batch_size,
            spec.train.mc_dropout.samples,
            seed=spec.seed,
        )
    return summary
