"""The training step (eager, and the body a CUDA graph captures), train.precision, and the
train.cuda_graphs refusal on machines without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dnntrick.errors import UsageError
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.spec.schema import ModelSpec, OptimizerSpec, TrainSpec
from dnntrick.training.loop import train_epoch
from dnntrick.training.lr import current_lr, set_lr
from dnntrick.training.model import build_model
from dnntrick.training.report import Reporter
from dnntrick.training.step import EagerStep, GraphStep, StepParts, make_step, train_step
from dnntrick.tricks.optimizers import OPTIMIZERS, build_optimizer, torch_optimizer_args
from tests.conftest import tiny_overrides, write_spec

SPEC = """\
name: tiny
seed: 3
model: {hidden: [32, 16], activation: elu}
train: {epochs: 2, batch_size: 50, optimizer: {name: adam, lr: 0.003}}
"""


def setup(n: int = 120, seed: int = 0, optimizer: str = "sgd"):
    torch.manual_seed(seed)
    x, y = torch.randn(n, 20), torch.randint(0, 4, (n,))
    model = build_model(ModelSpec(hidden=[16, 8], activation={"name": "elu"}), 20, 4)
    opt = build_optimizer(OptimizerSpec(name=optimizer, lr=0.1), model.parameters(), "cpu")
    return model, opt, x, y


def eager(model, opt, x, y, **parts) -> EagerStep:
    return EagerStep(StepParts(model, opt, **parts), x, y)


def test_train_epoch_sums_every_sample_and_keeps_the_last_small_batch():
    model, opt, x, y = setup(n=120)
    step = eager(model, opt, x, y)
    train_epoch(step, torch.arange(120), 50, Reporter())  # 50 + 50 + 20
    # the same three steps by hand, on a copy that starts from the same weights
    model2, opt2, _, _ = setup(n=120)
    total, correct = 0.0, 0
    for idx in torch.arange(120).split(50):
        logits = model2(x[idx])
        loss = torch.nn.functional.cross_entropy(logits, y[idx])
        opt2.zero_grad()
        loss.backward()
        opt2.step()
        total += loss.item() * len(idx)
        correct += int((logits.argmax(dim=1) == y[idx]).sum())  # before each update, as the step
    assert step.sums.loss_sum.item() == pytest.approx(total, rel=1e-6)
    assert step.sums.correct.item() == correct
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    step.sums.set(torch.zeros(()), torch.zeros((), dtype=torch.long))  # fit's epoch start
    sums = step.sums.loss_sum
    train_epoch(step, torch.arange(50), 50, Reporter())
    assert step.sums.loss_sum is sums  # in place: a captured graph adds into the same tensor
    assert step.sums.loss_sum.item() < total / 2  # one batch's sum only
    # a resumed epoch starts from the checkpoint's sums and its first step
    step.sums.set(torch.tensor(1000.0), torch.tensor(7))
    train_epoch(step, torch.arange(120), 50, Reporter(), first=2)  # only the last batch of 20
    assert 1000.0 < step.sums.loss_sum.item() < 1000.0 + total / 2
    assert 7 <= step.sums.correct.item() <= 7 + 20  # the last batch holds 20 rows


def test_train_step_with_another_loss_and_no_sums_trains_an_autoencoder():
    """Pretraining's use: (outputs, inputs) → MSE, no accuracy; the same function updates."""
    torch.manual_seed(0)
    x = torch.rand(64, 12)
    net = torch.nn.Sequential(torch.nn.Linear(12, 4), torch.nn.Linear(4, 12))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    parts = StepParts(net, opt, loss=torch.nn.functional.mse_loss)
    first = train_step(parts, x, x).item()
    for _ in range(50):
        last = train_step(parts, x, x).item()
    assert last < first / 2


