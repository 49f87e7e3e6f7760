"""The MLP: blocks named hidden1, hidden2, ..., outputs (the book's names, so transfer patterns
such as `hidden[123]` select them), each a Dense layer with its activation.

State-dict keys are `hidden1.weight`, `hidden1.bias`, ..., `outputs.weight`: a Dense block *is*
its nn.Linear, with its batch norm (`hidden1.norm.running_mean`, ...), activation and dropout as
child modules. Input BN / input dropout, when asked, form a first block named `inputs`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import nn

from dnntrick.spec.schema import DropoutSpec, ModelSpec, NormSpec, default_init
from dnntrick.tricks.activations import build_activation
from dnntrick.tricks.initializers import init_weight


class Dense(nn.Linear):
    """An nn.Linear whose forward also applies its norm, activation and dropout:
    drop(act(norm(x Wᵀ + b))) with the norm before the activation, drop(norm(act(x Wᵀ + b))) after.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        act: nn.Module | None = None,
        bias: bool = True,
        norm: nn.Module | None = None,
        norm_first: bool = True,
        drop: nn.Module | None = None,
    ):
        super().__init__(in_features, out_features, bias=bias)
        self.norm = norm if norm is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()
        self.drop = drop if drop is not None else nn.Identity()
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = super().forward(x)
        z = self.act(self.norm(z)) if self.norm_first else self.norm(self.act(z))
        return self.drop(z)


class MLP(nn.Sequential):
    """[inputs,] hidden1 … hiddenN, outputs. forward: [B, in_features] -> logits [B, n_classes]."""

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.named_children()]


@contextlib.contextmanager
def eval_mode(*modules: nn.Module, training: bool = False) -> Iterator[None]:
    """Every module (and submodule) of `modules` in eval mode (train mode with training=True) for
    the block; afterwards each submodule gets its own flag back, so a frozen batch norm that
    stays in eval mode while the rest trains is left as it was."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def build_model(spec: ModelSpec, in_features: int, n_classes: int) -> MLP:
    """Build and initialize the MLP that `spec` describes (on the CPU, in float32)."""
    norm, dropout = spec.norm, spec.dropout
    blocks: dict[str, nn.Module] = {}
    inputs: dict[str, nn.Module] = {}
    if norm and norm.input:
        inputs["norm"] = batch_norm(norm, in_features)
    if dropout and dropout.inputs > 0:
        inputs["drop"] = make_dropout(dropout, dropout.inputs)
    if inputs:
        blocks["inputs"] = nn.Sequential(OrderedDict(inputs))
    before = norm is not None and norm.placement == "before"
    dense_bias = norm is None or norm.dense_bias  # a bias feeding a BN is redundant with its shift
    width = in_features
    for i, units in enumerate(spec.hidden, start=1):
        act = build_activation(spec.activation.name, spec.activation.args, units)
        blocks[f"hidden{i}"] = Dense(
            width,
            units,
            act,
            bias=dense_bias or not before,
            norm=batch_norm(norm, units) if norm else None,
            norm_first=before,
            drop=make_dropout(dropout, dropout.rate) if dropout and dropout.rate > 0 else None,
        )
        width = units
    normed_logits = norm is not None and norm.logits
    blocks["outputs"] = Dense(
        width,
        n_classes,
        bias=dense_bias or not normed_logits,
        norm=batch_norm(norm, n_classes) if norm and norm.logits else None,
    )
    model = MLP(OrderedDict(blocks))
    initialize(model, spec)
    return model


def batch_norm(spec: NormSpec, width: int) -> nn.BatchNorm1d:
    """BN over `width` features: batch statistics in training, running averages in eval."""
    return nn.BatchNorm1d(width, eps=spec.eps, momentum=spec.momentum)


def make_dropout(spec: DropoutSpec, rate: float) -> nn.Module:
    return nn.AlphaDropout(rate) if spec.name == "alpha" else nn.Dropout(rate)


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
