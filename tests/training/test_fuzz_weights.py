"""Fuzz: tampered weight files (a transfer source, a checkpoint's .safetensors) and training
states (a checkpoint's .pt) are refused with the product's error and exit 2, never a traceback,
another exception type or a silent acceptance.

Mutations of a real run's files: random bytes, truncations, safetensors headers that lie (length,
JSON, offsets, shapes, dtypes), re-saved tensors of other dtypes, names that are not layer.param,
extra, missing and reshaped tensors, NaN; for the .pt, missing keys, wrong types, bad RNG states.
"""

from __future__ import annotations

import copy
import io
import json
import random
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load, save

from dnntrick.errors import DnntrickError
from dnntrick.reuse import transfer
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.spec.schema import ModelSpec
from dnntrick.training import checkpoint
from dnntrick.training.loop import FitResult
from dnntrick.training.model import build_model
from tests.conftest import tiny_overrides, write_spec

HIDDEN = [16, 8]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_root: Path) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    spec = write_spec(folder, f"name: fuzz\nmodel: {{hidden: {HIDDEN}}}\n")
    return run_spec(load_spec(spec, tiny_overrides(tiny_root)), out=folder / "runs").run_dir


def _split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: Any, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def weight_mutations(good: bytes, checkpoint_file: bool) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(15)
    for i, size in enumerate([0, 1, 7, 8, 9, 64, 5000] * 2):
        yield f"random-{i}", rng.randbytes(size)
    for i in range(15):
        yield f"truncated-{i}", good[: rng.randrange(len(good))]
    header, body = _split(good)
    n = len(good) - len(body) - 8
    yield "length-huge", struct.pack("<Q", 2**63) + good[8:]
    yield "length-beyond", struct.pack("<Q", n + 1000) + good[8:]
    yield "length-zero", struct.pack("<Q", 0) + good[8:]
    yield "json-broken", good[:8] + b"[" + good[9:]
    yield "json-a-list", _join([1, 2], body)
    first = next(k for k in header if k != "__metadata__")
    lies = {
        "offsets-beyond": {"data_offsets": [0, len(body) + 10]},
        "offsets-reversed": {"data_offsets": [100, 0]},
        "offsets-negative": {"data_offsets": [-4, 0]},
        "shape-lie": {"shape": [3, 3]},
        "shape-negative": {"shape": [-1]},
        "dtype-unknown": {"dtype": "Q99"},
        "dtype-I32": {"dtype": "I32"},
        "dtype-F64": {"dtype": "F64"},
        "dtype-BOOL": {"dtype": "BOOL"},
        "dtype-U16": {"dtype": "U16"},
        "dtype-C64": {"dtype": "C64"},
        "dtype-F8": {"dtype": "F8_E4M3"},
    }
    for label, change in lies.items():
        lied = copy.deepcopy(header)
        lied[first].update(change)
        yield f"header-{label}", _join(lied, body)
    tensors = load(good)
    for dtype in (torch.int64, torch.int32, torch.bool, torch.float64, torch.float16,
                  torch.bfloat16, torch.uint8):  # fmt: skip
        yield f"dtype-{dtype}", save({k: v.to(dtype) for k, v in tensors.items()})
    for name in ["hidden1", "foo", "../x", "hidden1.", ".weight", "hidden1..weight", "x" * 500,
                 "hidden0.weight", "HIDDEN1.weight"]:  # fmt: skip
        renamed = dict(tensors)
        renamed[name] = renamed.pop("hidden1.weight")
        if not (checkpoint_file and name.startswith("hidden1..")):
            yield f"name-{name[:12]}", save(renamed)
    yield "extra-tensor", save({**tensors, "hidden1.extra": torch.zeros(3)})
    yield "extra-layer", save({**tensors, "hidden9.weight": torch.zeros(3, 3)})
    yield "missing-bias", save({k: v for k, v in tensors.items() if k != "hidden1.bias"})
    yield "reshaped", save({**tensors, "hidden1.weight": torch.zeros(5, 5)})
    yield "empty", save({})
    if not checkpoint_file:  # a checkpoint may hold what a diverged run left (exit 3 on resume)
        yield "nan", save({k: torch.full_like(v, float("nan")) for k, v in tensors.items()})


def refused(action) -> DnntrickError:
    """`action` must raise the product's error with exit code 2, nothing else."""
    with pytest.raises(DnntrickError) as info:
        action()
    assert info.value.exit_code == 2, str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_tampered_transfer_sources_are_refused(run_dir: Path, tmp_path: Path):
    good = (run_dir / "model.safetensors").read_bytes()
    cases = list(weight_mutations(good, checkpoint_file=False))
    assert len(cases) > 60
    for label, raw in cases:
        source = tmp_path / f"{label[:40].replace('/', '_')}.safetensors"
        source.write_bytes(raw)

        def use(source: Path = source) -> None:
            loaded = transfer.load_source(str(source))
            model = build_model(ModelSpec(hidden=HIDDEN), 784, 10)
            reused = transfer.select(r"hidden\d+", loaded.layers, "reuse", "the source's")
            transfer.copy_layers(model, loaded, reused)

        error = refused(use)
        assert str(source) in str(error) or "transfer.reuse" in str(error), (label, str(error))


