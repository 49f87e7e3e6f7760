"""Checkpoints: everything a run needs to continue bitwise where it stopped, written atomically.

A checkpoint is a pair in RUN_DIR/checkpoints/, named by how far training got:
`epoch-0003` (3 epochs done) or `epoch-0003-step-000040` (interrupted 40 steps into epoch 4):

- `<name>.safetensors`: the model's weights (plain tensors, nothing to execute);
- `<name>.pt`: the training state — optimizer, scheduler and early-stopping state dicts, the
  position in the epoch, the data-order generator's state, every RNG state (torch CPU/CUDA,
  python `random`, numpy) as tensors and ints, the metrics so far, the spec and its hash, versions.
  It is read only with `torch.load(..., weights_only=True)`: a file that would import or run code
  is refused, never retried unsafely.

The .safetensors is written first and the .pt last, each to a temp file in the same folder that is
flushed, fsynced and renamed; a checkpoint exists once its .pt does. Older checkpoints are deleted
only after the new one is in place; the last one and the best epoch's one are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pickle
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnntrick.errors import (
    CheckpointError,
    CorruptedError,
    UnsafeFileError,
    UsageError,
    WriteError,
)
from dnntrick.training.rundir import atomic_write, versions
from dnntrick.training.signals import test_point
from dnntrick.training.weights_check import state_problem, tensor_problem

FORMAT = 1
FOLDER = "checkpoints"
NAME = re.compile(r"^epoch-(\d{4,})(?:-step-(\d{6,}))?$")


@dataclass
class Position:
    """Where training stands: `step` steps of epoch `epoch` are done (step 0: it has not begun).

    Mid-epoch, the running sums and the seconds spent so far belong to the epoch in progress, and
    `order_rng` is the data-order generator's state before this epoch's permutation was drawn.
    """

    epoch: int = 1
    step: int = 0
    order_rng: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None  # scalar, on the training device while training
    correct: torch.Tensor | None = None
    seconds: float = 0.0

    @property
    def name(self) -> str:
        done = f"epoch-{self.epoch - 1:04d}"
        return f"{done}-step-{self.step:06d}" if self.step else done

    def begin_epoch(
        self, epoch: int, device: torch.device
    ) -> tuple[int, torch.Tensor, torch.Tensor, float]:
        """(first step, loss sum, correct count, seconds already spent) for `epoch`."""
        if epoch == self.epoch and self.step and self.loss_sum is not None:
            assert self.correct is not None
            return self.step, self.loss_sum.to(device), self.correct.to(device), self.seconds
        zero = torch.zeros((), device=device)
        return 0, zero, torch.zeros((), device=device, dtype=torch.long), 0.0


def spec_hash(spec_yaml: str) -> str:
    return hashlib.sha256(spec_yaml.encode()).hexdigest()[:16]


# ---- RNG states as tensors and ints (loadable with weights_only=True) ----


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from: torch CPU (and CUDA when started), python, numpy."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert kind == "MT19937" and isinstance(keys, np.ndarray)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- reading ----


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if match := re.search(r"GLOBAL ([\w.]+)", text):
        return f"refused: it asks to import {match.group(1)}"
    return (text[:120] + "…") if len(text) > 120 else (text or type(err).__name__)


def read_state(path: Path) -> dict[str, Any]:
    """The training state in `path`, loaded with weights_only=True (never any other way)."""
    try:
        data = path.read_bytes()
        if not data:
            raise EOFError("the file is empty")
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):  # the pickle names a Python callable: it would run code
            raise UnsafeFileError(
                f"{path}: {_describe(err)}; a checkpoint holds tensors and plain values only, "
                "so it was not loaded (nothing in it ran)"
            ) from None
        raise CorruptedError(path, f"not a checkpoint ({_describe(err)})") from None
    except OSError as err:
        raise CorruptedError(path, err.strerror or str(err)) from None
    except Exception as err:  # truncated zip, EOF, bad header: whatever torch says
        raise CorruptedError(path, _describe(err)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CorruptedError(path, "not a dnntrick checkpoint (format field missing)")
    if problem := state_problem(state):
        raise CorruptedError(path, problem)
    return state


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in a .safetensors file; a damaged file is a CorruptedError naming it."""
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        if not data:
            raise ValueError("the file is empty")
        tensors = load(data)
    except OSError as err:
        raise CorruptedError(path, err.strerror or str(err)) from None
    except Exception as err:
        raise CorruptedError(path, _describe(err)) from None
    if problem := tensor_problem(tensors, mlp=False):
        raise CorruptedError(path, problem)
    return tensors


