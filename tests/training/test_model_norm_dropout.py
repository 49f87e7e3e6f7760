"""Batch normalization and dropout inside the MLP's blocks: train/eval behaviour and layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dnntrick.spec.config import load_spec
from dnntrick.spec.schema import ModelSpec
from dnntrick.training.loop import evaluate
from dnntrick.training.model import build_model
from tests.conftest import write_spec


def bn_model(**norm: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(hidden=[8, 6], activation="elu", norm=norm), 5, 3)


def test_bn_uses_batch_statistics_in_training_and_running_ones_in_eval():
    model = bn_model(placement="before", momentum=0.3, eps=1e-3)
    block = model.hidden1
    x = torch.randn(64, 5) * 3 + 1
    z = F.linear(x, block.weight, block.bias)
    model.train()
    out = block(x)
    batch = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-3)
    torch.testing.assert_close(out, F.elu(batch))
    # running averages, PyTorch convention: new = (1 - m)·old + m·batch, old = (0, 1) at start
    torch.testing.assert_close(block.norm.running_mean, 0.3 * z.mean(0))
    torch.testing.assert_close(block.norm.running_var, 0.7 + 0.3 * z.var(0, unbiased=True))
    model.eval()
    running = (z - block.norm.running_mean) / torch.sqrt(block.norm.running_var + 1e-3)
    torch.testing.assert_close(block(x), F.elu(running))
    assert not torch.allclose(block(x), out)


def test_bn_after_the_activation_and_on_inputs_and_logits():
    model = bn_model(placement="after", input=True, logits=True)
    x = torch.randn(32, 5) * 2 + 3
    model.train()
    h = model.inputs(x)
    torch.testing.assert_close(h.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    a = F.elu(F.linear(h, model.hidden1.weight, model.hidden1.bias))
    expected = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(model.hidden1(h), expected)
    logits = model(x)
    torch.testing.assert_close(logits.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits.std(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


def test_dense_layers_feeding_bn_have_no_bias_unless_asked():
    before = bn_model(placement="before", logits=True)
    assert before.hidden1.bias is None and before.outputs.bias is None
    assert "hidden1.norm.running_mean" in before.state_dict()
    assert "hidden1.bias" not in before.state_dict()
    kept = bn_model(placement="before", dense_bias=True)
    assert kept.hidden1.bias is not None and kept.outputs.bias is not None
    after = bn_model(placement="after")
    assert after.hidden1.bias is not None  # the Dense feeds the activation, not the BN
    plain = build_model(ModelSpec(hidden=[8]), 5, 3)
    assert plain.layer_names() == ["hidden1", "outputs"]  # no inputs block unless asked


def test_evaluate_leaves_running_statistics_alone():
    model = bn_model(placement="before")
    model.train()
    model(torch.randn(16, 5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, torch.randn(100, 5), torch.randint(0, 3, (100,)), 32)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert model.training  # evaluate restores the mode it found


def dropout_model(rate: float, name: str = "dropout", activation: str = "tanh", **kw: object):
    torch.manual_seed(0)
    dropout = {"name": name, "rate": rate, **kw}
    spec = ModelSpec(hidden=[2000], activation=activation, dropout=dropout)
    return build_model(spec, 50, 3)


def test_dropout_zeroes_about_rate_in_training_and_nothing_in_eval():
    model = dropout_model(0.3, input_rate=0.0)
    assert "inputs" not in model.layer_names()
    x = torch.randn(200, 50)
    model.train()
    trained = model.hidden1(x)
    model.eval()
    plain = model.hidden1(x)
    zeros = (trained == 0).float().mean().item()
    assert zeros == pytest.approx(0.3, abs=0.01)
    assert (plain == 0).float().mean().item() < 1e-3  # tanh is never exactly 0 here
    kept = trained != 0
    torch.testing.assert_close(trained[kept], plain[kept] / 0.7)  # survivors scaled by 1/(1-p)
    torch.testing.assert_close(model.hidden1(x), plain)  # eval is deterministic


def test_input_dropout_rate_defaults_to_rate():
    model = dropout_model(0.5)
    x = torch.randn(400, 50) + 5  # no exact zeros in the input
    model.train()
    assert (model.inputs(x) == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    other = dropout_model(0.5, input_rate=0.2)
    assert (other.inputs(x) == 0).float().mean().item() == pytest.approx(0.2, abs=0.02)
    model.eval()
    torch.testing.assert_close(model.inputs(x), x)


@pytest.mark.integration
def test_alpha_dropout_keeps_selu_activations_normalized():
    x = torch.randn(4000, 50)

    def stats(name: str) -> tuple[float, float, bool]:
        torch.manual_seed(0)
        spec = ModelSpec(
            hidden=[300] * 10,
            activation="selu",
            init="lecun_normal",
            dropout={"name": name, "rate": 0.2, "input_rate": 0.0},
        )
        model = build_model(spec, 50, 3).train()
        with torch.no_grad():
            h = x
            for name_, block in model.named_children():
                if name_ != "outputs":
                    h = block(h)
            model.eval()
            changed = not torch.allclose(model.hidden1(x), model.train().hidden1(x))
        return h.mean().item(), h.var().item(), changed

    mean, var, active = stats("alpha")
    assert active  # it does drop in training
    assert abs(mean) < 0.1 and abs(var - 1) < 0.15
    _, plain_var, _ = stats("dropout")  # ordinary dropout inflates the variance by 1/(1-p)
    assert plain_var > 1.2


def test_spec_shorthands_and_overrides(tmp_path: Path):
    path = write_spec(tmp_path, "model:\n  norm: batch\n  dropout: 0.5\ntrain:\n  max_norm: 1.0\n")
    spec = load_spec(path, ["model.norm.momentum=0.01"])
    assert spec.model.norm is not None and spec.model.norm.momentum == 0.01
    assert spec.model.norm.placement == "before"
    assert spec.model.dropout is not None and spec.model.dropout.inputs == 0.5
    assert spec.train.max_norm is not None and spec.train.max_norm.max_value == 1.0
