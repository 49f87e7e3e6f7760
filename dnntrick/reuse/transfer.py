"""Transfer (the book's §5, 5a, 5b): reuse a trained model's layers, freeze some, cache the frozen
first layers' outputs, unfreeze them later.

A layer is one block of the MLP (hidden1 … hiddenN, outputs); the source's layer names are the
first part of its state-dict keys (`hidden1.weight` → hidden1). Patterns match with re.fullmatch.
Reused layers get every tensor of the source's layer (weights, biases, batch-norm statistics).
Frozen layers have requires_grad False, so they are left out of the optimizer; their batch norm
stays in eval mode (running statistics, never updated) even while the rest of the model trains.
"""

from __future__ import annotations

import hashlib
import re
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dnntrick.data.datasets import Splits
from dnntrick.errors import UsageError
from dnntrick.spec.schema import Spec, TransferSpec
from dnntrick.training.build import Prepared
from dnntrick.training.lr import set_lr
from dnntrick.training.model import eval_mode
from dnntrick.training.report import Reporter
from dnntrick.training.weights_check import tensor_problem

WEIGHTS_FILE = "model.safetensors"
RUN_SUFFIX = r"-(\d{8}-\d{6})(?:-(\d+))?"  # rundir.make_run_dir's <name>-<time>[-k]
# Modules whose training-mode output is random: their outputs cannot be computed once.
RANDOM_MODULES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd, nn.RReLU)


@dataclass
class Source:
    path: Path  # the .safetensors file
    sha256: str  # of the file's bytes
    state: dict[str, torch.Tensor]

    @property
    def layers(self) -> list[str]:
        """Layer names, each once, in natural order (hidden2 before hidden10; the file keeps no
        order of its own)."""
        return sorted({layer_of(k) for k in self.state}, key=natural)


def natural(name: str) -> list[Any]:
    """Sort key that orders the digits in a name by value."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def layer_of(key: str) -> str:
    return key.split(".", 1)[0]


def resolve_source(given: str) -> Path:
    """The .safetensors file that `given` names: a file, a run directory, or runs/NAME (the
    newest finished run runs/NAME-<time>/)."""
    try:
        return _resolve_source(given)
    except OSError as err:  # a name longer than the file system allows, a folder not readable
        shown = given if len(given) <= 80 else given[:80] + "…"
        raise UsageError(f"transfer.from: {shown}: cannot look it up ({err.strerror})") from None


def _resolve_source(given: str) -> Path:
    path = Path(given).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise UsageError(
                f"transfer.from: {given} has no {WEIGHTS_FILE}; give the run directory of a "
                "finished run or a .safetensors file"
            )
        return path / WEIGHTS_FILE
    if path.is_file():
        if path.suffix != ".safetensors":
            raise UsageError(
                f"transfer.from: {given} is not a .safetensors file; give a run directory or "
                "its model.safetensors"
            )
        return path
    runs: list[tuple[str, int, Path]] = []
    if path.parent.is_dir():
        for run in path.parent.iterdir():
            match = re.fullmatch(re.escape(path.name) + RUN_SUFFIX, run.name)
            if match and (run / WEIGHTS_FILE).is_file():
                runs.append((match[1], int(match[2] or 1), run))
    if not runs:
        raise UsageError(
            f"transfer.from: {given} does not exist, nor does a finished run "
            f"{path.name}-<time> in {path.parent}; give a run directory or a .safetensors file"
        )
    return max(runs)[2] / WEIGHTS_FILE


def load_source(given: str) -> Source:
    """Read the source's weights once; their sha256 goes into the run's summary."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = resolve_source(given)
    raw = path.read_bytes()
    try:
        state = load(raw)
    except (SafetensorError, ValueError) as err:
        raise UsageError(
            f"transfer.from: {path} is not a readable safetensors file ({err})"
        ) from None
    except Exception as err:  # a dtype torch lacks, a header safetensors half-accepts
        raise UsageError(
            f"transfer.from: {path} is not a readable safetensors file ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:120]})"
        ) from None
    if not state:
        raise UsageError(f"transfer.from: {path} holds no tensors")
    if problem := tensor_problem(state):
        raise UsageError(
            f"transfer.from: {path}: {problem}; give the model.safetensors of a dnntrick run"
        )
    return Source(path, hashlib.sha256(raw).hexdigest(), state)


