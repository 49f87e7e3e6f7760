"""ℓ1/ℓ2 penalties, gradient clipping, max-norm and MC dropout: each hook and its place in fit()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dnntrick.data.datasets import Splits
from dnntrick.errors import SpecError
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.spec.schema import ClipSpec, ModelSpec, TrainSpec
from dnntrick.training.loop import evaluate, fit, mc_evaluate
from dnntrick.training.model import build_model
from dnntrick.training.report import Reporter
from dnntrick.tricks.regularization import StepTricks, apply_max_norm, clip_gradients
from tests.conftest import tiny_overrides, write_spec


def small_model(**model: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(hidden=[12, 8], activation="elu", **model), 6, 3)


def batch(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def fit_steps(model: torch.nn.Module, steps: int = 1, lr: float = 0.1, **train: object):
    """fit() for `steps` SGD steps of a full batch of 40 (one step per epoch)."""
    x, y = batch()
    data = Splits(x, y, x[:0], y[:0], x[:0], y[:0], classes=("a", "b", "c"))
    spec = TrainSpec(epochs=steps, batch_size=40, optimizer={"name": "sgd", "lr": lr}, **train)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return fit(model, optimizer, data, spec, torch.Generator().manual_seed(0), Reporter())


def test_penalty_is_exactly_l1_and_l2_of_the_dense_weights():
    model = small_model(norm={"placement": "after", "input": True})
    with torch.no_grad():  # biases and BN parameters far from 0: any leak would show
        for name, p in model.named_parameters():
            if not name.endswith(".weight") or ".norm." in name:
                p.fill_(5.0)
    weights = [model.hidden1.weight, model.hidden2.weight, model.outputs.weight]
    base = torch.tensor(1.25)
    l1 = StepTricks(model, TrainSpec(l1=0.001)).add_penalty(base) - base
    l2 = StepTricks(model, TrainSpec(l2=0.01)).add_penalty(base) - base
    both = StepTricks(model, TrainSpec(l1=0.001, l2=0.01)).add_penalty(base) - base
    expected_l1 = 0.001 * sum(w.abs().sum() for w in weights)
    expected_l2 = 0.01 * sum(w.square().sum() for w in weights)
    torch.testing.assert_close(l1, expected_l1)
    torch.testing.assert_close(l2, expected_l2)
    torch.testing.assert_close(both, expected_l1 + expected_l2)
    assert StepTricks(model, TrainSpec()).add_penalty(base) is base


def test_l2_step_adds_the_penalty_gradient_to_weights_only():
    plain, reg = small_model(), small_model()
    fit_steps(plain)
    fit_steps(reg, l2=0.05)
    start = small_model()
    for name in ("hidden1", "hidden2", "outputs"):
        w0 = getattr(start, name).weight
        # SGD: w1 = w0 - lr·(∇CE + 2·l2·w0), so the two runs differ by exactly lr·2·l2·w0
        torch.testing.assert_close(
            getattr(plain, name).weight - getattr(reg, name).weight, 0.1 * 2 * 0.05 * w0
        )
        torch.testing.assert_close(getattr(plain, name).bias, getattr(reg, name).bias)


def test_l1_step_adds_the_sign_of_the_weights():
    plain, reg = small_model(), small_model()
    fit_steps(plain)
    fit_steps(reg, l1=0.01)
    w0 = small_model().hidden1.weight
    torch.testing.assert_close(plain.hidden1.weight - reg.hidden1.weight, 0.1 * 0.01 * w0.sign())


def grads_of(model: torch.nn.Module, scale: float = 50.0) -> list[torch.nn.Parameter]:
    x, y = batch()
    (F.cross_entropy(model(x), y) * scale).backward()
    return list(model.parameters())


@pytest.mark.parametrize("by", ["value", "norm", "global_norm"])
def test_clipping_bounds_the_gradients_and_returns_the_preclip_norm(by: str):
    params = grads_of(small_model())
    before = [p.grad.clone() for p in params]
    preclip = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in before]))
    t = 0.5
    assert max(g.abs().max().item() for g in before) > t  # clipping has work to do
    total = clip_gradients(params, ClipSpec(by=by, threshold=t))
    torch.testing.assert_close(total, preclip)
    after = [p.grad for p in params]
    if by == "value":
        assert all(g.abs().max().item() <= t for g in after)
        torch.testing.assert_close(after[0], before[0].clamp(-t, t))
    elif by == "norm":
        norms = [torch.linalg.vector_norm(g).item() for g in after]
        assert max(norms) <= t
        for g0, g1 in zip(before, after, strict=True):  # each tensor keeps its direction
            torch.testing.assert_close(g1, g0 * min(1.0, t / (g0.norm().item() + 1e-6)))
    else:
        global_after = torch.linalg.vector_norm(torch.stack([g.norm() for g in after])).item()
        assert global_after <= t + 1e-6
        torch.testing.assert_close(after[0], before[0] * (t / preclip))


def test_clipping_in_fit_bounds_each_update_and_records_the_norm():
    model, start = small_model(), small_model()
    result = fit_steps(model, steps=3, lr=1.0, clip={"by": "value", "threshold": 1e-3})
    moved = (model.hidden1.weight - start.hidden1.weight).abs().max().item()
    assert moved <= 3e-3 + 1e-6  # 3 steps of lr·t, plus float32 rounding of weights near 1
    unclipped = small_model()
    fit_steps(unclipped, steps=1, lr=1.0)
    assert (unclipped.hidden1.weight - start.hidden1.weight).abs().max().item() > 1e-2
    row = result.history[0]
    # one step per epoch: the epoch's mean and max are that step's pre-clip global norm
    params = grads_of(small_model(), scale=1.0)
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()
    assert row["grad_norm_mean"] == pytest.approx(expected, rel=1e-5)
    assert row["grad_norm_max"] == pytest.approx(expected, rel=1e-5)
    assert "grad_norm_mean" not in fit_steps(small_model()).history[0]


def test_grad_norm_mean_and_max_over_several_steps(tiny_root: Path, tmp_path: Path):
    spec = load_spec(
        write_spec(tmp_path, "model: {hidden: [16]}\ntrain: {batch_size: 50}\n"),
        [*tiny_overrides(tiny_root, 2), "train.clip={by: global_norm, threshold: 0.1}"],
    )
    result = run_spec(spec, out=tmp_path / "runs")
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(r["grad_norm_max"] > r["grad_norm_mean"] > 0.1 for r in rows)


def test_apply_max_norm_caps_every_row_and_leaves_short_rows_alone():
    w = torch.randn(20, 30)
    w[0] *= 0.01  # a row already under the cap
    short = w[0].clone()
    apply_max_norm([w], 1.0)
    assert w.norm(dim=1).max().item() <= 1.0 + 1e-6  # float32 rounding
    torch.testing.assert_close(w[0], short)
    assert w.norm(dim=1).min().item() < 1.0 < torch.randn(30).norm().item()


@pytest.mark.parametrize("outputs", [False, True])
def test_max_norm_in_fit_caps_hidden_rows_after_every_step(outputs: bool):
    model = small_model(init={"name": "normal", "std": 2.0})
    fit_steps(model, steps=2, lr=0.5, max_norm={"max_value": 0.7, "outputs": outputs})
    for name in ("hidden1", "hidden2"):
        assert getattr(model, name).weight.norm(dim=1).max().item() <= 0.7 + 1e-6
    out_max = model.outputs.weight.norm(dim=1).max().item()
    assert (out_max <= 0.7 + 1e-6) is outputs


def dropout_setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = small_model(dropout={"rate": 0.3}, norm={"placement": "before"})
    model.train()
    x, y = batch(200)
    model(x)  # running statistics that differ from the initial (0, 1)
    return model, x, y


def test_mc_dropout_averages_n_stochastic_passes():
    model, x, y = dropout_setup()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss, accuracy = mc_evaluate(model, x, y, batch_size=64, samples=7, seed=3)
    assert model.training  # the mode it found
    for key, value in model.state_dict().items():  # BN ran on its running statistics
        torch.testing.assert_close(value, state[key])
    # by hand: dropout on, BN in eval, softmax averaged over 7 passes, batches of 64
    model.eval()
    model.inputs.drop.train()
    model.hidden1.drop.train()
    model.hidden2.drop.train()
    torch.manual_seed(3)
    probs = []
    with torch.no_grad():
        for start in range(0, 200, 64):
            xb = x[start : start + 64]
            probs.append(sum(torch.softmax(model(xb), 1) for _ in range(7)) / 7)
    p = torch.cat(probs)
    assert accuracy == pytest.approx((p.argmax(1) == y).float().mean().item())
    assert loss == pytest.approx(-p[torch.arange(200), y].log().mean().item(), rel=1e-5)
    model.train()
    plain = evaluate(model, x, y, 64)
    assert (loss, accuracy) != plain  # dropout was active
    assert mc_evaluate(model, x, y, 64, 7, seed=3) == (loss, accuracy)  # same seed, same answer
    assert mc_evaluate(model, x, y, 64, 7, seed=4)[0] != loss


def test_run_reports_plain_and_mc_accuracy(tiny_root: Path, tmp_path: Path):
    text = "model: {hidden: [32], dropout: 0.3}\ntrain: {mc_dropout: {samples: 5}}\n"
    spec = load_spec(write_spec(tmp_path, text), tiny_overrides(tiny_root, 2))
    summary = run_spec(spec, out=tmp_path / "runs").summary
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["mc_dropout_samples"] == 5
    assert 0 <= saved["mc_test_accuracy"] <= 1 and 0 <= saved["test_accuracy"] <= 1
    assert saved["mc_test_loss"] != saved["test_loss"]


def test_train_quiet_prints_both_accuracies(cli, tiny_root: Path, tmp_path: Path):
    text = "model: {hidden: [32], dropout: 0.3}\ntrain: {mc_dropout: {samples: 3}}\n"
    path = write_spec(tmp_path, text, "mc.yaml")
    out_dir = str(tmp_path / "runs")
    code, out, _ = cli("train", str(path), *tiny_overrides(tiny_root), "--quiet", "--out", out_dir)
    assert code == 0
    assert out.startswith("mc: test_accuracy=") and " mc_test_accuracy=" in out


def test_mc_dropout_without_dropout_is_a_spec_error(tmp_path: Path):
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, "train: {mc_dropout: {samples: 10}}\n"))
    assert any("train.mc_dropout needs dropout" in p for p in info.value.problems)


def test_clip_spec_errors_name_the_field(tmp_path: Path):
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, "train: {clip: {by: valeu, threshold: -1}}\n"))
    problems = " ".join(info.value.problems)
    assert "train.clip.by" in problems and "train.clip.threshold" in problems
