"""The MLP: blocks named hidden1, hidden2, ..., outputs (the seed's names, so transfer patterns
such as `hidden[123]` select them), each a Dense layer with its activation.

State-dict keys are `hidden1.weight`, `hidden1.bias`, ..., `outputs.weight`: a Dense block *is*
its nn.Linear, with the activation (and later norm/dropout) as child modules.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from dnntrick.activations import build_activation
from dnntrick.initializers import init_weight
from dnntrick.spec import ModelSpec, default_init


class Dense(nn.Linear):
    """y = act(x Wᵀ + b). An nn.Linear whose forward also applies its activation."""

    def __init__(
        self, in_features: int, out_features: int, act: nn.Module | None = None, bias: bool = True
    ):
        super().__init__(in_features, out_features, bias=bias)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class MLP(nn.Sequential):
    """hidden1 … hiddenN, outputs. forward: [B, in_features] -> logits [B, n_classes]."""

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.named_children()]


def build_model(spec: ModelSpec, in_features: int, n_classes: int) -> MLP:
    """Build and initialize the MLP that `spec` describes (on the CPU, in float32)."""
    blocks: dict[str, nn.Module] = {}
    width = in_features
    for i, units in enumerate(spec.hidden, start=1):
        act = build_activation(spec.activation.name, spec.activation.args, units)
        blocks[f"hidden{i}"] = Dense(width, units, act)
        width = units
    blocks["outputs"] = Dense(width, n_classes)
    model = MLP(OrderedDict(blocks))
    initialize(model, spec)
    return model


def initialize(model: nn.Module, spec: ModelSpec) -> None:
    """Apply the spec's init to every Dense weight; zero biases (TF/Keras convention)."""
    name = default_init(spec)
    if name == "torch_default":
        return
    for module in model.modules():
        if isinstance(module, nn.Linear):
            init_weight(module.weight, name, spec.init.mode, spec.init.std, spec.init.gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