def select(pattern: str, names: list[str], key: str, whose: str) -> list[str]:
    """Names that `pattern` matches whole; matching none is an error listing the names."""
    chosen = [n for n in names if re.fullmatch(pattern, n)]
    if not chosen:
        raise UsageError(
            f"transfer.{key}: {pattern!r} matches none of {whose} layers ({', '.join(names)})"
        )
    return chosen


def _shape(t: torch.Tensor | None) -> str:
    return "absent" if t is None else str(list(t.shape))


def copy_layers(model: nn.Module, source: Source, layers: list[str]) -> None:
    """Copy every tensor of the source's `layers` into `model`, or raise one error that lists
    each layer whose tensors do not match (source shape vs new shape)."""
    target = model.state_dict()  # tensors share storage with the model's parameters and buffers
    blocks = [name for name, _ in model.named_children()]
    problems = []
    for layer in layers:
        if layer not in blocks:
            problems.append(f"{layer} (not in the new model)")
            continue
        src = {k: v for k, v in source.state.items() if layer_of(k) == layer}
        new = {k: v for k, v in target.items() if layer_of(k) == layer}
        diffs = [
            f"{key.split('.', 1)[1]} {_shape(src.get(key))} vs {_shape(new.get(key))}"
            for key in dict.fromkeys([*new, *src])  # the new model's order: weight, bias
            if key not in src or key not in new or src[key].shape != new[key].shape
        ]
        if diffs:
            problems.append(f"{layer} ({', '.join(diffs)})")
    if problems:
        raise UsageError(
            f"transfer.reuse: {len(problems)} reused layer(s) do not fit the new model "
            f"(source shape vs new shape): {'; '.join(problems)}. Change model.hidden to match "
            f"the source or reuse fewer layers (new model's layers: {', '.join(blocks)})"
        )
    with torch.no_grad():
        for key, value in source.state.items():
            if layer_of(key) in layers:
                target[key].copy_(value)


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def hold_eval(module: nn.Module) -> None:
    """Keep `module` in eval mode whatever model.train() says (a frozen batch norm)."""
    setattr(module, "train", types.MethodType(_stay_in_eval, module))  # noqa: B010
    nn.Module.train(module, False)


def release_eval(module: nn.Module, training: bool) -> None:
    """Undo hold_eval: the module follows model.train()/eval() again."""
    if "train" in vars(module):
        delattr(module, "train")
    module.train(training)


def freeze(model: nn.Module, layers: list[str]) -> None:
    """No gradients for `layers`; their batch norm normalizes with its running statistics."""
    for name in layers:
        block = model.get_submodule(name)
        block.requires_grad_(False)
        for module in block.modules():
            if isinstance(module, _BatchNorm):
                hold_eval(module)


def unfreeze(model: nn.Module, layers: list[str]) -> list[nn.Parameter]:
    """Let `layers` train again; returns their parameters (to add to the optimizer)."""
    params: list[nn.Parameter] = []
    for name in layers:
        block = model.get_submodule(name)
        block.requires_grad_(True)
        params += list(block.parameters())
        for module in block.modules():
            if isinstance(module, _BatchNorm):
                release_eval(module, model.training)
    return params


def cached_prefix(model: nn.Module, frozen: list[str]) -> int:
    """How many leading blocks the cache covers: up to the last frozen one. Every block in it
    must be frozen (or have no parameters nor batch norm) and give the same output every pass."""
    blocks = list(model.named_children())
    names = [name for name, _ in blocks]
    end = max(names.index(f) for f in frozen) + 1
    for name, block in blocks[:end]:
        if name not in frozen and (
            any(True for _ in block.parameters())
            or any(isinstance(m, _BatchNorm) for m in block.modules())
        ):
            raise UsageError(
                f"transfer.cache_frozen: {name} trains but comes before the frozen "
                f"{names[end - 1]}; caching needs the frozen layers first (freeze {name} too, "
                "or set cache_frozen: false)"
            )
        if random := [type(m).__name__ for m in block.modules() if isinstance(m, RANDOM_MODULES)]:
            raise UsageError(
                f"transfer.cache_frozen: {name} has {random[0]}, which changes its output every "
                "epoch, so it cannot be computed once; set cache_frozen: false"
            )
    if end == len(blocks):
        raise UsageError("transfer.cache_frozen: every layer is frozen; nothing would train")
    return end


