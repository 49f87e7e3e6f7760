"""The `train:` section: epochs and batches, the optimizer and its schedule, early stopping,
regularization, precision and the run's thread count."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from dnntrick.spec.base import StrictModel, check_args, name_to_mapping, unknown
from dnntrick.tricks.optimizers import OPTIMIZERS
from dnntrick.tricks.schedules import SCHEDULES

MAX_THREADS = 1024  # torch would start them all: a typo like 10000 must not

OPTIMIZER_FIELDS = (
    "momentum",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "amsgrad",
    "rho",
    "centered",
    "initial_accumulator",
)


class OptimizerSpec(StrictModel):
    name: str = Field("sgd", description="the optimizer (choices below)")
    lr: PositiveFloat = Field(0.01, description="the learning rate (lr0 of a schedule)")
    momentum: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="momentum/nesterov (default 0.9); rmsprop (default 0); 1 would never forget",
    )
    beta1: float | None = Field(None, ge=0, lt=1, description="Adam family β1 (default 0.9)")
    beta2: float | None = Field(None, ge=0, lt=1, description="Adam family β2 (default 0.999)")
    eps: PositiveFloat | None = Field(
        None,
        description="added to the denominator's square root: Adam family 1e-8 (Keras 1e-7), "
        "rmsprop 1e-8 (TF1 1e-10, added inside the root), adagrad 1e-10 (Keras 1e-7)",
    )
    weight_decay: NonNegativeFloat | None = Field(
        None,
        description="PyTorch's coupled L2 added to the gradient; adamw: decoupled, "
        "p -= lr·wd·p (PyTorch default 0.01, Keras 0.004)",
    )
    amsgrad: bool | None = Field(None, description="adam/adamw: the AMSGrad variant (default no)")
    rho: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="rmsprop decay of the squared-gradient average: TF/Keras `rho`/`decay` 0.9, "
        "PyTorch `alpha` 0.99 (default: PyTorch's 0.99)",
    )
    centered: bool | None = Field(None, description="rmsprop: divide by the gradient's variance")
    initial_accumulator: NonNegativeFloat | None = Field(
        None, description="adagrad's starting sum of squares: PyTorch 0 (default), Keras 0.1"
    )

    _to_mapping = model_validator(mode="before")(name_to_mapping)

    @model_validator(mode="after")
    def _known(self) -> OptimizerSpec:
        if self.name not in OPTIMIZERS:
            raise unknown("optimizer", self.name, OPTIMIZERS)
        check_args(
            "optimizer", self.name, self, set(OPTIMIZER_FIELDS), set(OPTIMIZERS[self.name].args)
        )
        if self.name == "nesterov" and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0 (e.g. 0.9); or use sgd")
        return self


SCHEDULE_FIELDS = (
    "unit",
    "decay_rate",
    "period",
    "staircase",
    "power",
    "boundaries",
    "values",
    "monitor",
    "factor",
    "patience",
    "min_delta",
    "min_lr",
    "start_lr",
    "final_lr",
    "final_steps",
    "warmup",
)


class ScheduleSpec(StrictModel):
    """A learning-rate schedule; t counts completed steps or epochs (`unit`), from 0."""

    name: str = Field(..., description="the schedule (choices below)")
    unit: Literal["step", "epoch"] | None = Field(
        None,
        description="what t counts: exponential/power/cosine default step (Keras schedules), "
        "piecewise epoch",
    )
    decay_rate: PositiveFloat | None = Field(
        None, description="exponential: lr0·decay_rate^(t/period) (default 0.1)"
    )
    period: PositiveFloat | None = Field(
        None,
        description="exponential/power: t is divided by it (default 10000); Keras "
        "SGD(decay=d) is power with period 1/d",
    )
    staircase: bool | None = Field(None, description="exponential: floor(t/period) (default no)")
    power: PositiveFloat | None = Field(None, description="power: lr0/(1+t/period)^power (1)")
    boundaries: list[NonNegativeInt] | None = Field(
        None, description="piecewise: t at which the lr moves to the next value, increasing"
    )
    values: list[PositiveFloat] | None = Field(
        None, description="piecewise: the lr from each boundary on (lr0 before the first)"
    )
    monitor: Literal["val_loss", "val_accuracy", "train_loss"] | None = Field(
        None, description="performance: the metric watched (default val_loss)"
    )
    factor: float | None = Field(
        None, gt=0, lt=1, description="performance: lr multiplier on a plateau (Keras 0.1)"
    )
    patience: PositiveInt | None = Field(
        None, description="performance: epochs without improvement before a cut (Keras 10)"
    )
    min_delta: NonNegativeFloat | None = Field(
        None, description="performance: smallest improvement that counts (Keras 1e-4)"
    )
    min_lr: NonNegativeFloat | None = Field(
        None, description="performance: floor of the lr; cosine: the final lr (default 0)"
    )
    start_lr: PositiveFloat | None = Field(
        None, description="one_cycle: first and middle lr (default lr/10; lr is the peak)"
    )
    final_lr: PositiveFloat | None = Field(
        None, description="one_cycle: lr at the very end (default start_lr/1000)"
    )
    final_steps: PositiveInt | None = Field(
        None, description="one_cycle: steps of the final drop (default total steps//10 + 1)"
    )
    warmup: NonNegativeInt | None = Field(
        None, description="cosine: t of the linear warm-up from lr0/warmup to lr0 (default 0)"
    )

    _to_mapping = model_validator(mode="before")(name_to_mapping)

    @model_validator(mode="after")
    def _known(self) -> ScheduleSpec:
        if self.name not in SCHEDULES:
            raise unknown("schedule", self.name, SCHEDULES)
        check_args("schedule", self.name, self, set(SCHEDULE_FIELDS), SCHEDULES[self.name].args)
        if self.name == "piecewise":
            if not self.boundaries or self.values is None:
                raise ValueError(
                    "piecewise needs boundaries and values, e.g. [5, 15] and [0.005, 0.001]"
                )
            if len(self.values) != len(self.boundaries):
                raise ValueError(
                    f"piecewise needs one value per boundary (got {len(self.boundaries)} "
                    f"boundaries, {len(self.values)} values)"
                )
            if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:], strict=False)):
                raise ValueError(f"piecewise boundaries must increase (got {self.boundaries})")
        return self


class EarlyStoppingSpec(StrictModel):
    patience: PositiveInt = Field(5, description="epochs without improvement before stopping")
    monitor: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss", description="the metric watched"
    )
    min_delta: NonNegativeFloat = Field(0.0, description="smallest change that counts as better")
    restore_best: bool = Field(
        True, description="end with a bitwise copy of the best epoch's weights and buffers"
    )
    start_from_epoch: NonNegativeInt = Field(
        0,
        description="epochs ignored before watching starts (Keras start_from_epoch): "
        "epochs 1..N neither count as bad nor become the best",
    )


class ClipSpec(StrictModel):
    by: Literal["value", "norm", "global_norm"] = Field(
        ...,
        description="value: each gradient entry into ±threshold (TF clip_by_value, Keras "
        "clipvalue); norm: each tensor's L2 norm ≤ threshold (Keras clipnorm); global_norm: "
        "all gradients together (TF clip_by_global_norm, Keras global_clipnorm, PyTorch "
        "clip_grad_norm_)",
    )
    threshold: PositiveFloat = Field(..., description="the bound (value or norm)")


class MaxNormSpec(StrictModel):
    max_value: PositiveFloat = Field(
        ...,
        description="cap on each neuron's incoming weight vector (a row of nn.Linear.weight, "
        "Keras MaxNorm axis=0), applied after every step",
    )
    outputs: bool = Field(False, description="also cap the output layer's rows")

    @model_validator(mode="before")
    @classmethod
    def _value(cls, value: Any) -> Any:
        """Let `max_norm: 1.0` stand for `max_norm: {max_value: 1.0}`."""
        return {"max_value": value} if isinstance(value, int | float) else value


class MCDropoutSpec(StrictModel):
    samples: PositiveInt = Field(
        100,
        le=10_000,
        description="stochastic test passes averaged (dropout on, BN running statistics); "
        "each is a pass over the test set",
    )


class DiagnosticsSpec(StrictModel):
    every: PositiveInt = Field(
        100,
        description="record per-layer statistics at training steps 0, every, 2·every, ... "
        "(steps counted over the whole run, one step = one optimizer update)",
    )


class TrainSpec(StrictModel):
    epochs: PositiveInt = Field(10, description="passes over the training split")
    batch_size: PositiveInt = Field(
        32, description="training batch; the last, smaller batch of an epoch is kept"
    )
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec | None = Field(
        None, description="learning-rate schedule; null = the optimizer's lr throughout"
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None, description="stop when the monitored metric stops improving; null = never"
    )
    eval_batch_size: PositiveInt = Field(10_000, description="batch size for evaluation only")
    checkpoint_every: PositiveInt = Field(
        1, description="epochs between checkpoints (the last epoch and Ctrl-C always write one)"
    )
    on_nonfinite: Literal["stop", "skip_step"] = Field(
        "stop",
        description="a NaN/inf loss: stop (exit 3) or skip that step's update "
        "(skip_step reads every loss: one host-device sync per step on a GPU)",
    )
    deterministic: bool = Field(
        False,
        description="deterministic kernels only (torch.use_deterministic_algorithms, "
        "CUBLAS_WORKSPACE_CONFIG); bitwise on the same machine and software",
    )
    l1: NonNegativeFloat = Field(
        0.0, description="adds l1·Σ|w| over every Dense weight (no biases, no BN) to the loss"
    )
    l2: NonNegativeFloat = Field(
        0.0,
        description="adds l2·Σw² over every Dense weight to the loss: Keras l2(λ) convention; TF1 "
        "l2_regularizer(s) is (s/2)·Σw²; an optimizer's coupled weight_decay wd is l2 = wd/2 on "
        "all parameters. Not decoupled weight decay (optimizer.weight_decay with adamw)",
    )
    clip: ClipSpec | None = Field(None, description="gradient clipping; null = none")
    max_norm: MaxNormSpec | None = Field(None, description="max-norm constraint; null = none")
    mc_dropout: MCDropoutSpec | None = Field(
        None, description="also report the MC-dropout test accuracy (needs model.dropout)"
    )
    diagnostics: DiagnosticsSpec | None = Field(
        None, description="per-layer statistics into metrics.jsonl; null = off (no hooks)"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16: forward and loss under torch.autocast (bfloat16 matmuls, float32 "
        "weights, optimizer and loss reduction), on CPU and CUDA",
    )
    cuda_graphs: bool = Field(
        False,
        description="capture the whole training step (forward, backward, clip, optimizer step) "
        "in a CUDA graph and replay it; CUDA only, for small batches where launches dominate",
    )
    threads: int | Literal["auto"] = Field(
        "auto",
        description="torch's intra-op CPU threads for the run (on CUDA: the host's). auto: "
        "what OMP_NUM_THREADS, torchrun or compare's workers set, else 1 (bench/threads.py: a "
        "small-batch MLP step gains little from more threads and runs several times slower with "
        "them on busy cores); N: N threads, also inside compare's workers",
    )
    log: list[Literal["csv", "tensorboard"]] = Field(
        default_factory=list,
        description="extra logs in the run directory: csv (metrics.csv), tensorboard "
        "(tensorboard/ event files; needs the tensorboard package)",
    )

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        whole = isinstance(value, int) and not isinstance(value, bool)
        if value == "auto" or (whole and 1 <= value <= MAX_THREADS):
            return value
        shown = str(value).lower() if isinstance(value, bool) else repr(value)  # YAML's spelling
        raise ValueError(
            f"expected auto or a number of threads from 1 to {MAX_THREADS} (got {shown})"
        )

    @field_validator("log")
    @classmethod
    def _log_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a log twice")
        return value
