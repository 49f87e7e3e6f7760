"""Examples are tests: every spec under experiments/ validates and trains a few steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnntrick.errors import DivergedError
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.tricks.optimizers import OPTIMIZERS
from tests.conftest import REPO

EXPERIMENTS = sorted((REPO / "experiments").rglob("*.yaml"))
SCHEDULE_ROWS = ("power", "exponential_epoch", "exponential_step", "piecewise", "performance")


def test_there_are_experiments():
    names = {p.relative_to(REPO / "experiments").as_posix() for p in EXPERIMENTS}
    assert {
        "selu.yaml",
        "leaky_relu.yaml",
        "elu.yaml",
        "default.yaml",
        "mnist/selu.yaml",
        "mnist/leaky_relu.yaml",
        "mnist/elu.yaml",
        "exponential_decay.yaml",
        "one_cycle.yaml",
        "augmentation.yaml",
        "best.yaml",
        "mnist/exponential_decay.yaml",
        *(f"schedules/{s}.yaml" for s in SCHEDULE_ROWS),
        *(f"schedules/3rd_edition/{s}.yaml" for s in ("inverse_time", "exponential_step")),
        *(f"schedules/3rd_edition/{s}.yaml" for s in ("piecewise", "performance")),
        *(f"optimizers/{name}.yaml" for name in OPTIMIZERS),
        *(f"mnist/optimizers/{n}.yaml" for n in ("momentum", "nesterov", "adagrad", "rmsprop")),
        "mnist/optimizers/adam.yaml",
        "mnist/reuse.yaml",
        "mnist/freeze.yaml",
        "mnist/cache_frozen.yaml",
        "transfer/model_a.yaml",
        "transfer/model_b.yaml",
        "transfer/b_on_a.yaml",
        # the model and regularization tricks
        *(
            f"{n}.yaml"
            for n in (
                "batch_norm",
                "batch_norm_before",
                "clipping",
                "l1",
                "l2",
                "dropout",
                "alpha_dropout",
                "mc_dropout",
                "max_norm",
                "selu_100",
                "relu_100",
            )
        ),
        *(f"mnist/{n}.yaml" for n in ("batch_norm", "clipping", "l1", "dropout", "max_norm")),
    } <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_experiment_validates_and_runs_two_steps(path: Path, tiny_root: Path, tmp_path: Path):
    text = path.read_text()
    assert text.startswith("# dnntrick "), "each experiment opens with its command"
    spec = load_spec(path)
    batch = spec.train.batch_size
    overrides = [
        f"data.root={tiny_root}",
        "data.val_size=100",
        "train.epochs=1",
        f"data.train_limit={2 * batch}",
    ]
    if spec.transfer is not None:
        if spec.transfer.unfreeze_after:
            overrides += ["train.epochs=2", "transfer.unfreeze_after=1"]
        # the source: this spec itself, trained without transfer (the reused layers fit)
        source = load_spec(path, overrides).model_copy(update={"transfer": None})
        overrides.append(f"transfer.from={run_spec(source, out=tmp_path / 'source').run_dir}")
    quick = load_spec(path, overrides)
    if "# expect: diverges" in text:  # shown on purpose (exploding.yaml): exit 3, one line
        with pytest.raises(DivergedError, match="training diverged"):
            run_spec(quick, out=tmp_path)
        return
    result = run_spec(quick, out=tmp_path)
    assert result.summary["epochs_run"] == quick.train.epochs <= 2
    assert result.summary["name"] == spec.name
