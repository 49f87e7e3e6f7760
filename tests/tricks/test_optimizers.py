"""Each optimizer's first two steps against a hand computation of its update rule.

Every case sets its arguments away from the defaults, so an argument that failed to reach
torch.optim would change the numbers. Two steps with the same gradient, because momentum only
shows on the second step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from dnntrick.spec.schema import OptimizerSpec
from dnntrick.tricks.optimizers import OPTIMIZERS, build_optimizer

P0 = [1.0, -2.0, 0.5]
G = [0.3, -0.1, 2.0]  # the same gradient at both steps
LR = 0.1


def sgd(p: float, g: float, a: dict) -> float:
    for _ in range(2):
        p -= LR * (g + a.get("weight_decay", 0.0) * p)
    return p


def momentum(p: float, g: float, a: dict) -> float:
    m, buf = a["momentum"], 0.0
    for t in (1, 2):
        buf = g if t == 1 else m * buf + g  # PyTorch: the first buffer is the gradient itself
        p -= LR * buf
    return p


def nesterov(p: float, g: float, a: dict) -> float:
    m, buf = a["momentum"], 0.0
    for t in (1, 2):
        buf = g if t == 1 else m * buf + g
        p -= LR * (g + m * buf)
    return p


def adagrad(p: float, g: float, a: dict) -> float:
    acc = a["initial_accumulator"]
    for _ in range(2):
        acc += g * g
        p -= LR * g / (math.sqrt(acc) + a["eps"])
    return p


def rmsprop(p: float, g: float, a: dict) -> float:
    v, buf, rho, m = 0.0, 0.0, a["rho"], a["momentum"]
    for _ in range(2):
        v = rho * v + (1 - rho) * g * g
        buf = m * buf + g / (math.sqrt(v) + a["eps"])
        p -= LR * buf
    return p


def adam(p: float, g: float, a: dict, decoupled: float = 0.0) -> float:
    b1, b2, m, v = a["beta1"], a["beta2"], 0.0, 0.0
    for t in (1, 2):
        p *= 1 - LR * decoupled
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= LR * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + a["eps"])
    return p


def adamw(p: float, g: float, a: dict) -> float:
    return adam(p, g, a, decoupled=a["weight_decay"])


def adamax(p: float, g: float, a: dict) -> float:
    b1, b2, m, u = a["beta1"], a["beta2"], 0.0, 0.0
    for t in (1, 2):
        m = b1 * m + (1 - b1) * g
        u = max(b2 * u, abs(g) + a["eps"])
        p -= LR / (1 - b1**t) * m / u
    return p


def nadam(p: float, g: float, a: dict) -> float:
    # Dozat's Nesterov Adam with PyTorch's momentum schedule μ_t = β1·(1 - 0.5·0.96^(0.004·t))
    b1, b2, m, v, prod = a["beta1"], a["beta2"], 0.0, 0.0, 1.0
    for t in (1, 2):
        mu = b1 * (1 - 0.5 * 0.96 ** (t * 0.004))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * 0.004))
        prod *= mu
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = math.sqrt(v / (1 - b2**t)) + a["eps"]
        p -= LR * (1 - mu) / (1 - prod) * g / denom
        p -= LR * mu_next / (1 - prod * mu_next) * m / denom
    return p


ADAM_ARGS = {"beta1": 0.8, "beta2": 0.9, "eps": 0.05}
CASES: dict[str, tuple[dict, Callable[[float, float, dict], float]]] = {
    "sgd": ({"weight_decay": 0.5}, sgd),
    "momentum": ({"momentum": 0.5}, momentum),
    "nesterov": ({"momentum": 0.5}, nesterov),
    "adagrad": ({"initial_accumulator": 0.1, "eps": 0.05}, adagrad),
    # the book's TF1 RMSProp: decay 0.9, momentum 0.9, eps 1e-10
    "rmsprop": ({"rho": 0.9, "momentum": 0.9, "eps": 1e-10}, rmsprop),
    "adam": (ADAM_ARGS, adam),
    "adamax": (ADAM_ARGS, adamax),
    "nadam": (ADAM_ARGS, nadam),
    "adamw": ({**ADAM_ARGS, "weight_decay": 0.5}, adamw),
}


def test_every_optimizer_has_a_case():
    assert set(CASES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_steps_match_the_hand_computation(name: str):
    args, rule = CASES[name]
    spec = OptimizerSpec(name=name, lr=LR, **args)
    param = torch.nn.Parameter(torch.tensor(P0, dtype=torch.float64))
    optimizer = build_optimizer(spec, [param], "cpu")
    for _ in range(2):
        param.grad = torch.tensor(G, dtype=torch.float64)
        optimizer.step()
    expected = [rule(p, g, args) for p, g in zip(P0, G, strict=True)]
    torch.testing.assert_close(param.detach(), torch.tensor(expected, dtype=torch.float64))


def test_defaults_are_pytorchs_and_the_books_names_map():
    adagrad = build_optimizer(
        OptimizerSpec(name="adagrad"), [torch.nn.Parameter(torch.ones(1))], "cpu"
    )
    assert adagrad.defaults["initial_accumulator_value"] == 0
    rms = build_optimizer(
        OptimizerSpec(name="rmsprop", rho=0.9, eps=1e-10, momentum=0.9),
        [torch.nn.Parameter(torch.ones(1))],
        "cpu",
    )
    assert (rms.defaults["alpha"], rms.defaults["eps"], rms.defaults["momentum"]) == (
        0.9,
        1e-10,
        0.9,
    )


def test_arguments_an_optimizer_does_not_use_are_refused():
    with pytest.raises(ValueError, match="'adam' does not take rho"):
        OptimizerSpec(name="adam", rho=0.9)
    with pytest.raises(ValueError, match="'sgd' does not take initial_accumulator"):
        OptimizerSpec(name="sgd", initial_accumulator=0.1)


def test_the_seeds_rmsprop_row_reaches_torch_exactly():
    from dnntrick.spec.config import load_spec
    from dnntrick.tricks.optimizers import optimizer_kwargs

    spec = load_spec("experiments/mnist/optimizers/rmsprop.yaml")
    assert optimizer_kwargs(spec.train.optimizer) == (
        "RMSprop",
        {"lr": 0.01, "alpha": 0.9, "momentum": 0.9, "eps": 1e-10},
    )
