"""The `model:` section: the MLP's widths, activation, initialization, batch norm and dropout."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from dnntrick.spec.base import MAX_LAYERS, StrictModel, check_args, name_to_mapping, unknown
from dnntrick.tricks.activations import ACTIVATIONS
from dnntrick.tricks.initializers import ALIASES, INITIALIZERS, Mode


class ActivationSpec(StrictModel):
    name: str = Field(..., description="the activation (choices below)")
    alpha: float | None = Field(
        None,
        description="leaky_relu slope (PyTorch 0.01, Keras 0.3); elu alpha; prelu initial slope",
    )
    lower: float | None = Field(None, description="rrelu lower slope bound")
    upper: float | None = Field(None, description="rrelu upper slope bound")

    _to_mapping = model_validator(mode="before")(name_to_mapping)

    @model_validator(mode="after")
    def _known(self) -> ActivationSpec:
        if self.name not in ACTIVATIONS:
            raise unknown("activation", self.name, ACTIVATIONS)
        check_args(
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
        value = name_to_mapping(value)
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

    _to_mapping = model_validator(mode="before")(name_to_mapping)


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
        return {"rate": value} if isinstance(value, int | float) else name_to_mapping(value)

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


def default_init(spec: ModelSpec) -> str:
    """The initializer name that `init: auto` stands for with this activation."""
    from dnntrick.tricks.initializers import AUTO_BY_FAMILY

    if spec.init.name != "auto":
        return spec.init.name
    return AUTO_BY_FAMILY[ACTIVATIONS[spec.activation.name].family]
