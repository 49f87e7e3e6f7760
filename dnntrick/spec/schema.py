"""The experiment spec: a frozen, validated pydantic model. Defaults live here and only here:
`Spec` and its top-level sections `transfer:` and `pretrain:` in this module, the `data:`,
`model:` and `train:` sections in data_section.py, model_section.py and train_section.py (all
re-exported here), the checks every field shares in base.py.

Importing this module must not import torch (`dnntrick check` and `--help` stay fast). Fields
that differ between the book's frameworks (TF1/Keras) and PyTorch say which convention they use.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from dnntrick.errors import suggest
from dnntrick.spec.base import NAME_PATTERN, StrictModel
from dnntrick.spec.data_section import AugmentSpec, DataSpec
from dnntrick.spec.model_section import (
    ActivationSpec,
    DropoutSpec,
    InitSpec,
    ModelSpec,
    NormSpec,
    default_init,
)
from dnntrick.spec.train_section import (
    ClipSpec,
    DiagnosticsSpec,
    EarlyStoppingSpec,
    MaxNormSpec,
    MCDropoutSpec,
    OptimizerSpec,
    ScheduleSpec,
    TrainSpec,
)

__all__ = [  # re-exported: `from dnntrick.spec.schema import TrainSpec` keeps working
    "ActivationSpec", "AugmentSpec", "ClipSpec", "DataSpec", "DiagnosticsSpec", "DropoutSpec",
    "EarlyStoppingSpec", "InitSpec", "MCDropoutSpec", "MaxNormSpec", "ModelSpec", "NormSpec",
    "OptimizerSpec", "PretrainSpec", "ScheduleSpec", "Spec", "TrainSpec", "TransferSpec",
    "default_init", "suggest",
]  # fmt: skip


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
