"""The experiment spec: a frozen, validated pydantic model. Defaults live here and only here.

Importing this module must not import torch (`dnntrick check` and `--help` stay fast). Fields
that differ between the book's frameworks (TF1/Keras) and PyTorch say which convention they use.
"""

from __future__ import annotations

import re
import typing
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dnntrick.data.catalog import DATASETS
from dnntrick.errors import suggest
from dnntrick.tricks.activations import ACTIVATIONS
from dnntrick.tricks.initializers import ALIASES, INITIALIZERS, Mode
from dnntrick.tricks.optimizers import OPTIMIZERS
from dnntrick.tricks.schedules import SCHEDULES

OWN_DATASETS = ("arrays", "csv")  # the user's files: dnntrick/data/own.py
OWN_FIELDS = {  # DataSpec field: (the datasets it applies to, their name in the error)
    "root": (tuple(DATASETS), "the built-in sets"),
    "path": (OWN_DATASETS, "own data (arrays, csv)"),
    "test_size": (OWN_DATASETS, "own data (arrays, csv)"),
    "n_classes": (OWN_DATASETS, "own data (arrays, csv)"),
    "test_path": (("csv",), "csv"),
    "label": (("csv",), "csv"),
}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_INT = 2**32 - 1  # every count and the seed (numpy's and torch's RNGs all take it)
MAX_TEXT = 4096  # characters of any string (a path, a regex); PATH_MAX on Linux
MAX_LAYERS = 1000


def unknown(kind: str, name: str, choices: Any) -> ValueError:
    return ValueError(
        f"unknown {kind} {name!r}{suggest(name, choices)} (choices: {', '.join(sorted(choices))})"
    )


class StrictModel(BaseModel):
    # allow_inf_nan=False: `.nan` and `.inf` are refused in every float field
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_value(cls, value: Any, info: ValidationInfo) -> Any:
        """What pydantic's lax mode would let through: `true` for a number (it reads as 1;
        0 and 1 for a boolean stay accepted: they are unambiguous),
        integers too large for the RNGs and counts, NUL bytes and endless strings."""
        field = cls.model_fields[info.field_name or ""]
        for item in value if isinstance(value, list) else [value]:
            _check_plain(item, field.annotation)
        return value


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(arg) for arg in typing.get_args(annotation))


def _check_plain(value: Any, annotation: Any) -> None:
    if isinstance(value, bool):
        if not _admits_bool(annotation):
            raise ValueError(f"expected a number, not {str(value).lower()}")
    elif isinstance(value, int) and abs(value) > MAX_INT:
        shown = value if abs(value) < 10**20 else f"a {len(str(abs(value)))}-digit number"
        raise ValueError(f"{shown} is too large (at most {MAX_INT})")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        if len(value) > MAX_TEXT:
            raise ValueError(f"is {len(value):,} characters long (at most {MAX_TEXT:,})")


def _name_to_mapping(value: Any) -> Any:
    """Let `activation: selu` stand for `activation: {name: selu}` (same for init, optimizer)."""
    return {"name": value} if isinstance(value, str) else value


class AugmentSpec(StrictModel):
    """Random changes to each training image, drawn per batch on the device (seeded)."""

    shift: NonNegativeInt = Field(0, description="largest shift, in whole pixels, along each axis")
    rotate: float = Field(0.0, ge=0, le=180, description="largest rotation, degrees, either way")
    flip: bool = Field(False, description="mirror left-right with probability 1/2 (not for digits)")
    erase: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability of blacking out one rectangle of 2-33% of the image",
    )

    @model_validator(mode="after")
    def _does_something(self) -> AugmentSpec:
        if not (self.shift or self.rotate or self.flip or self.erase):
            raise ValueError("augmentation does nothing: set shift, rotate, flip or erase")
        return self