def _resume(run: Path) -> None:
    """What `train --resume` does with the files: read, then restore into the model."""
    loaded = checkpoint.load_latest(run)
    model = build_model(ModelSpec(hidden=HIDDEN), 784, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    keeper = checkpoint.Checkpointer(None)
    position = keeper.restore(
        loaded, {"model": model, "optimizer": optimizer}, torch.Generator(), FitResult()
    )
    position.begin_epoch(position.epoch, torch.device("cpu"))
    loaded.describe()


def _copy_run(run_dir: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    run = tmp_path / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(run_dir, run)
    [pt] = (run / "checkpoints").glob("*.pt")
    return run, pt, pt.with_suffix(".safetensors")


def test_tampered_checkpoint_weights_are_refused(run_dir: Path, tmp_path: Path):
    run, _, weights = _copy_run(run_dir, tmp_path)
    good = weights.read_bytes()
    _resume(run)  # the untouched copy resumes
    cases = list(weight_mutations(good, checkpoint_file=True))
    assert len(cases) > 60
    for label, raw in cases:
        weights.write_bytes(raw)
        error = refused(lambda: _resume(run))
        assert "checkpoint" in str(error) or str(weights) in str(error), (label, str(error))


def state_mutations(state: dict[str, Any], good: bytes) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(15)
    yield "random", rng.randbytes(3000)
    for i in range(10):
        yield f"truncated-{i}", good[: rng.randrange(len(good))]

    def saved(changed: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        torch.save(changed, buffer)
        return buffer.getvalue()

    for key in ["format", "epoch", "step", "order_rng", "rng", "parts", "result", "spec_hash",
                "seconds", "spec"]:  # fmt: skip
        yield f"no-{key}", saved({k: v for k, v in state.items() if k != key})
    for key, value in [("epoch", "x"), ("epoch", 0), ("epoch", True), ("step", -5),
                       ("order_rng", torch.zeros(3)), ("order_rng", torch.zeros(7).byte()),
                       ("rng", {}), ("result", {"history": 5}), ("seconds", "s"), ("parts", []),
                       ("loss_sum", 3), ("format", 2)]:  # fmt: skip
        yield f"{key}={str(value)[:12]}", saved({**state, key: value})
    for path, value in [
        (("rng", "python", "mt"), torch.zeros(3, dtype=torch.int64)),
        (("rng", "python", "mt"), torch.zeros(625)),
        (("rng", "numpy", "pos"), 10**6),
        (("rng", "numpy", "keys"), torch.zeros(3, dtype=torch.int64)),
        (("rng", "torch"), torch.zeros(10, dtype=torch.uint8)),
        (("result", "best_epoch"), "first"),
    ]:
        changed = copy.deepcopy(state)
        node = changed
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        yield f"{'.'.join(path)}={str(value)[:12]}", saved(changed)


def test_tampered_training_states_are_refused(run_dir: Path, tmp_path: Path):
    run, pt, _ = _copy_run(run_dir, tmp_path)
    good = pt.read_bytes()
    state = torch.load(io.BytesIO(good), weights_only=True)
    cases = list(state_mutations(state, good))
    assert len(cases) > 30
    for label, raw in cases:
        pt.write_bytes(raw)
        error = refused(lambda: _resume(run))
        assert str(pt) in str(error), (label, str(error))


def test_tampered_files_through_the_cli(cli, run_dir: Path, tmp_path: Path, tiny_root: Path):
    """End to end: one line on stderr, exit 2, nothing new written."""
    run, _, weights = _copy_run(run_dir, tmp_path)
    tensors = load(weights.read_bytes())
    weights.write_bytes(save({**tensors, "hidden1.bias": tensors["hidden1.bias"].to(torch.int64)}))
    code, out, err = cli("train", "--resume", str(run), "--force", "-q")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err == (
        f"error: {weights}: corrupted (tensor hidden1.bias is int64, expected float32); "
        "no earlier good checkpoint was found\n"
    )
    source = tmp_path / "bad.safetensors"
    source.write_bytes(save({**tensors, "hidden1": tensors["hidden1.bias"].clone()}))
    spec = write_spec(tmp_path, f"name: target\nmodel: {{hidden: {HIDDEN}}}\n")
    out_dir = tmp_path / "runs"
    code, out, err = cli(
        "transfer", str(spec), *tiny_overrides(tiny_root), "--from", str(source), "--out",
        str(out_dir), "-q",
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "is not named layer.param" in err
    assert not out_dir.exists()
