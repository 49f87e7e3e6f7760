"""Per-layer statistics of an MLP, collected by hooks on its Dense blocks.

For each block, in depth order (hidden1 … outputs), on one batch, a being the output of the
block's activation (before any dropout, and before batch norm when BN comes after it; for the
outputs block, the logits):
  mean, std   of a, over the batch and the units
  dead        ReLU family only: fraction of units never positive on the batch
  saturated   sigmoid/tanh only: fraction of outputs within 1% of the range's ends
              (sigmoid < 0.01 or > 0.99, tanh |a| > 0.98), where the slope is < 4% of its peak
  grad        ‖∂L/∂W‖ (Frobenius) of the block's weight, as backward left it (before any clipping)
  out_grad    ‖∂L/∂a‖: the gradient backpropagated to a
  update      ‖ΔW‖ / ‖W‖ over one optimizer step (training only)
  ratio       grad / the outputs layer's grad (computed when the numbers are read)

`probe()` measures a fresh model on one batch (`dnntrick diagnose`). `Recorder` measures the
training steps 0, N, 2N, … through module, tensor, parameter and optimizer hooks, so the training
step itself is the same code with diagnostics on or off (and nothing is hooked when off). The
statistics stay on the device until `Recorder.flush()` reads them once per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from dnntrick.diagnosis.verdict import LayerStats
from dnntrick.training.model import eval_mode
from dnntrick.training.step import forward_loss
from dnntrick.tricks.activations import ACTIVATIONS

if TYPE_CHECKING:
    from dnntrick.spec.schema import DiagnosticsSpec, Spec
    from dnntrick.training.report import Reporter

FIELDS = ("mean", "std", "dead", "saturated", "grad", "out_grad", "update")
COL = {name: i for i, name in enumerate(FIELDS)}
SATURATION_MARGIN = 0.01  # fraction of the output range counted as "at the limit"
RANGES = {"Sigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}  # torch class -> output range
FAMILY_BY_CLASS = {entry.torch_class: entry.family for entry in ACTIVATIONS.values()}


@dataclass
class Block:
    name: str
    module: nn.Linear  # holds the weight
    at: nn.Module  # the child whose output is measured: the activation (Identity when none)
    kind: str  # "relu" (dead units counted), "saturating" (saturation counted) or "other"
    limits: tuple[float, float] | None = None


def blocks(model: nn.Module) -> list[Block]:
    """The model's Dense blocks (its nn.Linear children) in depth order, with their act kind."""
    found = []
    for name, module in model.named_children():
        if not isinstance(module, nn.Linear):
            continue
        at = getattr(module, "act", None)
        at = at if isinstance(at, nn.Module) else module
        act = type(at).__name__
        family = FAMILY_BY_CLASS.get(act)
        kind = "relu" if family == "relu" else "saturating" if act in RANGES else "other"
        found.append(Block(name, module, at, kind, RANGES.get(act)))
    return found


def _activation_stats(block: Block, a: torch.Tensor) -> dict[str, torch.Tensor]:
    """mean, std, dead, saturated (those that apply) of a block's output a [B, units]."""
    a = a.detach().float()
    stats = {"mean": a.mean(), "std": a.std() if a.numel() > 1 else a.new_zeros(())}
    if block.kind == "relu":
        stats["dead"] = 1.0 - (a > 0).any(dim=0).float().mean()
    if block.limits is not None:
        lo, hi = block.limits
        margin = SATURATION_MARGIN * (hi - lo)
        stats["saturated"] = ((a < lo + margin) | (a > hi - margin)).float().mean()
    return stats