class DataSpec(StrictModel):
    dataset: Literal["mnist", "fashion-mnist", "kmnist", "arrays", "csv"] = Field(
        "fashion-mnist",
        description="a built-in set (IDX files, 28x28 grey, 10 classes), or your own: arrays "
        "(.npz or a folder of .npy), csv",
    )
    root: str | None = Field(None, description="folder holding the IDX files; null = search")
    path: str | None = Field(
        None,
        description="own data: an .npz (x_train, y_train[, x_test, y_test]), a folder of those "
        "names as .npy files, or a .csv file; relative to the working directory",
    )
    test_path: str | None = Field(None, description="csv: a second .csv file, the test set")
    label: str | None = Field(None, description="csv: the name of the label column")
    test_size: PositiveInt | None = Field(
        None,
        description="own data without a test set: the last N training rows become the test set",
    )
    n_classes: PositiveInt | None = Field(
        None, description="own data: number of classes K (labels 0..K-1); null = largest label + 1"
    )
    val_size: NonNegativeInt = Field(5000, description="images held out from the training set")
    val_from: Literal["first", "last"] = Field(
        "last", description="where the validation images come from: 1st/2nd ed. first, 3rd ed. last"
    )
    standardize: bool = Field(
        False, description="per-pixel (x - mean) / (std + 1e-10), statistics of the training split"
    )
    train_limit: PositiveInt | None = Field(None, description="keep the first N training images")
    classes: list[NonNegativeInt] | None = Field(
        None, description="keep only these labels, renumbered 0..k-1 in the given order"
    )
    augment: AugmentSpec | None = Field(None, description="training-time augmentation; null = none")

    @model_validator(mode="after")
    def _own_data_fields(self) -> DataSpec:
        own = self.dataset in OWN_DATASETS
        if own and self.path is None:
            raise ValueError(f"dataset {self.dataset} needs path: the file to read")
        if self.dataset == "csv" and self.label is None:
            raise ValueError("dataset csv needs label: the name of the label column")
        for key, (datasets, who) in OWN_FIELDS.items():
            if getattr(self, key) is not None and self.dataset not in datasets:
                raise ValueError(f"{key} applies to {who} only (dataset is {self.dataset})")
        if self.test_path is not None and self.test_size is not None:
            raise ValueError("test_size and test_path both give a test set; drop one")
        return self

    @model_validator(mode="after")
    def _flips_fit_the_data(self) -> DataSpec:
        info = DATASETS.get(self.dataset)  # own data: flips are the user's call
        if self.augment and self.augment.flip and info and not info.flips_meaningful:
            raise ValueError(
                f"augment.flip is refused for {self.dataset}: a mirrored character is another "
                "character or none; use shift and rotate"
            )
        return self

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("needs at least 2 classes")
            if len(set(value)) != len(value):
                raise ValueError("lists a class twice")
            if max(value) > 9 and info.data.get("dataset") in DATASETS:  # own data: at load
                raise ValueError("labels run from 0 to 9")
        return value


class ActivationSpec(StrictModel):
    name: str = Field(..., description="the activation (choices below)")
    alpha: float | None = Field(
        None,
        description="leaky_relu slope (PyTorch 0.01, Keras 0.3); elu alpha; prelu initial slope",
    )
    lower: float | None = Field(None, description="rrelu lower slope bound")
    upper: float | None = Field(None, description="rrelu upper slope bound")

    _to_mapping = model_validator(mode="before")(_name_to_mapping)

    @model_validator(mode="after")
    def _known(self) -> ActivationSpec:
        if self.name not in ACTIVATIONS:
            raise unknown("activation", self.name, ACTIVATIONS)
        _check_args(
            "activation",
            self.name,
            self,
            {"alpha", "lower", "upper"},
            set(ACTIVATIONS[self.name].args),
        )
        if self.name == "rrelu":
            defaults = {k: default for k, (_, default) in ACTIVATIONS["rrelu"].args.items()}
            lower = self.lower if self.lower is not None else defaults["lower"]
            upper = self.upper if self.upper is not None else defaults["upper"]
            if lower > upper:
                raise ValueError(
                    f"rrelu's lower slope bound {lower:g} is above its upper bound {upper:g}; "
                    "swap them (default lower 1/8, upper 1/3)"
                )
        return self

    @property
    def args(self) -> dict[str, float]:
        return {k: v for k in ("alpha", "lower", "upper") if (v := getattr(self, k)) is not None}