# ---- the checkpoint folder ----


def _key(name: str) -> tuple[int, int]:
    match = NAME.match(name)
    assert match
    return int(match.group(1)), int(match.group(2) or 0)


def listing(folder: Path) -> list[str]:
    """Names of the complete checkpoints in `folder` (those with a .pt), oldest first."""
    if not folder.is_dir():
        return []
    names = [p.stem for p in folder.glob("epoch-*.pt") if NAME.match(p.stem)]
    return sorted(names, key=_key)


@dataclass
class Loaded:
    """A checkpoint read back: its weights, its state and where they came from."""

    path: Path  # the .pt file
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]

    @property
    def position(self) -> Position:
        s = self.state
        return Position(
            s["epoch"], s["step"], s["order_rng"], s["loss_sum"], s["correct"], s["seconds"]
        )

    def describe(self) -> str:
        done = f"{self.state['epoch'] - 1} epochs done"
        return done + (f" and {self.state['step']} steps of the next" if self.state["step"] else "")


def load(folder: Path, name: str) -> Loaded:
    state = read_state(folder / f"{name}.pt")
    weights_path = folder / f"{name}.safetensors"
    if not weights_path.exists():
        raise CorruptedError(weights_path, "the weights file is missing")
    return Loaded(folder / f"{name}.pt", read_weights(weights_path), state)


def load_latest(run_dir: Path) -> Loaded:
    """The newest checkpoint of a run. If it is damaged, the error names it and the newest good
    one before it (deleting the damaged pair resumes from that one)."""
    folder = run_dir / FOLDER
    names = listing(folder)
    if not names:
        raise UsageError(f"{run_dir}: no checkpoint to resume from (no {FOLDER}/epoch-*.pt)")
    try:
        return load(folder, names[-1])
    except CorruptedError as err:
        for earlier in reversed(names[:-1]):
            with contextlib.suppress(CorruptedError, UnsafeFileError):
                load(folder, earlier)
                err.fallback = f"{folder / earlier}.pt (delete {folder / names[-1]}.* to use it)"
                break
        raise err from None


