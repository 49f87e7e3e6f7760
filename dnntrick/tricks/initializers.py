"""INITIALIZERS: the closed registry of weight initializations a spec may name.

Variance scaling (Glorot, He, LeCun) draws W with Var(W) = scale / fan, where fan is fan_in,
fan_out or their average (fan_avg). Normal forms are plain (untruncated) normals with
std = sqrt(scale / fan), as PyTorch's kaiming_normal_; uniform forms use the limit
sqrt(3 * scale / fan). Truncated forms (`*_truncated_normal`) are Keras' VarianceScaling with
distribution="truncated_normal" (what Keras' he_normal, lecun_normal and glorot_normal draw):
a normal with std = sqrt(scale / fan) / TRUNCATION_STD_FACTOR cut at +-2 of that std, so that
Var(W) is still scale / fan. Biases start at zero (the TF/Keras convention), except `torch_default`,
which keeps nn.Linear's own kaiming_uniform(a=sqrt(5)) weights and fan-in uniform biases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Mode = Literal["fan_in", "fan_avg", "fan_out"]
Distribution = Literal["normal", "uniform", "truncated_normal"]
# The std of a unit normal truncated at +-2: Keras divides the std by it (VarianceScaling).
TRUNCATION_STD_FACTOR = 0.87962566103423978


@dataclass(frozen=True)
class Initializer:
    kind: Literal["variance_scaling", "normal", "orthogonal", "torch_default", "auto"]
    scale: float = 1.0
    mode: Mode = "fan_in"
    distribution: Distribution = "normal"


def _vs(scale: float, mode: Mode, distribution: Distribution) -> Initializer:
    return Initializer("variance_scaling", scale, mode, distribution)


INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": _vs(1.0, "fan_avg", "uniform"),
    "glorot_normal": _vs(1.0, "fan_avg", "normal"),
    "he_uniform": _vs(2.0, "fan_in", "uniform"),
    "he_normal": _vs(2.0, "fan_in", "normal"),
    "lecun_uniform": _vs(1.0, "fan_in", "uniform"),
    "lecun_normal": _vs(1.0, "fan_in", "normal"),
    # Keras' he_normal / lecun_normal / glorot_normal: truncated at 2 std, variance kept.
    "glorot_truncated_normal": _vs(1.0, "fan_avg", "truncated_normal"),
    "he_truncated_normal": _vs(2.0, "fan_in", "truncated_normal"),
    "lecun_truncated_normal": _vs(1.0, "fan_in", "truncated_normal"),
    "normal": Initializer(
        "normal"
    ),  # N(0, std²), std from the spec (default 1: the book's counter-example)
    "orthogonal": Initializer("orthogonal"),
    "torch_default": Initializer("torch_default"),
    "auto": Initializer("auto"),
}
ALIASES = {
    "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "kaiming_uniform": "he_uniform",
    "kaiming_normal": "he_normal",
}
# `init: auto` by activation family: the book's table (Glorot for tanh/sigmoid).
AUTO_BY_FAMILY = {
    "relu": "he_normal",
    "selu": "lecun_normal",
    "saturating": "glorot_uniform",
    "smooth": "glorot_uniform",
}


def init_std(name: str, fan_in: int, fan_out: int, mode: Mode | None = None) -> float:
    """The standard deviation that variance-scaling initializer `name` gives the weights.

    For the truncated forms this is the std of the drawn (truncated) values, sqrt(scale / fan);
    the normal they are cut from has std `init_std(...) / TRUNCATION_STD_FACTOR`.
    """
    entry = INITIALIZERS[name]
    mode = mode or entry.mode
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return math.sqrt(entry.scale / fan)


def init_weight(
    weight: torch.Tensor, name: str, mode: Mode | None, std: float | None, gain: float | None
) -> None:
    """Fill a [fan_out, fan_in] weight in place with initializer `name` (never `auto`)."""
    import torch

    entry = INITIALIZERS[name]
    fan_out, fan_in = weight.shape
    with torch.no_grad():
        if entry.kind == "variance_scaling":
            sd = init_std(name, fan_in, fan_out, mode)
            if entry.distribution == "normal":
                weight.normal_(0.0, sd)
            elif entry.distribution == "truncated_normal":
                base = sd / TRUNCATION_STD_FACTOR  # std before the cut
                torch.nn.init.trunc_normal_(weight, 0.0, base, -2.0 * base, 2.0 * base)
            else:
                limit = math.sqrt(3.0) * sd
                weight.uniform_(-limit, limit)
        elif entry.kind == "normal":
            weight.normal_(0.0, 1.0 if std is None else std)
        elif entry.kind == "orthogonal":
            torch.nn.init.orthogonal_(weight, gain=1.0 if gain is None else gain)
        elif entry.kind != "torch_default":
            raise ValueError(f"initializer {name!r} must be resolved before use")