class ZeroingTricks:
    """StepTricks' hooks, recording their order; clipping zeroes every gradient."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.calls = model, []

    def add_penalty(self, loss: torch.Tensor) -> torch.Tensor:
        self.calls.append("penalty")
        return loss

    def clip_gradients(self) -> None:
        self.calls.append("clip")
        assert all(p.grad is not None for p in self.model.parameters())  # after backward
        torch.nn.utils.clip_grad_value_(self.model.parameters(), 0.0)

    def apply_max_norm(self) -> None:
        self.calls.append("max_norm")


def test_tricks_hooks_run_in_order_and_clip_comes_before_the_optimizer_step():
    model, opt, x, y = setup()
    before = [p.detach().clone() for p in model.parameters()]
    tricks = ZeroingTricks(model)
    step = eager(model, opt, x, y, tricks=tricks)
    step(torch.arange(50))
    assert tricks.calls == ["penalty", "clip", "max_norm"]
    assert step.sums.loss_sum.item() > 0  # the step ran …
    for p, q in zip(before, model.parameters(), strict=True):
        assert torch.equal(p, q)  # … but SGD saw the clipped (zero) gradients


def test_clip_step_counter_lives_on_the_device():
    """Under CUDA graphs Python code in the step runs once; the counter must be a tensor."""
    from dnntrick.spec.schema import ClipSpec
    from dnntrick.tricks.regularization import StepTricks

    model, opt, x, y = setup()
    tricks = StepTricks(model, TrainSpec(clip=ClipSpec(by="global_norm", threshold=0.5)))
    step = eager(model, opt, x, y, tricks=tricks)
    train_epoch(step, torch.arange(120), 50, Reporter())
    assert isinstance(tricks.steps, torch.Tensor) and tricks.steps.item() == 3
    row = tricks.epoch_metrics()
    assert row["grad_norm_max"] >= row["grad_norm_mean"] > 0
    assert tricks.steps.item() == 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_sets_the_dtype_inside_the_step(precision: str):
    model, opt, x, y = setup()
    seen: list[torch.dtype] = []
    model.hidden1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    step = eager(model, opt, x, y, precision=precision)
    before = model.hidden1.weight.detach().clone()
    step(torch.arange(50))
    assert seen == [torch.bfloat16 if precision == "bf16" else torch.float32]
    assert model.hidden1.weight.dtype == torch.float32  # weights and optimizer stay float32
    assert not torch.equal(before, model.hidden1.weight)
    assert step.sums.loss_sum.dtype == torch.float32


def test_bf16_runs_end_to_end_on_cpu_and_learns(tmp_path: Path, tiny_root: Path):
    spec = load_spec(write_spec(tmp_path, SPEC), [*tiny_overrides(tiny_root, 3), "device=cpu"])
    fp32 = run_spec(spec, out=tmp_path / "runs")
    bf16 = run_spec(
        spec.model_copy(update={"train": spec.train.model_copy(update={"precision": "bf16"})}),
        out=tmp_path / "runs",
    )
    assert bf16.summary["test_accuracy"] > 0.8
    # different arithmetic, so a different (close) trajectory: the option is not ignored
    assert bf16.history[0]["train_loss"] != fp32.history[0]["train_loss"]
    assert bf16.history[0]["train_loss"] == pytest.approx(fp32.history[0]["train_loss"], rel=0.05)
    assert "precision: bf16" in (bf16.run_dir / "spec.yaml").read_text()


def test_graph_body_computes_the_eager_step():
    """What GraphStep captures (gather into static buffers by index_select, then the step) is
    the eager step on the same batch; checked on the CPU, where it runs without capture."""
    idx = torch.tensor([5, 3, 99, 0, 42])
    m1, o1, x, y = setup()
    plain = eager(m1, o1, x, y)
    plain(idx)
    m2, o2, _, _ = setup()
    graph = GraphStep(StepParts(m2, o2), x, y, batch_size=5)
    graph.idx.copy_(idx)
    graph.captured_body()
    assert torch.equal(graph.xb, x[idx]) and torch.equal(graph.yb, y[idx])
    assert graph.sums.loss_sum.item() == pytest.approx(plain.sums.loss_sum.item(), rel=1e-6)
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_make_step_picks_eager_and_refuses_graphs_off_cuda():
    model, opt, x, y = setup()
    assert type(make_step(StepParts(model, opt), x, y, TrainSpec())) is EagerStep
    with pytest.raises(UsageError, match=r"train\.cuda_graphs: needs a CUDA device"):
        make_step(StepParts(model, opt), x, y, TrainSpec(cuda_graphs=True))


def test_cuda_graphs_on_cpu_is_a_one_line_spec_error(cli, tmp_path: Path):
    path = write_spec(tmp_path, SPEC)
    code, _, err = cli("check", str(path), "device=cpu", "train.cuda_graphs=true")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "train.cuda_graphs: needs device cuda (got device: cpu)" in err
    code, _, err = cli("check", str(path), "device=cuda", "train.cuda_graphs=true")
    assert code == 0
    code, _, err = cli(
        "check", str(path), "device=cuda", "train.cuda_graphs=true", "train.on_nonfinite=skip_step"
    )
    assert code == 2 and "train.cuda_graphs: cannot skip steps" in err
    code, _, err = cli(
        "check", str(path), "device=cuda", "train.cuda_graphs=true", "train.diagnostics={every: 5}"
    )
    assert code == 2 and "train.cuda_graphs: diagnostics hooks" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto must resolve to the CPU")
def test_cuda_graphs_with_device_auto_and_no_gpu_exits_2_without_a_run_dir(
    cli, tmp_path: Path, tiny_root: Path
):
    path = write_spec(tmp_path, SPEC)
    out = tmp_path / "runs"
    code, _, err = cli(
        "train", str(path), *tiny_overrides(tiny_root), "train.cuda_graphs=true", "--out", str(out)
    )
    assert code == 2
    assert "train.cuda_graphs: needs a CUDA device" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_gets_fast_kernels_and_can_be_captured(name: str):
    spec = OptimizerSpec(name=name, lr=0.01)
    cls, kwargs = torch_optimizer_args(spec, "cuda")
    assert kwargs.get("fused") is True or kwargs.get("foreach") is True
    assert torch_optimizer_args(spec, "cpu") == (cls, kwargs)  # the same kernels on the CPU
    assert "fused" not in torch_optimizer_args(spec, "mps")[1]
    _, graph_kwargs = torch_optimizer_args(spec, "cuda", capturable=True)
    assert graph_kwargs.get("capturable") is True or graph_kwargs.get("fused") is True
    # the CPU accepts these options and steps with them (a wrong keyword raises TypeError)
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(spec, model.parameters(), "cpu")
    before = model.weight.detach().clone()
    model(torch.randn(4, 3)).square().sum().backward()
    optimizer.step()
    assert not torch.equal(before, model.weight)
    group = optimizer.param_groups[0]
    assert group.get("fused") is True or group.get("foreach") is True


def test_fused_adam_matches_torch_default_adam_closely():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(20, 5), torch.nn.Linear(20, 5)
    b.load_state_dict(a.state_dict())
    fast = build_optimizer(OptimizerSpec(name="adam", lr=0.01), a.parameters(), "cpu")
    plain = torch.optim.Adam(b.parameters(), lr=0.01)
    for _ in range(20):
        x = torch.randn(8, 20)
        for model, opt in ((a, fast), (b, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)


def test_capturable_lr_is_a_tensor_that_set_lr_changes_in_place():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(OptimizerSpec(name="adam", lr=0.01), model.parameters(), "cpu", True)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and current_lr(opt) == pytest.approx(0.01)
    set_lr(opt, 0.5)
    assert opt.param_groups[0]["lr"] is lr and current_lr(opt) == pytest.approx(0.5)
    plain = build_optimizer(OptimizerSpec(name="sgd", lr=0.01), model.parameters(), "cpu")
    set_lr(plain, 0.2)
    assert plain.param_groups[0]["lr"] == 0.2