class InitSpec(StrictModel):
    name: str = Field(
        "auto",
        description="auto: He for the ReLU family, LeCun for SELU, "
        "Glorot otherwise (the book's table)",
    )
    mode: Mode | None = Field(
        None,
        description="fan used by variance scaling; default the "
        "initializer's own (Glorot fan_avg, He/LeCun fan_in)",
    )
    std: PositiveFloat | None = Field(None, description="std of `normal` (default 1.0)")
    gain: PositiveFloat | None = Field(None, description="gain of `orthogonal` (default 1.0)")

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        value = _name_to_mapping(value)
        name = value.get("name") if isinstance(value, dict) else None
        if isinstance(name, str) and name in ALIASES:  # a list or a mapping: the field says why
            value = {**value, "name": ALIASES[value["name"]]}
        return value

    @model_validator(mode="after")
    def _known(self) -> InitSpec:
        if self.name not in INITIALIZERS:
            raise unknown("init", self.name, [*INITIALIZERS, *ALIASES])
        kind = INITIALIZERS[self.name].kind
        if self.std is not None and kind != "normal":
            raise ValueError(f"std applies to init 'normal' only, not {self.name!r}")
        if self.gain is not None and kind != "orthogonal":
            raise ValueError(f"gain applies to init 'orthogonal' only, not {self.name!r}")
        if self.mode is not None and kind not in ("variance_scaling", "auto"):
            raise ValueError(f"mode applies to Glorot/He/LeCun inits, not {self.name!r}")
        return self


class NormSpec(StrictModel):
    """Batch normalization inside each hidden Dense block (and optionally the input/logits)."""

    name: Literal["batch"] = Field("batch", description="the only normalization: batch norm")
    placement: Literal["before", "after"] = Field(
        "before",
        description="BN before the activation (the book, Ioffe & Szegedy) or after it (Keras's "
        "2nd-edition default stack)",
    )
    input: bool = Field(False, description="also normalize the inputs (a BN block named inputs)")
    logits: bool = Field(False, description="also normalize the logits (the book does)")
    momentum: float = Field(
        0.1,
        gt=0,
        le=1,
        description="PyTorch convention: weight of the NEW batch in the running averages. "
        "TF1's momentum 0.9 = 0.1 here; Keras's 0.99 = 0.01",
    )
    eps: PositiveFloat = Field(
        1e-5, description="added to the variance: PyTorch 1e-5; TF1 and Keras 1e-3"
    )
    dense_bias: bool = Field(
        False,
        description="keep the bias of a Dense layer that feeds a BN (placement before, and the "
        "logits): BN's shift makes it redundant (Keras use_bias=False); tf.layers.dense kept it",
    )

    _to_mapping = model_validator(mode="before")(_name_to_mapping)


