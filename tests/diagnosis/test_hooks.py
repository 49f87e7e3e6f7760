"""Per-layer statistics: dead/saturated counting, the gradient maths on a hand-built net, the
training recorder (and that with diagnostics off nothing is hooked and the step is unchanged)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnntrick.data.datasets import load_splits
from dnntrick.diagnosis.hooks import Recorder, blocks, probe
from dnntrick.diagnosis.verdict import LayerStats
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.training.model import MLP, Dense, build_model
from dnntrick.tricks.optimizers import build_optimizer
from tests.conftest import tiny_overrides, write_spec


def _net(*layers: tuple[str, Dense]) -> MLP:
    return MLP(OrderedDict(layers))


def _set(layer: nn.Linear, weight: list[list[float]], bias: list[float] | None = None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias or [0.0] * len(weight)))


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.01), nn.ELU()])
def test_dead_units_are_those_never_positive_on_the_batch(act: nn.Module):
    x = torch.tensor([[1.0, 2.0], [3.0, 1.0], [2.0, 0.5]])
    hidden = Dense(2, 4, act)
    # unit 0 always positive, unit 1 never, unit 2 exactly 0 (never positive), unit 3 twice.
    _set(hidden, [[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0], [1.0, -1.0]])
    net = _net(("hidden1", hidden), ("outputs", Dense(4, 2)))
    stats = probe(net, x, torch.tensor([0, 1, 0])).layers
    assert blocks(net)[0].kind == "relu"
    assert stats[0].dead == pytest.approx(0.5)
    assert stats[0].saturated is None and stats[1].dead is None  # outputs: no activation


@pytest.mark.parametrize(
    ("act", "pre", "expected"),
    [
        # sigmoid(±5) = 0.0067/0.9933 are within 1% of the limits; sigmoid(±4) = 0.018/0.982 not
        (nn.Sigmoid(), [5.0, -5.0, 4.0, -4.0, 0.0, 6.0], 3 / 6),
        # tanh(2.5) = 0.9866 > 0.98, tanh(2.0) = 0.964 is not
        (nn.Tanh(), [2.5, -2.5, 2.0, 0.0, -3.0, 1.0], 3 / 6),
    ],
)
def test_saturated_fraction_counts_outputs_within_one_percent_of_the_range(act, pre, expected):
    hidden = Dense(1, len(pre), act)
    _set(hidden, [[v] for v in pre])
    net = _net(("hidden1", hidden), ("outputs", Dense(len(pre), 2)))
    stats = probe(net, torch.ones(1, 1), torch.tensor([0])).layers
    assert stats[0].saturated == pytest.approx(expected)
    assert stats[0].dead is None


def test_gradient_norms_and_ratio_match_the_chain_rule_by_hand():
    # hidden1: a = W1 x + b1 (no activation), outputs: z = W2 a + b2, L = mean CE.
    w1 = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]
    w2 = [[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]]
    net = _net(("hidden1", Dense(3, 2)), ("outputs", Dense(2, 3)))
    _set(net.hidden1, w1, [0.1, -0.2])
    _set(net.outputs, w2, [0.0, 0.3, -0.3])
    x = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    stats = probe(net, x.float(), y).layers

    W1, W2 = torch.tensor(w1, dtype=torch.float64), torch.tensor(w2, dtype=torch.float64)
    a = x @ W1.T + torch.tensor([0.1, -0.2], dtype=torch.float64)
    z = a @ W2.T + torch.tensor([0.0, 0.3, -0.3], dtype=torch.float64)
    dz = (torch.softmax(z, dim=1) - F.one_hot(y, 3)) / len(x)  # ∂L/∂z, [B, 3]
    da = dz @ W2  # ∂L/∂a, [B, 2]
    g2, g1 = dz.T @ a, da.T @ x  # ∂L/∂W2 [3, 2], ∂L/∂W1 [2, 3]
    assert stats[1].grad == pytest.approx(g2.norm().item(), rel=1e-5)
    assert stats[0].grad == pytest.approx(g1.norm().item(), rel=1e-5)
    assert stats[0].ratio == pytest.approx((g1.norm() / g2.norm()).item(), rel=1e-5)
    assert stats[1].ratio == 1.0
    assert stats[0].out_grad == pytest.approx(da.norm().item(), rel=1e-5)
    assert stats[1].out_grad == pytest.approx(dz.norm().item(), rel=1e-5)
    assert stats[0].mean == pytest.approx(a.mean().item(), rel=1e-5)
    assert stats[0].std == pytest.approx(a.std().item(), rel=1e-5)
    assert all(p.grad is None for p in net.parameters())  # the probe leaves no gradients
    assert not net.hidden1._forward_hooks and not net.outputs._forward_hooks


SPEC = """\
name: rec
seed: 5
model: {hidden: [32, 16], activation: relu}
train: {epochs: 3, batch_size: 50, optimizer: {name: sgd, lr: 0.05}}
"""


def _run(tmp_path: Path, tiny_root: Path, extra: list[str]):
    spec = load_spec(write_spec(tmp_path, SPEC), tiny_overrides(tiny_root, 3) + extra)
    return spec, run_spec(spec, out=tmp_path / "runs")


def test_recorder_writes_steps_layers_and_update_ratios(tmp_path: Path, tiny_root: Path):
    spec, result = _run(tmp_path, tiny_root, ["train.diagnostics={every: 7}"])
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().split("\n")
            if line]  # fmt: skip
    # 500 training images / batch 50 = 10 steps an epoch; steps 0, 7, ..., 28 over 3 epochs
    assert [[d["step"] for d in r["diagnostics"]] for r in rows] == [[0, 7], [14], [21, 28]]
    first = rows[0]["diagnostics"][0]["layers"]
    assert list(first) == ["hidden1", "hidden2", "outputs"]
    assert set(first["hidden1"]) == {"mean", "std", "dead", "grad", "ratio", "out_grad", "update"}
    assert "dead" not in first["outputs"] and first["outputs"]["ratio"] == 1.0

    # Step 0's update ratio is lr·‖∇W‖/‖W‖ for plain SGD, ‖W‖ of the initial weights.
    torch.manual_seed(spec.seed)
    data = load_splits(spec.data)
    initial = build_model(spec.model, data.in_features, data.n_classes)
    for name in ("hidden1", "outputs"):
        w0 = getattr(initial, name).weight.norm().item()
        expected = 0.05 * first[name]["grad"] / w0
        assert first[name]["update"] == pytest.approx(expected, rel=1e-3)

    diagnosis = json.loads((result.run_dir / "summary.json").read_text())["diagnosis"]
    assert diagnosis["every"] == 7 and diagnosis["steps"] == 30
    assert diagnosis["first"]["step"] == 0 and diagnosis["last"]["step"] == 28
    assert diagnosis["last"]["verdict"] == "healthy"


def test_recorder_hooks_leave_training_identical_and_are_removed(tmp_path, tiny_root):
    _, off = _run(tmp_path, tiny_root, [])
    _, on = _run(tmp_path, tiny_root, ["train.diagnostics={every: 3}"])
    for key, value in off.model.state_dict().items():
        assert torch.equal(value, on.model.state_dict()[key]), key
    assert [r["train_loss"] for r in off.history] == [r["train_loss"] for r in on.history]
    assert all(not m._forward_hooks for m in on.model.modules())
    assert all(not p._post_accumulate_grad_hooks for p in on.model.parameters())  # type: ignore[attr-defined]


def test_diagnostics_off_registers_no_hook_and_matches_a_plain_loop(
    tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("a hook was registered with diagnostics off")

    monkeypatch.setattr(Recorder, "__init__", refuse)
    for owner, method in (
        (nn.Module, "register_forward_hook"),
        (torch.Tensor, "register_hook"),
        (torch.Tensor, "register_post_accumulate_grad_hook"),
        (torch.optim.Optimizer, "register_step_post_hook"),
        (torch.optim.Optimizer, "register_step_pre_hook"),
    ):
        monkeypatch.setattr(owner, method, refuse)
    spec, result = _run(tmp_path, tiny_root, [])
    assert "diagnostics" not in result.history[0] and "diagnosis" not in result.summary
    monkeypatch.undo()

    # The same training written out by hand: same seed, same order, same step.
    torch.manual_seed(spec.seed)
    data = load_splits(spec.data)
    model = build_model(spec.model, data.in_features, data.n_classes)
    optimizer = build_optimizer(spec.train.optimizer, model.parameters(), "cpu")
    generator = torch.Generator().manual_seed(spec.seed)
    n, bs = len(data.x_train), spec.train.batch_size
    for _ in range(spec.train.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for key, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key]), key


def test_compact_entries_round_trip():
    stats = LayerStats("hidden1", 10, "relu", mean=0.123456, std=1.0, dead=0.25, grad=2e-7)
    compact = stats.compact()
    assert compact == {"mean": 0.1235, "std": 1.0, "dead": 0.25, "grad": 2e-7}
    back = LayerStats.from_compact("hidden1", compact)
    assert back.dead == 0.25 and back.saturated is None and math.isclose(back.grad or 0, 2e-7)


def test_clipping_bounds_the_recorded_update_where_the_unclipped_run_diverges(
    tmp_path, tiny_root, capsys
):
    from dnntrick.errors import DivergedError
    from dnntrick.training.report import ConsoleReporter
    from tests.conftest import REPO

    path = REPO / "experiments" / "exploding.yaml"
    overrides = [*tiny_overrides(tiny_root), "data.train_limit=500", "train.diagnostics={every: 5}"]
    with pytest.raises(DivergedError):
        run_spec(load_spec(path, overrides), out=tmp_path / "runs", reporter=ConsoleReporter())
    out = capsys.readouterr().out
    assert "diagnostics at step 0 (first recorded): exploding" in out  # printed on divergence

    clipped = [*overrides, "train.clip={by: global_norm, threshold: 1.0}"]
    result = run_spec(load_spec(path, clipped), out=tmp_path / "runs")
    first = result.history[0]["diagnostics"][0]["layers"]
    layers = result.history[-1]["diagnostics"][-1]["layers"]
    assert first["hidden1"]["grad"] > 1e5  # the raw gradient explodes...
    assert all(0 < v["update"] < 1e-2 for v in layers.values())  # ...the clipped steps do not
    assert result.summary["diagnosis"]["last"]["verdict"] == "exploding"


def test_resumed_run_numbers_its_recorded_steps_on(cli, monkeypatch, tmp_path, tiny_root):
    from tests.conftest import RESUME_SPEC, signal_at

    text = RESUME_SPEC.format(root=tiny_root) + "  diagnostics: {every: 4}\n"
    spec_path = write_spec(tmp_path, text)
    reference = run_spec(load_spec(spec_path), out=tmp_path / "reference").run_dir
    signal_at(monkeypatch, 13, True)  # mid-epoch 2 (10 steps an epoch)
    code, _, _ = cli("train", str(spec_path), "--out", str(tmp_path / "runs"), "-q")
    monkeypatch.undo()
    assert code == 130
    [run_dir] = (tmp_path / "runs").iterdir()
    code, _, err = cli("train", "--resume", str(run_dir), "-q")
    assert code == 0, err

    def snapshots(folder: Path) -> dict[int, dict]:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return {d["step"]: d["layers"] for line in lines for d in json.loads(line)["diagnostics"]}

    ref, resumed = snapshots(reference), snapshots(run_dir)
    assert sorted(ref) == [0, 4, 8, 12, 16, 20, 24, 28]
    # Epoch 2's snapshots taken before the interrupt were not yet written; the rest match.
    assert {16, 20, 24, 28} <= set(resumed) <= set(ref)
    assert all(resumed[step] == ref[step] for step in resumed)
