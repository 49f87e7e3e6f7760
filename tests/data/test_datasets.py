"""IDX reading, lookup order, splits, standardization, class filtering and the decoded cache."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from dnntrick.data.datasets import FILES, find_files, load_splits, read_idx, write_idx
from dnntrick.errors import DataError
from dnntrick.spec.schema import DataSpec
from tests.conftest import make_tiny_idx


def test_idx_round_trip_gz_and_raw(tmp_path: Path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.gz", "a"):
        write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_truncated_file_names_the_file(tmp_path: Path):
    write_idx(tmp_path / "x", np.zeros((10, 28, 28), np.uint8))
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"x: truncated or corrupt IDX file"):
        read_idx(tmp_path / "x")


def test_not_idx_and_broken_gzip(tmp_path: Path):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    (tmp_path / "half.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 50)[:20])
    with pytest.raises(DataError, match=r"half.gz: cannot read"):
        read_idx(tmp_path / "half.gz")


def test_label_count_mismatch(tmp_path: Path):
    root = make_tiny_idx(tmp_path / "d", n_train=50, n_test=20)
    write_idx(root / f"{FILES['train_labels']}.gz", np.zeros(49, np.uint8))
    with pytest.raises(DataError, match="49 labels for 50 images"):
        load_splits(DataSpec(root=str(root), val_size=10))


def test_missing_data_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "nowhere").mkdir()
    monkeypatch.setenv("DNNTRICK_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as info:
        find_files("kmnist", None)
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "/usr/share/datasets/kmnist" in message
    assert "dnntrick data fetch kmnist" in message


def test_data_root_is_the_only_place_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A data.root without the files is an error, not a search that finds other files."""
    elsewhere = make_tiny_idx(tmp_path / "elsewhere", n_train=30, n_test=10)
    monkeypatch.setenv("DNNTRICK_DATA", str(elsewhere))
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError, match=r"empty: no train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k"
    ):
        find_files("mnist", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"typo: folder not found"):
        find_files("mnist", str(tmp_path / "typo"))
    assert find_files("mnist", None)["train_images"].parent == elsewhere


def test_lookup_order_root_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = make_tiny_idx(tmp_path / "first", n_train=30, n_test=10)
    second = make_tiny_idx(tmp_path / "second", n_train=30, n_test=10, gz=False)
    monkeypatch.setenv("DNNTRICK_DATA", str(second))
    assert find_files("mnist", str(first))["train_images"].parent == first
    assert find_files("mnist", None)["train_images"] == second / FILES["train_images"]


def test_splits_first_last_and_sizes(tiny_root: Path):
    last = load_splits(DataSpec(root=str(tiny_root), val_size=100, val_from="last"))
    first = load_splits(DataSpec(root=str(tiny_root), val_size=100, val_from="first"))
    assert (len(last.x_train), len(last.x_val), len(last.x_test)) == (500, 100, 200)
    torch.testing.assert_close(last.x_train[:100], first.x_val)
    torch.testing.assert_close(first.x_train[-100:], last.x_val)
    assert (
        last.x_train.dtype == torch.float32 and 0 <= last.x_train.min() <= last.x_train.max() <= 1
    )
    assert last.y_train.dtype == torch.int64 and last.in_features == 784 and last.n_classes == 10


def test_standardize_uses_training_statistics(tiny_root: Path):
    splits = load_splits(DataSpec(root=str(tiny_root), val_size=100, standardize=True))
    assert splits.x_train.mean(0).abs().max() < 1e-4
    assert torch.allclose(splits.x_train.std(0), torch.ones(784), atol=1e-3)
    assert splits.x_test.mean(0).abs().max() > 1e-3  # test data is not re-centred on itself


def test_classes_are_filtered_and_renumbered(tiny_root: Path):
    full = load_splits(DataSpec(root=str(tiny_root), val_size=100))
    sub = load_splits(DataSpec(root=str(tiny_root), val_size=100, classes=[6, 5], train_limit=20))
    assert sub.classes == ("Shirt", "Sandal")
    keep = (full.y_train == 6) | (full.y_train == 5)
    expected_y = torch.where(full.y_train[keep] == 6, 0, 1)[:20]
    torch.testing.assert_close(sub.y_train, expected_y)
    torch.testing.assert_close(sub.x_train, full.x_train[keep][:20])
    assert set(sub.y_test.tolist()) == {0, 1}


def test_decoded_cache_is_used_and_equal(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DNNTRICK_CACHE", str(tmp_path / "cache"))
    a = load_splits(DataSpec(root=str(tiny_root), val_size=100))
    assert list((tmp_path / "cache" / "decoded").glob("*/train_images.npy"))
    b = load_splits(DataSpec(root=str(tiny_root), val_size=100))
    torch.testing.assert_close(a.x_train, b.x_train)


def test_val_size_too_large(tiny_root: Path):
    with pytest.raises(DataError, match="val_size"):
        load_splits(DataSpec(root=str(tiny_root), val_size=600))


@pytest.mark.integration
def test_real_fashion_mnist(fashion_root: Path):
    splits = load_splits(DataSpec(root=str(fashion_root)))
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (55000, 5000, 10000)
    assert splits.classes[0] == "T-shirt/top"
    assert torch.bincount(splits.y_test).tolist() == [1000] * 10