@dataclass
class Collector:
    """The hooks of one measurement: arm() before a forward pass, rows hold the numbers after
    backward. rows: [n_blocks, len(FIELDS)] on the device; `filled` marks the numbers that were
    measured (a NaN in a filled cell is a real NaN: the net diverged)."""

    layers: list[Block]
    samples: int = 0  # keep up to this many output values per block (for the plot)
    rows: torch.Tensor | None = None
    filled: torch.Tensor | None = None
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    before: dict[str, torch.Tensor] = field(default_factory=dict)  # W before the step
    handles: list[Any] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def arm(self, snapshot_weights: bool = False) -> None:
        device = self.layers[0].module.weight.device
        self.rows = torch.full((len(self.layers), len(FIELDS)), math.nan, device=device)
        self.filled = torch.zeros(self.rows.shape, dtype=torch.bool, device=device)
        self.seen = set()
        for i, block in enumerate(self.layers):
            self.handles.append(block.at.register_forward_hook(self._forward(i, block)))
            weight = block.module.weight
            if weight.requires_grad:
                self.handles.append(weight.register_post_accumulate_grad_hook(self._grad(i)))
            if snapshot_weights:
                self.before[block.name] = weight.detach().clone()

    def _forward(self, i: int, block: Block) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            # Skip evaluation passes and repeated calls: the first training forward is measured.
            if not module.training or torch.is_inference_mode_enabled() or block.name in self.seen:
                return
            self.seen.add(block.name)
            for name, value in _activation_stats(block, output).items():
                self.put(i, name, value)
            if self.samples:
                flat = output.detach().float().flatten()
                step = max(1, len(flat) // self.samples)
                self.kept[block.name] = flat[::step][: self.samples].cpu()
            if output.requires_grad:
                output.register_hook(self._out_grad(i))

        return hook

    def put(self, i: int, name: str, value: torch.Tensor) -> None:
        """Store one number on the device (no host sync)."""
        assert self.rows is not None and self.filled is not None
        self.rows[i, COL[name]] = value
        self.filled[i, COL[name]] = True

    def _out_grad(self, i: int) -> Any:
        rows, filled = self.rows, self.filled  # this measurement's, even if re-armed meanwhile

        def hook(grad: torch.Tensor) -> None:  # returns None: the gradient passes unchanged
            assert rows is not None and filled is not None
            rows[i, COL["out_grad"]] = grad.detach().float().norm()
            filled[i, COL["out_grad"]] = True

        return hook

    def _grad(self, i: int) -> Any:
        def hook(weight: torch.Tensor) -> None:
            assert weight.grad is not None
            self.put(i, "grad", weight.grad.detach().float().norm())

        return hook

    def measure_updates(self) -> None:
        """Fill the update column from the weights saved by arm(snapshot_weights=True)."""
        for i, block in enumerate(self.layers):
            old = self.before.pop(block.name, None)
            if old is not None:
                delta = (block.module.weight.detach() - old).norm()
                self.put(i, "update", delta / old.norm().clamp_min(1e-12))

    def disarm(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def to_stats(
    layers: list[Block], rows: list[list[float]], filled: list[list[bool]]
) -> list[LayerStats]:
    """LayerStats for each block from one measurement's rows and filled marks (on the host)."""
    last = rows[-1][COL["grad"]] if filled[-1][COL["grad"]] else None
    stats = []
    for block, row, marks in zip(layers, rows, filled, strict=True):
        values = {name: (row[j] if marks[j] else None) for name, j in COL.items()}
        grad = values["grad"]
        ratio = None
        if grad is not None and last is not None:
            ratio = grad / last if last else math.inf if grad else math.nan
        stats.append(
            LayerStats(
                layer=block.name,
                units=block.module.out_features,
                kind=block.kind,
                ratio=ratio,
                **values,
            )
        )
    return stats


@dataclass
class Probe:
    layers: list[LayerStats]
    loss: float
    samples: dict[str, Any]  # layer -> numpy array of (up to `samples`) output values


def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int = 20_000) -> Probe:
    """Push one batch forward and backward through `model` (in training mode, so batch norm
    uses batch statistics) and measure every block. The model's gradients are left zeroed."""
    layers = blocks(model)
    collector = Collector(layers, samples=samples)
    model.zero_grad(set_to_none=True)
    collector.arm()
    try:
        with eval_mode(model, training=True):
            _, loss = forward_loss(model, F.cross_entropy, x, y)
            loss.backward()
    finally:
        collector.disarm()
        model.zero_grad(set_to_none=True)
    assert collector.rows is not None and collector.filled is not None
    rows, filled = collector.rows.cpu().tolist(), collector.filled.cpu().tolist()
    kept = {name: values.numpy() for name, values in collector.kept.items()}
    return Probe(to_stats(layers, rows, filled), float(loss.detach()), kept)


class Recorder:
    """Records the block statistics of training steps 0, every, 2·every, … (counted over the
    whole run) and the update ratio ‖ΔW‖/‖W‖ of those steps. Hooks only: the loop is unchanged.

    The forward hooks are registered only for a recorded step and removed after it; the
    optimizer's step hooks (always on while recording) count steps and close each measurement.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, every: int, start: int = 0
    ):
        self.layers = blocks(model)
        self.every = every
        self.step = start  # optimizer steps already taken (a resumed run)
        self.collector = Collector(self.layers)
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # step, rows, filled
        self.first: list[LayerStats] | None = None
        self.last: list[LayerStats] | None = None
        self.first_step = self.last_step = 0
        self.handles = [
            optimizer.register_step_post_hook(self._after_step),
        ]
        if start % every == 0:
            self.collector.arm(snapshot_weights=True)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.collector.handles:  # this step was being recorded
            self.collector.measure_updates()
            self.collector.disarm()
            assert self.collector.rows is not None and self.collector.filled is not None
            self.pending.append((self.step, self.collector.rows, self.collector.filled))
        self.step += 1
        if self.step % self.every == 0:
            self.collector.arm(snapshot_weights=True)

    @classmethod
    def attach(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        spec: DiagnosticsSpec | None,
        start: int = 0,
    ) -> Recorder | None:
        """A Recorder on `model` and `optimizer`, or None (and no hook at all) when `spec` is.
        `start`: optimizer steps already taken (a resumed run), so step numbers run on."""
        return None if spec is None else cls(model, optimizer, spec.every, start)

    def flush(self) -> list[dict[str, Any]]:
        """The snapshots recorded since the last flush, as JSON-ready dicts (one host read)."""
        if not self.pending:
            return []
        steps = [step for step, _, _ in self.pending]
        values = torch.stack([rows for _, rows, _ in self.pending]).cpu().tolist()
        marks = torch.stack([filled for _, _, filled in self.pending]).cpu().tolist()
        self.pending.clear()
        snapshots = []
        for step, rows, filled in zip(steps, values, marks, strict=True):
            stats = to_stats(self.layers, rows, filled)
            if self.first is None:
                self.first, self.first_step = stats, step
            self.last, self.last_step = stats, step
            snapshots.append({"step": step, "layers": {s.layer: s.compact() for s in stats}})
        return snapshots

    def finish(self, spec: Spec, reporter: Reporter) -> dict[str, Any]:
        """Remove the hooks, show the verdicts of the first and last recorded steps, and return
        them for summary.json."""
        from dnntrick.diagnosis.verdict import Context, diagnose, spec_notes

        self.close()
        self.flush()
        ctx = Context.from_spec(spec)
        result: dict[str, Any] = {"every": self.every, "steps": self.step}
        for when, layers in (("first", self.first), ("last", self.last)):
            if layers is None:
                continue
            diagnosis = diagnose(layers, ctx)
            result[when] = {"step": self.first_step if when == "first" else self.last_step}
            result[when] |= diagnosis.to_json()
            colour = "green" if diagnosis.verdict == "healthy" else "red"
            reporter.message(
                f"[bold]diagnostics[/] at step {result[when]['step']} ({when} recorded): "
                f"[{colour}]{diagnosis.verdict}[/]"
            )
            for finding in diagnosis.findings:
                reporter.message(f"  {finding.kind}: {finding.summary}")
                reporter.message(f"    cause: {finding.cause}; remedy: {finding.remedy}")
        for note in spec_notes(ctx):
            reporter.message(f"  note: {note.cause}; {note.remedy}")
        return result

    def close(self) -> None:
        """Remove every hook (the model and optimizer are as if never recorded)."""
        self.collector.disarm()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def probe_spec(spec: Spec, batch_size: int = 512) -> Probe:
    """Build `spec`'s model exactly as a run would (same seed, same weights, on spec.device) and
    probe it on a fixed batch of `batch_size` training images drawn with the spec's seed."""
    from dnntrick.training.build import build

    built = build(spec, train=False)
    data, generator = built.data, built.generator
    n = len(data.x_train)
    idx = torch.randperm(n, generator=generator)[: min(batch_size, n)].to(built.device)
    return probe(built.model, data.x_train[idx], data.y_train[idx])
