"""The tricks the training loop applies around each step, and MC-dropout evaluation.

A step runs: forward → loss + ℓ1/ℓ2 penalty → backward → clip gradients → optimizer step →
max-norm. `StepTricks` holds what those hooks need (which tensors, the spec) and the epoch's
pre-clip gradient-norm sums, which stay on the device until `epoch_metrics()` reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from dnntrick.spec.schema import ClipSpec, Spec, TrainSpec


def dense_weights(model: nn.Module, outputs: bool = True) -> list[torch.Tensor]:
    """The weight matrices of the Dense layers (no biases, no BN): what ℓ1/ℓ2 and max-norm see."""
    return [
        module.weight
        for name, module in model.named_children()
        if isinstance(module, nn.Linear) and (outputs or name != "outputs")
    ]


def penalty(weights: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
    """l1·Σ|w| + l2·Σw² over `weights` (a 0-d tensor)."""
    total = torch.zeros((), device=weights[0].device)
    for w in weights:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.square().sum()
    return total


def clip_gradients(params: list[nn.Parameter], spec: ClipSpec) -> torch.Tensor:
    """Clip the gradients of `params` in place; return their global L2 norm BEFORE clipping
    (a 0-d device tensor: reading it is left to the caller, once per epoch)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if spec.by == "value":
        torch.nn.utils.clip_grad_value_(params, spec.threshold)
    elif spec.by == "norm":  # each tensor on its own, as Keras clipnorm
        for g in grads:
            g.mul_(torch.clamp(spec.threshold / (torch.linalg.vector_norm(g) + 1e-6), max=1.0))
    else:
        torch.nn.utils.clip_grads_with_norm_(params, spec.threshold, total)
    return total


@torch.no_grad()
def apply_max_norm(weights: list[torch.Tensor], max_value: float) -> None:
    """Scale each row of each [out, in] weight (a neuron's incoming weights) to norm ≤ max_value."""
    for w in weights:
        w.copy_(torch.renorm(w, 2, 0, max_value))


class StepTricks:
    """The spec's penalty, clipping and max-norm, bound to one model for one training run."""

    def __init__(self, model: nn.Module, spec: TrainSpec):
        self.spec = spec
        # all of them: frozen ones (transfer) have no .grad and are skipped; unfrozen ones join
        self.params = list(model.parameters())
        self.penalized = dense_weights(model) if spec.l1 or spec.l2 else []
        self.capped = (
            dense_weights(model, outputs=spec.max_norm.outputs) if spec.max_norm is not None else []
        )
        device = self.params[0].device if self.params else torch.device("cpu")
        self.norm_sum = torch.zeros((), device=device)
        self.norm_max = torch.zeros((), device=device)
        # a device counter, not a Python int: it must advance inside a replayed CUDA graph too
        self.steps = torch.zeros((), device=device, dtype=torch.long)

    def add_penalty(self, loss: torch.Tensor) -> torch.Tensor:
        if not self.penalized:
            return loss
        # frozen weights (transfer) add a constant: left out, as when they are cached away
        trainable = [w for w in self.penalized if w.requires_grad]
        return loss + penalty(trainable, self.spec.l1, self.spec.l2) if trainable else loss

    def clip_gradients(self) -> None:
        if self.spec.clip is None:
            return
        total = clip_gradients(self.params, self.spec.clip)
        self.norm_sum += total
        torch.maximum(self.norm_max, total, out=self.norm_max)
        self.steps += 1

    def apply_max_norm(self) -> None:
        if self.spec.max_norm is not None:
            # frozen weights (transfer) must stay exactly as they were
            trainable = [w for w in self.capped if w.requires_grad]
            apply_max_norm(trainable, self.spec.max_norm.max_value)

    def state_dict(self) -> dict[str, Any]:
        """The epoch's running gradient-norm sums (a mid-epoch checkpoint carries them)."""
        return {"norm_sum": self.norm_sum, "norm_max": self.norm_max, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.norm_sum.copy_(state["norm_sum"])
        self.norm_max.copy_(state["norm_max"])
        self.steps = state["steps"]

    def epoch_metrics(self) -> dict[str, float]:
        """The epoch's pre-clip global gradient norm (mean, max) when clipping; then reset."""
        if self.spec.clip is None:
            return {}
        steps = int(self.steps.item())
        if not steps:
            return {}
        row = {
            "grad_norm_mean": self.norm_sum.item() / steps,
            "grad_norm_max": self.norm_max.item(),
        }
        self.norm_sum.zero_()
        self.norm_max.zero_()
        self.steps.zero_()
        return row


def describe(spec: Spec) -> str:
    """A short line naming the tricks a spec turns on ('' when none), for the run's header."""
    parts: list[str] = []
    model, train = spec.model, spec.train
    if model.norm:
        where = [model.norm.placement] + [k for k in ("input", "logits") if getattr(model.norm, k)]
        parts.append(f"bn ({', '.join(where)}, momentum {model.norm.momentum:g})")
    if model.dropout:
        kind = "alpha dropout" if model.dropout.name == "alpha" else "dropout"
        parts.append(f"{kind} {model.dropout.rate:g} (inputs {model.dropout.inputs:g})")
    penalties: dict[str, Any] = {"l1": train.l1, "l2": train.l2}
    parts += [f"{k} {v:g}" for k, v in penalties.items() if v]
    if train.clip:
        parts.append(f"clip {train.clip.by} {train.clip.threshold:g}")
    if train.max_norm:
        parts.append(f"max-norm {train.max_norm.max_value:g}")
    if train.mc_dropout:
        parts.append(f"mc dropout ×{train.mc_dropout.samples}")
    return ", ".join(parts)
