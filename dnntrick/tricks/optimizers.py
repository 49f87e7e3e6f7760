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


def optimizer_kwargs(spec: Any) -> tuple[str, dict[str, Any]]:
    """The torch.optim class name and keyword arguments for `spec` (a spec.schema.OptimizerSpec:
    typed loosely because the spec model imports this registry)."""
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


# torch.optim classes with fused kernels on the CPU and CUDA (the whole update in one kernel; on
# the CPU the book's Adam step is ~1.4× faster than torch's default per-tensor loop, on CUDA it is
# one launch instead of dozens). The others get foreach (one kernel per operation over all
# parameters). Fused and foreach results differ from the per-tensor loop's in the last bits only.
FUSED = frozenset({"Adam", "AdamW", "SGD", "Adagrad"})
FAST_DEVICES = frozenset({"cpu", "cuda"})


def torch_optimizer_args(
    spec: Any, device_type: str, capturable: bool = False
) -> tuple[str, dict[str, Any]]:
    """optimizer_kwargs plus the speed options: on the CPU and CUDA the fused kernel where torch
    has one, else foreach; capturable=True for a step captured in a CUDA graph (build_optimizer)."""
    import inspect

    import torch

    from dnntrick.errors import UsageError

    name, kwargs = optimizer_kwargs(spec)
    accepts = inspect.signature(getattr(torch.optim, name).__init__).parameters
    if device_type in FAST_DEVICES:
        if name in FUSED:
            kwargs.setdefault("fused", True)
        elif "foreach" in accepts:
            kwargs.setdefault("foreach", True)
    if capturable:
        if "capturable" in accepts:
            kwargs["capturable"] = True
        elif not kwargs.get("fused"):
            raise UsageError(
                f"train.optimizer {spec.name!r} cannot run inside a CUDA graph "
                "(torch has no capturable or fused version); set train.cuda_graphs: false"
            )
    return name, kwargs


def build_optimizer(
    spec: Any, params: Iterable[Any], device_type: str, capturable: bool = False
) -> torch.optim.Optimizer:
    """Instantiate the optimizer with the fused (else foreach) kernels on the CPU and CUDA.

    capturable=True makes the step safe to capture in a CUDA graph: the step counters stay on the
    device and lr becomes a 0-d tensor on the parameters' device, so a schedule changes it in
    place (`fill_`, as torch's LR schedulers do) and a replayed graph reads the new value.
    """
    import torch

    name, kwargs = torch_optimizer_args(spec, device_type, capturable)
    params = list(params)
    if capturable:
        device = params[0].device if params else torch.device(device_type)
        kwargs["lr"] = torch.tensor(float(kwargs["lr"]), device=device)
    optimizer: torch.optim.Optimizer = getattr(torch.optim, name)(params, **kwargs)
    return optimizer
