"""The truncated-normal initializers: Keras' he_normal, lecun_normal and glorot_normal.

Keras' VarianceScaling(distribution="truncated_normal") draws from a normal whose std is
sqrt(scale / fan) / 0.8796..., cut at +-2 of that std: the draws keep Var(W) = scale / fan and
never leave the cut.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dnntrick.spec.schema import ModelSpec
from dnntrick.training.model import build_model
from dnntrick.tricks.initializers import INITIALIZERS, TRUNCATION_STD_FACTOR, init_std, init_weight
from tests.conftest import write_spec

FAN_OUT, FAN_IN = 1000, 1000  # a 1,000 x 1,000 weight: 1e6 draws
TRUNCATED = {  # name -> Var(W) of a FAN_IN -> FAN_OUT layer
    "he_truncated_normal": 2 / FAN_IN,
    "lecun_truncated_normal": 1 / FAN_IN,
    "glorot_truncated_normal": 2 / (FAN_IN + FAN_OUT),
}


def draw(name: str, mode: str | None = None, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    weight = torch.empty(FAN_OUT, FAN_IN)
    init_weight(weight, name, mode, None, None)  # type: ignore[arg-type]
    return weight


def test_the_factor_is_the_std_of_a_unit_normal_cut_at_two():
    # Var of N(0, 1) truncated to [-2, 2]: 1 - 2·2·φ(2) / (Φ(2) - Φ(-2))
    phi = math.exp(-2.0) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert math.sqrt(1 - 4 * phi / mass) == pytest.approx(TRUNCATION_STD_FACTOR, abs=1e-12)


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_variance_is_scale_over_fan(name: str):
    w = draw(name)
    assert w.var().item() == pytest.approx(TRUNCATED[name], rel=0.01)
    assert abs(w.mean().item()) < 3 * math.sqrt(TRUNCATED[name] / w.numel())
    assert init_std(name, FAN_IN, FAN_OUT) == pytest.approx(math.sqrt(TRUNCATED[name]))


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_values_stay_within_two_stds_of_the_uncut_normal_and_reach_the_cut(name: str):
    w = draw(name)
    bound = 2 * math.sqrt(TRUNCATED[name]) / TRUNCATION_STD_FACTOR
    assert w.abs().max().item() <= bound * (1 + 1e-6)
    # 1e6 draws: the largest lies within ~1e-5 of the cut on each side
    assert w.max().item() > 0.999 * bound
    assert w.min().item() < -0.999 * bound
    # the cut is at 2.27 stds of the draws; 3.46% of them lie beyond 2 stds (4.55% untruncated)
    sd = math.sqrt(TRUNCATED[name])
    assert (w.abs() > 2 * sd).float().mean().item() == pytest.approx(0.0346, abs=0.001)


def test_the_untruncated_forms_do_pass_the_cut():
    torch.manual_seed(0)
    w = torch.empty(FAN_OUT, FAN_IN)
    init_weight(w, "he_normal", None, None, None)
    bound = 2 * math.sqrt(2 / FAN_IN) / TRUNCATION_STD_FACTOR
    assert (w.abs() > bound).float().mean().item() == pytest.approx(0.0230, abs=0.001)


def test_mode_overrides_the_fan():
    w = draw("he_truncated_normal", mode="fan_avg")
    assert w.var().item() == pytest.approx(2 / ((FAN_IN + FAN_OUT) / 2), rel=0.01)
    torch.manual_seed(0)
    wide = torch.empty(250, 1000)  # fan_out 250: Var 2/250
    init_weight(wide, "he_truncated_normal", "fan_out", None, None)
    assert wide.var().item() == pytest.approx(2 / 250, rel=0.02)


def test_same_seed_same_weights():
    torch.testing.assert_close(draw("lecun_truncated_normal"), draw("lecun_truncated_normal"))
    assert not torch.equal(draw("lecun_truncated_normal"), draw("lecun_truncated_normal", seed=1))


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_the_model_uses_it_with_zero_biases(name: str):
    assert INITIALIZERS[name].distribution == "truncated_normal"
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[300, 100], activation="relu", init=name), 784, 10)
    for layer, fan_in, fan_out in ((model.hidden1, 784, 300), (model.hidden2, 300, 100)):
        sd = init_std(name, fan_in, fan_out)
        assert layer.weight.std().item() == pytest.approx(sd, rel=0.03)
        assert layer.weight.abs().max().item() <= 2 * sd / TRUNCATION_STD_FACTOR * (1 + 1e-6)
        assert torch.all(layer.bias == 0)


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_check_accepts_the_names(cli, tmp_path: Path, name: str):
    spec = f"model: {{hidden: [16], init: {name}}}\ntrain: {{epochs: 1}}\n"
    code, out, err = cli("check", str(write_spec(tmp_path, spec)))
    assert code == 0, err
    assert name in out
    mapping = f"model: {{hidden: [16], init: {{name: {name}, mode: fan_avg}}}}\n"
    code, _, err = cli("check", str(write_spec(tmp_path, mapping, "mapping.yaml")))
    assert code == 0, err


def test_check_refuses_std_with_a_truncated_init(cli, tmp_path: Path):
    spec = "model: {hidden: [16], init: {name: he_truncated_normal, std: 0.1}}\n"
    code, _, err = cli("check", str(write_spec(tmp_path, spec)))
    assert code == 2
    assert "std applies to init 'normal' only" in err