class DropoutSpec(StrictModel):
    """Dropout after each hidden layer (and on the inputs); active only in training."""

    name: Literal["dropout", "alpha"] = Field(
        "dropout",
        description="dropout: zero units, scale the rest by 1/(1-rate) (TF/Keras/PyTorch alike); "
        "alpha: AlphaDropout, keeps SELU activations' mean 0 and variance 1",
    )
    rate: float = Field(..., ge=0, lt=1, description="fraction dropped after each hidden layer")
    input_rate: float | None = Field(
        None, ge=0, lt=1, description="fraction of the inputs dropped; null = rate, 0 = none"
    )

    @model_validator(mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        """Let `dropout: 0.5` stand for `dropout: {rate: 0.5}`."""
        return {"rate": value} if isinstance(value, int | float) else _name_to_mapping(value)

    @property
    def inputs(self) -> float:
        return self.rate if self.input_rate is None else self.input_rate


class ModelSpec(StrictModel):
    hidden: list[PositiveInt] = Field(
        default_factory=lambda: [300, 100],
        max_length=MAX_LAYERS,
        description="units of each hidden layer, input side first",
    )
    activation: ActivationSpec = Field(default_factory=lambda: ActivationSpec(name="relu"))
    init: InitSpec = Field(default_factory=InitSpec)
    norm: NormSpec | None = Field(None, description="batch normalization; null = none")
    dropout: DropoutSpec | None = Field(None, description="dropout; null = none")


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

    _to_mapping = model_validator(mode="before")(_name_to_mapping)

    @model_validator(mode="after")
    def _known(self) -> OptimizerSpec:
        if self.name not in OPTIMIZERS:
            raise unknown("optimizer", self.name, OPTIMIZERS)
        _check_args(
            "optimizer", self.name, self, set(OPTIMIZER_FIELDS), set(OPTIMIZERS[self.name].args)
        )
        if self.name == "nesterov" and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0 (e.g. 0.9); or use sgd")
        return self


def _check_args(
    kind: str, name: str, spec: BaseModel, fields: set[str], accepted: set[str]
) -> None:
    given = {f for f in fields if getattr(spec, f) is not None}
    if extra := sorted(given - accepted):
        takes = ", ".join(sorted(accepted)) or "no arguments"
        raise ValueError(f"{kind} {name!r} does not take {', '.join(extra)} (it takes: {takes})")


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

    _to_mapping = model_validator(mode="before")(_name_to_mapping)

    @model_validator(mode="after")
    def _known(self) -> ScheduleSpec:
        if self.name not in SCHEDULES:
            raise unknown("schedule", self.name, SCHEDULES)
        _check_args("schedule", self.name, self, set(SCHEDULE_FIELDS), SCHEDULES[self.name].args)
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
    log: list[Literal["csv", "tensorboard"]] = Field(
        default_factory=list,
        description="extra logs in the run directory: csv (metrics.csv), tensorboard "
        "(tensorboard/ event files; needs the tensorboard package)",
    )

    @field_validator("log")
    @classmethod
    def _log_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a log twice")
        return value


class TransferSpec(StrictModel):
    """Reuse a trained model's layers (the book's §5, 5a, 5b). Layer names are the MLP's blocks:
    hidden1 … hiddenN, outputs; patterns are Python regular expressions matched whole."""

    source: str | None = Field(
        None,
        alias="from",
        description="a run directory, its model.safetensors, or runs/NAME for the newest "
        "runs/NAME-<time>/; relative to the working directory; `--from` wins",
    )
    reuse: str = Field(
        r"hidden\d+", description="regex over the source's layer names: the layers copied over"
    )
    freeze: str | None = Field(
        None,
        description="regex over the layer names: no gradients, not in the optimizer; reused "
        "layers only. Frozen batch norm uses its running statistics and does not update them",
    )
    cache_frozen: bool = Field(
        False,
        description="run the frozen first layers once over train/val/test and train the rest "
        "on their outputs (same result, faster)",
    )
    unfreeze_after: PositiveInt | None = Field(
        None, description="epochs with the frozen layers frozen; then every layer trains"
    )
    unfreeze_lr_factor: PositiveFloat = Field(
        1.0, description="the learning rate is multiplied by this when the layers unfreeze"
    )

    @field_validator("reuse", "freeze")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a regular expression ({err})") from None
            except RecursionError:  # 1000 nested groups
                raise ValueError("a regular expression nested too deep to compile") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TransferSpec:
        if self.cache_frozen and self.freeze is None:
            raise ValueError("cache_frozen needs freeze: there is no frozen layer to cache")
        if self.unfreeze_after is not None and self.freeze is None:
            raise ValueError("unfreeze_after needs freeze: there is no frozen layer to unfreeze")
        if self.cache_frozen and self.unfreeze_after is not None:
            raise ValueError(
                "cache_frozen is refused with unfreeze_after: the frozen layers change once they "
                "unfreeze, so their outputs cannot be computed once; drop one of the two"
            )
        return self


class PretrainSpec(StrictModel):
    """Unsupervised pretraining (the book's §6): autoencoders on the training images, no labels."""

    mode: Literal["greedy", "stack"] = Field(
        "greedy",
        description="greedy: one hidden layer at a time, each reconstructing its own input; "
        "stack: every hidden layer at once with a mirrored decoder",
    )
    epochs: PositiveInt = Field(5, description="per hidden layer (greedy) or for the stack")
    batch_size: PositiveInt = Field(128, description="autoencoder training batch")
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(name="adam", lr=1e-3))
    images: PositiveInt | None = Field(
        None,
        description="unlabelled images: the first N of the training split; null = all of it "
        "(data.train_limit limits the labelled images only)",
    )