class Checkpointer:
    """Writes a run's checkpoints; `folder=None` writes nothing (training without a run dir)."""

    def __init__(self, folder: Path | None, spec_yaml: str = "", every: int = 1):
        self.spec_yaml = spec_yaml
        self.every = every
        self.open(folder)

    def open(self, folder: Path | None) -> None:
        """Write into `folder` from now on (None: nothing); `last` is its newest checkpoint."""
        self.folder = folder
        self.last: Path | None = None  # the newest checkpoint on disk (.pt), once there is one
        if folder is not None and (names := listing(folder)):
            self.last = folder / f"{names[-1]}.pt"

    def due(self, epoch: int, final: bool) -> bool:
        return self.folder is not None and (final or epoch % self.every == 0)

    def save(
        self,
        at: Position,
        parts: dict[str, Any],
        generator: torch.Generator,
        result: Any,
        best_epoch: int = 0,
    ) -> Path | None:
        """Write a checkpoint at `at`. `parts` maps names to objects with state_dict() (model,
        optimizer, early stopping, scheduler…); `result` is the loop's FitResult. Returns the .pt.
        """
        if self.folder is None:
            return None
        model, others = parts["model"], {k: v for k, v in parts.items() if k != "model"}
        state = {
            "format": FORMAT,
            "epoch": at.epoch,
            "step": at.step,
            "order_rng": at.order_rng if at.order_rng is not None else generator.get_state(),
            "loss_sum": None if at.loss_sum is None else at.loss_sum.detach().cpu(),
            "correct": None if at.correct is None else at.correct.detach().cpu(),
            "seconds": at.seconds,
            "parts": {k: v.state_dict() for k, v in others.items() if v is not None},
            "rng": rng_state(),
            "result": dataclasses.asdict(result),
            "spec": self.spec_yaml,
            "spec_hash": spec_hash(self.spec_yaml),
            "versions": {k: str(v) for k, v in versions().items()},  # TorchVersion → str
        }
        from safetensors.torch import save

        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = at.name
        try:
            atomic_write(self.folder / f"{name}.safetensors", save(weights, {"position": name}))
            test_point("checkpoint")  # a test hook (signals.py): mid-checkpoint
            atomic_write(self.folder / f"{name}.pt", buffer.getvalue())  # the commit point
            _fsync_dir(self.folder)
        except (WriteError, OSError) as err:
            kept = f"; the previous checkpoint {self.last} is intact" if self.last else ""
            reason = err.reason if isinstance(err, WriteError) else err.strerror or str(err)
            raise CheckpointError(
                f"cannot write checkpoint {self.folder / name}: {reason}{kept}"
            ) from None
        self.last = self.folder / f"{name}.pt"
        self._prune(keep={name, f"epoch-{best_epoch:04d}"})
        return self.last

    def _prune(self, keep: set[str]) -> None:
        """Delete older checkpoints (not `keep`), half-written pairs and stale temp files."""
        assert self.folder is not None
        for path in self.folder.iterdir():
            stem = path.name.split(".")[0]
            stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
            if stale_tmp or (NAME.match(stem) and stem not in keep):
                with contextlib.suppress(OSError):
                    path.unlink()

    def restore(
        self,
        loaded: Loaded,
        parts: dict[str, Any],
        generator: torch.Generator,
        result: Any,
    ) -> Position:
        """Load `loaded` into the model, optimizer, … and the RNGs; return where to continue."""
        state = loaded.state
        optimizer = parts.get("optimizer")
        # the spec's hyperparameters, as built: a forced resume (--force with a lower lr) trains
        # with them, not with the checkpoint's; unforced, they are the same values
        groups = optimizer.param_groups if optimizer is not None else []
        built = [{k: v for k, v in g.items() if k != "params"} for g in groups]
        try:
            parts["model"].load_state_dict(loaded.weights)
            for key, obj in parts.items():
                if key != "model" and obj is not None and key in state["parts"]:
                    obj.load_state_dict(state["parts"][key])
                    if key == "optimizer":  # before the scheduler, which sets its own lr
                        _keep_hyperparameters(obj, built)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            first = " ".join(str(err).split())[:200]
            raise UsageError(
                f"{loaded.path}: the checkpoint does not fit this spec's model/optimizer ({first})"
            ) from None
        try:  # read_state checked the types; the lengths are the generators' to check
            generator.set_state(state["order_rng"])
            set_rng_state(state["rng"])
        except (RuntimeError, TypeError, ValueError) as err:
            raise CorruptedError(
                loaded.path, f"an RNG state is damaged ({_describe(err)})"
            ) from None
        for field, value in state["result"].items():
            setattr(result, field, value)
        return loaded.position


def _keep_hyperparameters(optimizer: Any, built: list[dict[str, Any]]) -> None:
    """Put the built optimizer's hyperparameters (lr, betas, weight decay…) back into its
    restored parameter groups; a schedule's `initial_lr` stays the checkpoint's."""
    for group, values in zip(optimizer.param_groups, built, strict=True):
        group.update({k: v for k, v in values.items() if k != "initial_lr"})


def _fsync_dir(folder: Path) -> None:
    """Make the renames in `folder` durable (a crash after this cannot undo them)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
