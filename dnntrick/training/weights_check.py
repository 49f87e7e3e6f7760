"""What a weights file or a checkpoint's training state must hold before any of it is used.

safetensors checks its own header (length, JSON, offsets), and torch.load(weights_only=True)
refuses code; neither knows what dnntrick wrote. A tampered or foreign file that passes both
would otherwise be cast silently (`copy_` turns int64 or bool into float32, float64 loses bits),
load NaN weights, or fail deep in the loop with a KeyError. Each function here returns the first
problem as a phrase naming the tensor or key and what was expected, or None; the callers add
the file and raise their own error type (UsageError for a transfer source, CorruptedError for a
checkpoint, whose fallback logic then names the previous good one).
"""

from __future__ import annotations

import re
from typing import Any

import torch

# the MLP's state-dict keys: a block (model.py's names), then a parameter or buffer path
KEY = re.compile(r"(inputs|hidden[1-9]\d*|outputs)(\.\w+)+")
COUNTERS = ("num_batches_tracked",)  # batch norm's step counter: int64, the only non-float


def expected_dtype(key: str) -> torch.dtype:
    return torch.int64 if key.rsplit(".", 1)[-1] in COUNTERS else torch.float32


def tensor_problem(tensors: dict[str, Any], mlp: bool = True) -> str | None:
    """Dtypes of a state dict read from a file; with `mlp` (a transfer source), also the MLP's
    names and finite values (a checkpoint's names are checked against its model on restore,
    and non-finite values are the finite watch's to report)."""
    if not tensors:
        return "it holds no tensors"
    for key, value in tensors.items():
        if mlp and not KEY.fullmatch(key):
            shown = key if len(key) <= 60 else key[:60] + "…"
            return (
                f"tensor {shown!r} is not named layer.param (e.g. hidden1.weight; layers are "
                "inputs, hidden1…hiddenN, outputs)"
            )
        if not isinstance(value, torch.Tensor):
            return f"{key} is a {type(value).__name__}, not a tensor"
        want = expected_dtype(key)
        if value.dtype != want:
            return f"tensor {key} is {_dtype(value.dtype)}, expected {_dtype(want)}"
        if mlp and want.is_floating_point and not bool(torch.isfinite(value).all()):
            return f"tensor {key} holds NaN or infinite values"
    return None


def fit_problem(tensors: dict[str, torch.Tensor], model: dict[str, torch.Tensor]) -> str | None:
    """Missing, extra or reshaped tensors against the model's own state dict."""
    if missing := [k for k in model if k not in tensors]:
        return f"tensor {missing[0]} is missing ({len(missing)} missing)"
    if extra := [k for k in tensors if k not in model]:
        return f"tensor {extra[0]} is not in this model ({len(extra)} extra)"
    for key, value in tensors.items():
        if value.shape != model[key].shape:
            return f"tensor {key} has shape {list(value.shape)}, expected {list(model[key].shape)}"
    return None


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---- a checkpoint's training state (checkpoint.Checkpointer.save writes it) ----

RESULT_KEYS = {
    "history": list,
    "best_epoch": int,
    "best_val_accuracy": (int, float),
    "stopped_early": bool,
    "train_seconds": (int, float),
    "train_samples": int,
}


def state_problem(state: dict[str, Any]) -> str | None:
    """Every key the resume path reads, with its type (and the RNG states' shapes)."""
    layout: dict[str, Any] = {
        "epoch": int,
        "step": int,
        "order_rng": torch.Tensor,
        "loss_sum": (torch.Tensor, type(None)),
        "correct": (torch.Tensor, type(None)),
        "seconds": (int, float),
        "parts": dict,
        "rng": dict,
        "result": dict,
        "spec": str,
        "spec_hash": str,
    }
    if problem := _layout(state, layout, ""):
        return problem
    if state["epoch"] < 1 or state["step"] < 0:
        return f"position epoch {state['epoch']}, step {state['step']} is impossible"
    if problem := _generator("order_rng", state["order_rng"]):
        return problem
    rng = state["rng"]
    if problem := _layout(rng, {"torch": torch.Tensor, "python": dict, "numpy": dict}, "rng."):
        return problem
    if problem := _generator("rng.torch", rng["torch"]):
        return problem
    python = rng["python"]
    if problem := _layout(python, {"version": int, "mt": torch.Tensor}, "rng.python."):
        return problem
    if python["mt"].dtype != torch.int64 or python["mt"].shape != (625,):
        return "rng.python.mt is not Python's Mersenne Twister state (625 int64)"
    numpy = rng["numpy"]
    layout = {"keys": torch.Tensor, "pos": int, "has_gauss": int, "cached": (int, float)}
    if problem := _layout(numpy, layout, "rng.numpy."):
        return problem
    if numpy["keys"].dtype != torch.int64 or numpy["keys"].shape != (624,):
        return "rng.numpy.keys is not numpy's Mersenne Twister state (624 int64)"
    if not 0 <= numpy["pos"] <= 624:
        return f"rng.numpy.pos {numpy['pos']} is out of range 0…624"
    if problem := _layout(state["result"], RESULT_KEYS, "result."):
        return problem
    return None


def _layout(node: dict[str, Any], layout: dict[str, Any], prefix: str) -> str | None:
    if not isinstance(node, dict):
        return f"{prefix.rstrip('.')} is not a mapping"
    for key, kind in layout.items():
        if key not in node:
            return f"{prefix}{key} is missing"
        value = node[key]
        bad_bool = isinstance(value, bool) and kind is not bool
        if bad_bool or not isinstance(value, kind):
            return f"{prefix}{key} is a {type(value).__name__}, expected {_kind(kind)}"
    return None


def _kind(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)


def _generator(key: str, value: torch.Tensor) -> str | None:
    """A torch.Generator's state is a 1-D uint8 tensor (its length depends on the torch build;
    set_state checks it)."""
    if value.dtype != torch.uint8 or value.dim() != 1:
        got = f"{_dtype(value.dtype)} {list(value.shape)}"
        return f"{key} is not a torch generator state (1-D uint8, got {got})"
    return None