class Spec(StrictModel):
    name: str = Field(
        ...,
        pattern=NAME_PATTERN,
        description="run name: letters, digits, '.', '_' and '-' (default: file stem)",
    )
    seed: NonNegativeInt = Field(
        42, description="weights, dropout and data order (the data order has its own generator)"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    transfer: TransferSpec | None = Field(None, description="reuse layers of a trained model")
    pretrain: PretrainSpec | None = Field(None, description="autoencoder pretraining first")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:(0|[1-9]\d{0,3}))?|mps", value):
            raise ValueError(
                f"unknown device {value!r}{suggest(value, ['auto', 'cpu', 'cuda'])} "
                "(choices: auto, cpu, cuda, cuda:N)"
            )
        return value

    @model_validator(mode="after")
    def _transfer_fits(self) -> Spec:
        if self.transfer is not None and self.pretrain is not None:
            raise ValueError(
                "pretrain: cannot be combined with transfer: both set the hidden layers' "
                "starting weights; use one"
            )
        after = self.transfer.unfreeze_after if self.transfer is not None else None
        if after is not None and after >= self.train.epochs:
            raise ValueError(
                f"transfer.unfreeze_after: {after} epochs is not less than train.epochs "
                f"({self.train.epochs}), so the layers would never unfreeze"
            )
        if self.transfer is not None and self.transfer.cache_frozen and self.data.augment:
            raise ValueError(
                "transfer.cache_frozen: refused with data.augment, which changes the inputs "
                "every epoch; set cache_frozen: false or data.augment: null"
            )
        return self

    @model_validator(mode="after")
    def _mc_dropout_needs_dropout(self) -> Spec:
        dropout = self.model.dropout
        if self.train.mc_dropout and not (dropout and (dropout.rate or dropout.inputs)):
            raise ValueError(
                "train.mc_dropout needs dropout to sample: set model.dropout (e.g. {rate: 0.2}) "
                "or remove train.mc_dropout"
            )
        return self

    @model_validator(mode="after")
    def _graphs_need_cuda(self) -> Spec:
        if self.train.cuda_graphs and self.device in ("cpu", "mps"):
            raise ValueError(
                f"train.cuda_graphs: needs device cuda (got device: {self.device}); "
                "set device: cuda or train.cuda_graphs: false"
            )
        if self.train.cuda_graphs and self.train.on_nonfinite == "skip_step":
            raise ValueError(
                "train.cuda_graphs: cannot skip steps inside a captured step; "
                "use train.on_nonfinite: stop or train.cuda_graphs: false"
            )
        if self.train.cuda_graphs and self.train.diagnostics is not None:
            raise ValueError(
                "train.cuda_graphs: diagnostics hooks would run only once, at capture; "
                "set train.diagnostics: null or train.cuda_graphs: false"
            )
        if self.train.cuda_graphs and self.data.augment is not None:
            raise ValueError(
                "train.cuda_graphs: augmentation draws new random numbers per batch outside a "
                "captured step; set data.augment: null or train.cuda_graphs: false"
            )
        return self

    @model_validator(mode="after")
    def _validation_needed(self) -> Spec:
        stopping = self.train.early_stopping
        if stopping is not None and self.data.val_size == 0:
            raise ValueError(
                f"train.early_stopping: watches {stopping.monitor}, but data.val_size is 0; "
                "hold out validation images (e.g. data.val_size: 5000) or remove early_stopping"
            )
        schedule = self.train.schedule
        lr = self.train.optimizer.lr
        if schedule and schedule.name == "performance" and (schedule.min_lr or 0) >= lr:
            raise ValueError(
                f"train.schedule.min_lr: {schedule.min_lr:g} is not below the lr ({lr:g}), so a "
                "plateau would not lower the lr; set min_lr below train.optimizer.lr"
            )
        if schedule and schedule.name == "cosine" and (schedule.min_lr or 0) > lr:
            raise ValueError(
                f"train.schedule.min_lr: {schedule.min_lr:g} is above the lr ({lr:g}), so the "
                "cosine would raise the lr over the run; set min_lr below train.optimizer.lr"
            )
        return self

    @model_validator(mode="after")
    def _performance_needs_its_metric(self) -> Spec:
        schedule = self.train.schedule
        if schedule and schedule.name == "performance" and self.data.val_size == 0:
            monitor = schedule.monitor or "val_loss"
            if monitor.startswith("val_"):
                raise ValueError(
                    f"train.schedule: performance watches {monitor}, but data.val_size is 0; "
                    "hold out validation images or use monitor: train_loss"
                )
        return self


def default_init(spec: ModelSpec) -> str:
    """The initializer name that `init: auto` stands for with this activation."""
    from dnntrick.tricks.initializers import AUTO_BY_FAMILY

    if spec.init.name != "auto":
        return spec.init.name
    return AUTO_BY_FAMILY[ACTIVATIONS[spec.activation.name].family]