@torch.inference_mode()
def _features(prefix: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    parts = [prefix(x[start : start + batch_size]) for start in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else x.new_zeros((0, 0))


def cache_features(prefix: nn.Module, data: Splits, batch_size: int) -> Splits:
    """The prefix's outputs over train/val/test, computed once in eval mode."""
    with eval_mode(prefix):
        # clone: inference tensors cannot be saved for backward by the layers trained on them
        x = {s: _features(prefix, getattr(data, f"x_{s}"), batch_size).clone() for s in SPLITS}
    return Splits(
        x["train"], data.y_train, x["val"], data.y_val, x["test"], data.y_test, data.classes
    )


SPLITS = ("train", "val", "test")


def layer_table(
    model: nn.Module, reused: list[str], frozen: list[str], cached: list[str], unfreeze_after: Any
) -> str:
    """One fixed-column row per layer: origin, state, parameters, batch-norm mode."""
    rows = [f"{'layer':<12}{'origin':<8}{'state':<11}{'parameters':>11}  notes"]
    for name, block in model.named_children():
        state = "cached" if name in cached else "frozen" if name in frozen else "trainable"
        notes = []
        if any(isinstance(m, _BatchNorm) for m in block.modules()):
            notes.append(
                "BN frozen: running statistics, not updated"
                if name in frozen
                else "BN trains: batch statistics"
            )
        if name in frozen and unfreeze_after:
            notes.append(f"trains after epoch {unfreeze_after}")
        params = sum(p.numel() for p in block.parameters())
        origin = "reused" if name in reused else "new"
        rows.append(f"{name:<12}{origin:<8}{state:<11}{params:>11,}  {'; '.join(notes)}".rstrip())
    return "\n".join(rows)


def prepare_transfer(spec: Spec, model: nn.Module, data: Splits, reporter: Reporter) -> Prepared:
    """The runner's hook: load, check and copy the reused layers, freeze, and maybe cache."""
    t: TransferSpec | None = spec.transfer
    if t is None or t.source is None:
        raise UsageError("transfer.from: no source; give --from RUN_DIR or transfer.from")
    source = load_source(t.source)
    reused = select(t.reuse, source.layers, "reuse", f"the source's ({source.path})")
    copy_layers(model, source, reused)
    blocks = [name for name, _ in model.named_children()]
    frozen = select(t.freeze, blocks, "freeze", "the new model's") if t.freeze else []
    if stray := [f for f in frozen if f not in reused]:
        raise UsageError(
            f"transfer.freeze: {', '.join(stray)} would be frozen but is not reused (reused: "
            f"{', '.join(reused)}); freeze only reused layers"
        )
    if len(frozen) == len(blocks):
        raise UsageError("transfer.freeze: every layer is frozen; nothing would train")
    freeze(model, frozen)

    trained, trained_data, cached, cache_seconds = model, data, [], 0.0
    if t.cache_frozen:
        end = cached_prefix(model, frozen)
        cached = blocks[:end]
        assert isinstance(model, nn.Sequential)
        t0 = time.perf_counter()
        trained_data = cache_features(model[:end], data, spec.train.eval_batch_size)
        cache_seconds = time.perf_counter() - t0
        trained = model[end:]  # shares its layers with `model`, which is what gets saved
    reporter.message(layer_table(model, reused, frozen, cached, t.unfreeze_after))
    if cached:
        images = len(data.x_train) + len(data.x_val) + len(data.x_test)
        reporter.message(
            f"cached: {cached[0]}…{cached[-1]} ran once over {images:,} images "
            f"({cache_seconds:.2f} s); training sees {trained_data.in_features} features"
        )

    summary: dict[str, Any] = {
        "transfer": {
            "from": str(source.path.resolve()),
            "sha256": source.sha256,
            "reused": reused,
            "frozen": frozen,
            "cached": cached,
            "cache_seconds": cache_seconds,
            "unfreeze_after": t.unfreeze_after,
            "trainable_parameters": sum(
                p.numel() for p in trained.parameters() if p.requires_grad
            ),  # at the start
        }
    }

    def after_epoch(epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if epoch != t.unfreeze_after:
            return
        # the optimizer only holds the trainable parameters: the unfrozen ones join as a group
        optimizer.add_param_group({"params": unfreeze(model, frozen)})
        set_lr(optimizer, lambda group: float(group["lr"]) * t.unfreeze_lr_factor)
        reporter.message(
            f"after epoch {epoch}: unfroze {', '.join(frozen)}; every layer trains from now on"
            + (f" (lr × {t.unfreeze_lr_factor:g})" if t.unfreeze_lr_factor != 1 else "")
        )

    return Prepared(trained, trained_data, summary, after_epoch if t.unfreeze_after else None)
