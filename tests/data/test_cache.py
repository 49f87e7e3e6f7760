"""The decoded-array cache (data/datasets.load_arrays): keyed on the files' bytes, never serving
stale arrays, and rebuilt (never used) when one of its files is damaged."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dnntrick.data.datasets import FILES, load_arrays, load_splits, read_idx, write_idx
from dnntrick.spec.schema import DataSpec
from tests.conftest import make_tiny_idx


def cached(cache: Path, key: str = "train_images") -> list[Path]:
    return sorted((cache / "decoded").glob(f"*/{key}.npy"))


def test_a_same_size_file_with_its_mtime_kept_is_read_again(tmp_path: Path):
    root = make_tiny_idx(tmp_path / "d", n_train=60, n_test=20, gz=False)
    labels = root / FILES["train_labels"]
    old = load_arrays("fashion-mnist", str(root))["train_labels"].copy()
    stat = labels.stat()
    new = (old + 1) % 10  # same count, same size: only the bytes differ
    write_idx(labels, new)
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p or rsync -t leave it
    assert (labels.stat().st_size, labels.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    np.testing.assert_array_equal(load_arrays("fashion-mnist", str(root))["train_labels"], new)
    splits = load_splits(DataSpec(root=str(root), val_size=10, val_from="first"))
    np.testing.assert_array_equal(splits.y_val.numpy(), new[:10])


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def garble_data(path: Path) -> None:
    """Flip bytes past the .npy header: the array still loads, with wrong pixels."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 500, len(data) - 400):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def garble_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:20] + b"#" * 30 + data[50:])


def swap_in_other_array(path: Path) -> None:
    """A well-formed .npy of the same shape and dtype whose pixels are all 7."""
    array = np.load(path)
    np.save(path, np.full_like(array, 7))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate,
    "garbled data": garble_data,
    "garbled header": garble_header,
    "empty": lambda path: path.write_bytes(b""),
    "another array": swap_in_other_array,
    "manifest gone": lambda path: (path.parent / "manifest.json").unlink(missing_ok=True),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
):
    root = make_tiny_idx(tmp_path / "d", n_train=60, n_test=20)
    monkeypatch.setenv("DNNTRICK_CACHE", str(tmp_path / "cache"))
    truth = read_idx(root / f"{FILES['train_images']}.gz")
    load_arrays("fashion-mnist", str(root))
    [npy] = cached(tmp_path / "cache")
    DAMAGE[damage](npy)
    again = load_arrays("fashion-mnist", str(root))["train_images"]
    np.testing.assert_array_equal(again, truth)
    splits = load_splits(DataSpec(root=str(root), val_size=10))  # what a run trains on
    np.testing.assert_array_equal(
        splits.x_train.numpy(), (truth[:50].reshape(50, -1) / np.float32(255)).astype(np.float32)
    )
    np.testing.assert_array_equal(np.load(npy), truth)  # rebuilt in place: the next run is fast
