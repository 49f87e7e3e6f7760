"""OPTIMIZERS: the closed registry of optimizers a spec may name.

Each entry names a class in `torch.optim`, the spec fields it accepts (mapped to torch keyword
arguments) and keyword arguments it fixes. Spec fields use the book's names where PyTorch's differ
(`rho` is RMSProp's decay, PyTorch's `alpha`); defaults are PyTorch's unless a field says
otherwise. Adding an optimizer = one entry here + one test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from dnntrick.spec import OptimizerSpec


@dataclass(frozen=True)
class Optimizer:
    torch_class: str
    # spec field -> torch keyword argument
    args: dict[str, str]
    fixed: dict[str, Any] = field(default_factory=dict)
    # spec field -> default used when the spec leaves it unset (else torch's own default)
    defaults: dict[str, Any] = field(default_factory=dict)


_SGD_ARGS = {"weight_decay": "weight_decay"}
_ADAM_ARGS = {"beta1": "beta1", "beta2": "beta2", "eps": "eps", "weight_decay": "weight_decay"}
_RMSPROP_ARGS = {
    "rho": "alpha",
    "momentum": "momentum",
    "eps": "eps",
    "centered": "centered",
    "weight_decay": "weight_decay",
}
_ADAGRAD_ARGS = {
    "initial_accumulator": "initial_accumulator_value",
    "eps": "eps",
    "weight_decay": "weight_decay",
}

OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer("SGD", _SGD_ARGS),
    "momentum": Optimizer("SGD", {**_SGD_ARGS, "momentum": "momentum"}, defaults={"momentum": 0.9}),
    "nesterov": Optimizer(
        "SGD",
        {**_SGD_ARGS, "momentum": "momentum"},
        fixed={"nesterov": True},
        defaults={"momentum": 0.9},
    ),
    # G = initial_accumulator + Σ g²; p -= lr·g / (√G + eps). PyTorch starts G at 0, Keras at 0.1.
    "adagrad": Optimizer("Adagrad", _ADAGRAD_ARGS),
    # v = ρ·v + (1-ρ)·g²; buf = momentum·buf + g / (√v + eps); p -= lr·buf (PyTorch; ρ = `alpha`).
    "rmsprop": Optimizer("RMSprop", _RMSPROP_ARGS),
    "adam": Optimizer("Adam", {**_ADAM_ARGS, "amsgrad": "amsgrad"}),
    "adamax": Optimizer("Adamax", _ADAM_ARGS),
    "nadam": Optimizer("NAdam", _ADAM_ARGS),
    # weight decay decoupled from the gradient: p -= lr·wd·p before the Adam step
    "adamw": Optimizer("AdamW", {**_ADAM_ARGS, "amsgrad": "amsgrad"}),
}


def optimizer_kwargs(spec: OptimizerSpec) -> tuple[str, dict[str, Any]]:
    """The torch.optim class name and keyword arguments for `spec`."""
    entry = OPTIMIZERS[spec.name]
    kwargs: dict[str, Any] = {"lr": spec.lr, **entry.fixed}
    for key, torch_key in entry.args.items():
        value = getattr(spec, key)
        if value is None:
            value = entry.defaults.get(key)
        if value is not None:
            kwargs[torch_key] = value
    if "beta1" in kwargs or "beta2" in kwargs:
        kwargs["betas"] = (kwargs.pop("beta1", 0.9), kwargs.pop("beta2", 0.999))
    return entry.torch_class, kwargs


def build_optimizer(
    spec: OptimizerSpec, params: Iterable[Any], device_type: str
) -> torch.optim.Optimizer:
    """Instantiate the optimizer; on CUDA the fused/foreach kernels where torch has them."""
    import torch

    name, kwargs = optimizer_kwargs(spec)
    cls = getattr(torch.optim, name)
    if device_type == "cuda" and name in {"Adam", "AdamW", "SGD", "Adagrad"}:
        kwargs.setdefault("fused", True)
    optimizer: torch.optim.Optimizer = cls(list(params), **kwargs)
    return optimizer
