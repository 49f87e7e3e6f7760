"""ACTIVATIONS: the closed registry of activation functions a spec may name.

Each entry names a class in `torch.nn`, or in `dnntrick.tricks.elu` for ELU and SELU (their torch.nn
subclasses with a faster CPU path), looked up only when a model is built, so importing this
module does not import torch; the spec arguments it takes with their defaults; and its family.
The family drives `init: auto` (the book's table: He for the ReLU family, LeCun for SELU, Glorot
otherwise) and the diagnostics (dead units for the ReLU family, saturation for sigmoid/tanh).
Adding an activation = one entry here + one test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import nn

Family = Literal["relu", "selu", "saturating", "smooth"]


@dataclass(frozen=True)
class Activation:
    torch_class: str
    family: Family
    # spec argument -> (torch keyword argument, default). PyTorch's defaults unless noted.
    args: dict[str, tuple[str, float]] = field(default_factory=dict)
    per_unit: bool = False  # the torch class takes the layer width (PReLU: one slope per unit)
    home: Literal["torch.nn", "dnntrick.tricks.elu"] = "torch.nn"  # the module that holds the class


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("ReLU", "relu"),
    # alpha: slope for x < 0. TF1 notebook 0.01 (= PyTorch default), Keras 0.3.
    "leaky_relu": Activation("LeakyReLU", "relu", {"alpha": ("negative_slope", 0.01)}),
    # One learned slope per unit (Keras PReLU); alpha is the initial slope.
    "prelu": Activation("PReLU", "relu", {"alpha": ("init", 0.25)}, per_unit=True),
    "rrelu": Activation("RReLU", "relu", {"lower": ("lower", 1 / 8), "upper": ("upper", 1 / 3)}),
    "elu": Activation("ELU", "relu", {"alpha": ("alpha", 1.0)}, home="dnntrick.tricks.elu"),
    "selu": Activation("SELU", "selu", home="dnntrick.tricks.elu"),
    "gelu": Activation("GELU", "relu"),
    "swish": Activation("SiLU", "relu"),
    "silu": Activation("SiLU", "relu"),
    "mish": Activation("Mish", "relu"),
    "tanh": Activation("Tanh", "saturating"),
    "sigmoid": Activation("Sigmoid", "saturating"),
}


def build_activation(name: str, args: dict[str, float], width: int) -> nn.Module:
    """Instantiate activation `name` with spec `args` for a layer of `width` units."""
    import importlib

    entry = ACTIVATIONS[name]
    kwargs = {torch_key: args.get(key, default) for key, (torch_key, default) in entry.args.items()}
    if entry.per_unit:
        kwargs["num_parameters"] = width
    module: nn.Module = getattr(importlib.import_module(entry.home), entry.torch_class)(**kwargs)
    return module
