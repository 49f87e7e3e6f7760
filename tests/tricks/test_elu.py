"""dnntrick.tricks.elu: the exp-based CPU ELU/SELU must compute torch's function and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnntrick.spec.schema import ModelSpec
from dnntrick.training.model import build_model
from dnntrick.tricks.elu import ELU, SELU, elu

INF, NAN = float("inf"), float("nan")


def _pairs() -> list[tuple[nn.Module, nn.Module]]:
    return [
        (nn.ELU(), ELU()),
        (nn.ELU(alpha=0.5), ELU(alpha=0.5)),
        (nn.ELU(alpha=2.0), ELU(alpha=2.0)),
        (nn.ELU(alpha=-0.5), ELU(alpha=-0.5)),
        (nn.SELU(), SELU()),
    ]


IDS = ["elu", "elu0.5", "elu2", "elu-0.5", "selu"]


@pytest.mark.parametrize(("reference", "fast"), _pairs(), ids=IDS)
def test_value_and_gradient_match_torch_to_float32_rounding(reference, fast):
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.randn(5000) * 1e-3])
    x.requires_grad_(True)
    y_ref, y = reference(x), fast(x)
    # exp(x) - 1 near 0 is off by at most an ulp of 1 (times alpha·scale); the gradient is
    # torch's own formula
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=2.5e-7)
    g = torch.randn_like(x)
    (dx_ref,) = torch.autograd.grad(y_ref, x, g)
    (dx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(dx, dx_ref, rtol=0, atol=0)  # the same kernel
    assert y.grad_fn is not None and "ExpELU" in type(y.grad_fn).__name__  # the fast path ran


@pytest.mark.parametrize(("reference", "fast"), _pairs(), ids=IDS)
def test_large_infinite_and_nan_inputs_behave_as_in_torch(reference, fast):
    x = torch.tensor([1e30, 88.0, 100.0, -100.0, -INF, INF, NAN, 0.0])
    y, y_ref = fast(x), reference(x)
    torch.testing.assert_close(y, y_ref, equal_nan=True)  # no overflow to inf from exp(x > 0)
    assert torch.isnan(y[6]) and y[5] == INF


def test_double_precision_gradient_is_exact():
    x = torch.tensor([-3.0, -0.5, -1e-3, 0.25, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: elu(t, 1.3, 1.1), (x,))


def test_inplace_uses_torchs_kernel_bitwise():
    x = torch.randn(64, 32)
    torch.testing.assert_close(ELU(inplace=True)(x.clone()), F.elu(x), rtol=0, atol=0)
    torch.testing.assert_close(SELU(inplace=True)(x.clone()), F.selu(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["elu", "selu"])
def test_models_get_the_fast_modules_under_torchs_class_names(name):
    model = build_model(ModelSpec(hidden=[8], activation=name), 4, 2)
    act = model.hidden1.act
    assert type(act) is {"elu": ELU, "selu": SELU}[name]
    assert isinstance(act, {"elu": nn.ELU, "selu": nn.SELU}[name])  # name, repr, state dict
    assert type(act).__name__ == {"elu": "ELU", "selu": "SELU"}[name]  # diagnostics' families
