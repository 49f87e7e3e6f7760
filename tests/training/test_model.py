"""Activations, initializers and the MLP's layout."""

from __future__ import annotations

import math

import pytest
import torch

from dnntrick.spec.schema import ModelSpec
from dnntrick.training.model import build_model
from dnntrick.tricks.activations import ACTIVATIONS
from dnntrick.tricks.initializers import INITIALIZERS

TORCH_REFERENCE = {
    "relu": torch.relu,
    "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.01),
    "prelu": lambda x: torch.where(x > 0, x, 0.25 * x),
    "elu": torch.nn.functional.elu,
    "selu": torch.selu,
    "gelu": torch.nn.functional.gelu,
    "swish": torch.nn.functional.silu,
    "silu": torch.nn.functional.silu,
    "mish": torch.nn.functional.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_activation_computes_its_function(name: str):
    model = build_model(ModelSpec(hidden=[4], activation=name), 3, 2)
    x = torch.linspace(-3, 3, 12).reshape(4, 3)
    pre = model.hidden1.weight @ x.T
    out = model.hidden1(x)
    if name == "rrelu":  # random slope in [1/8, 1/3] for x < 0 in training, mean slope in eval
        model.eval()
        mean_slope = (1 / 8 + 1 / 3) / 2
        expected = torch.where(pre.T > 0, pre.T, mean_slope * pre.T)
        torch.testing.assert_close(model.hidden1(x), expected)
        return
    torch.testing.assert_close(out, TORCH_REFERENCE[name](pre.T))


def test_activation_arguments_reach_the_module():
    model = build_model(
        ModelSpec(hidden=[5], activation={"name": "leaky_relu", "alpha": 0.3}), 3, 2
    )
    assert model.hidden1.act.negative_slope == 0.3
    prelu = build_model(ModelSpec(hidden=[5], activation={"name": "prelu", "alpha": 0.1}), 3, 2)
    assert prelu.hidden1.act.weight.shape == (5,)  # one slope per unit, as Keras
    assert torch.all(prelu.hidden1.act.weight == 0.1)


VARIANCE = {  # name -> (scale, fan) of Var(W) = scale / fan for a 400 -> 200 layer
    "glorot_uniform": (1, 300),
    "glorot_normal": (1, 300),
    "he_uniform": (2, 400),
    "he_normal": (2, 400),
    "lecun_uniform": (1, 400),
    "lecun_normal": (1, 400),
}


@pytest.mark.parametrize("name", sorted(VARIANCE))
def test_variance_scaling_std_matches_the_formula(name: str):
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[200], activation="tanh", init=name), 400, 10)
    scale, fan = VARIANCE[name]
    expected = math.sqrt(scale / fan)
    assert model.hidden1.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.all(model.hidden1.bias == 0)
    if name.endswith("uniform"):
        assert model.hidden1.weight.abs().max().item() <= math.sqrt(3) * expected + 1e-6


@pytest.mark.parametrize(("mode", "fan"), [("fan_in", 400), ("fan_out", 200), ("fan_avg", 300)])
def test_mode_changes_the_fan(mode: str, fan: int):
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[200], init={"name": "he_normal", "mode": mode}), 400, 2)
    assert model.hidden1.weight.std().item() == pytest.approx(math.sqrt(2 / fan), rel=0.05)


def test_normal_orthogonal_and_torch_default():
    torch.manual_seed(0)
    normal = build_model(ModelSpec(hidden=[200], init={"name": "normal", "std": 1.0}), 400, 2)
    assert normal.hidden1.weight.std().item() == pytest.approx(1.0, rel=0.05)
    ortho = build_model(ModelSpec(hidden=[200], init="orthogonal"), 400, 2)
    w = ortho.hidden1.weight
    torch.testing.assert_close(w @ w.T, torch.eye(200), atol=1e-4, rtol=0)
    default = build_model(ModelSpec(hidden=[200], init="torch_default"), 400, 2)
    assert default.hidden1.bias.abs().sum() > 0  # nn.Linear's own fan-in uniform bias kept
    assert default.hidden1.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 400), rel=0.05)


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        ("relu", 2 / 400),
        ("elu", 2 / 400),
        ("selu", 1 / 400),
        ("tanh", 1 / 300),
        ("sigmoid", 1 / 300),
    ],
)
def test_auto_init_follows_the_books_table(activation: str, expected: float):
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[200], activation=activation), 400, 2)
    assert model.hidden1.weight.var().item() == pytest.approx(expected, rel=0.1)


def test_every_initializer_is_tested():
    tested = set(VARIANCE) | {"normal", "orthogonal", "torch_default", "auto"}
    # the *_truncated_normal forms: tests/test_initializers_truncated.py
    tested |= {"glorot_truncated_normal", "he_truncated_normal", "lecun_truncated_normal"}
    assert tested == set(INITIALIZERS)


def test_deep_selu_with_lecun_keeps_activations_normalized():
    # The book's check: a deep SELU stack with LeCun-normal init keeps mean ≈ 0 and std ≈ 1.
    torch.manual_seed(0)
    model = build_model(
        ModelSpec(hidden=[100] * 100, activation="selu", init="lecun_normal"), 100, 10
    )
    x = torch.randn(1000, 100)
    with torch.no_grad():
        for name, layer in model.named_children():
            if name != "outputs":
                x = layer(x)
    assert abs(x.mean().item()) < 0.2
    assert 0.75 < x.std().item() < 1.25


def test_deep_sigmoid_with_unit_normal_init_saturates():
    # The seed's counter-example: N(0, 1) weights push sigmoid units to 0 or 1.
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[100] * 5, activation="sigmoid", init="normal"), 100, 10)
    with torch.no_grad():
        h = model.hidden2(model.hidden1(torch.randn(500, 100)))
    saturated = ((h < 0.05) | (h > 0.95)).float().mean().item()
    assert saturated > 0.5


def test_layer_names_and_state_dict_keys():
    model = build_model(ModelSpec(hidden=[30, 20, 10]), 784, 10)
    assert model.layer_names() == ["hidden1", "hidden2", "hidden3", "outputs"]
    assert list(model.state_dict()) == [
        f"{n}.{p}" for n in model.layer_names() for p in ("weight", "bias")
    ]
