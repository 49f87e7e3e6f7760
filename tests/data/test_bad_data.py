"""Every way a data file or a data path can be wrong, for the built-in IDX sets and for own data
(.npz, .npy, CSV), through `dnntrick train`: exit 2, one line on stderr naming the file and what
to do, no traceback, no run directory."""

from __future__ import annotations

import builtins
import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dnntrick.data.datasets import FILES, write_idx
from tests.conftest import make_tiny_idx, write_spec

SPEC = "model: {hidden: [16]}\ntrain: {epochs: 1, batch_size: 20}\ndevice: cpu\n"
REFETCH = "delete it and fetch the data set again (dnntrick data fetch fashion-mnist)"
# a case: (the overrides of `train`, the texts the one line must hold: the file, what is wrong
# and what to do)
Case = tuple[list[str], tuple[str, ...]]


def idx_file(tmp_path: Path, key: str) -> tuple[Path, Path]:
    """A tiny raw IDX set (60 training, 20 test images); (its folder, the file `key`)."""
    root = make_tiny_idx(tmp_path / "idx", n_train=60, n_test=20, gz=False)
    return root, root / FILES[key]


def idx_raw(dtype_code: int, array: np.ndarray) -> bytes:
    """An IDX file of any element type (write_idx writes uint8 only)."""
    head = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.tobytes()


def idx_case(tmp_path: Path, key: str, damage: Callable[[Path], None], *expect: str) -> Case:
    root, path = idx_file(tmp_path, key)
    damage(path)
    return [f"data.root={root}"], (path.name, *expect)


def own(tmp_path: Path, **arrays: np.ndarray) -> Path:
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    good = {
        "x_train": x,
        "y_train": np.arange(30) % 3,
        "x_test": x[:10],
        "y_test": np.arange(10) % 3,
    }
    path = tmp_path / "d.npz"
    np.savez(path, **{**good, **arrays})
    return path


def arrays_case(path: Path, *expect: str, extra: tuple[str, ...] = ()) -> Case:
    return ["data.dataset=arrays", f"data.path={path}", *extra], (path.name, *expect)


def csv_file(tmp_path: Path, text: str = "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n") -> Path:
    path = tmp_path / "d.csv"
    path.write_text(text)
    return path


def csv_case(path: Path, *expect: str, name: str | None = None) -> Case:
    args = ["data.dataset=csv", f"data.path={path}", "data.label=label", "data.test_size=1"]
    return [*args, "data.val_size=1"], (name or path.name, *expect)


def npy_folder(tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    folder = tmp_path / "npy"
    folder.mkdir()
    with np.load(own(tmp_path)) as archive:
        for key in archive.files:
            np.save(folder / f"{key}.npy", archive[key])
    damage(folder / "x_train.npy")
    return folder


def unreadable(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Open `path` as a non-root user would a mode-000 file (the suite runs as root)."""
    real = builtins.open

    def fake(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake)


def truncate(path: Path, keep: int = 300) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def labels(values: np.ndarray) -> Callable[[Path], None]:
    return lambda path: write_idx(path, values)


def case(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    t = tmp_path
    if name == "idx label 12":
        y = np.zeros(60, np.uint8)
        y[7] = 12
        return idx_case(t, "train_labels", labels(y), "label 12 is outside 0..9 (1 of 60", REFETCH)
    if name == "idx negative label":
        y = np.zeros(20, np.int8)
        y[3] = -1
        return idx_case(
            t,
            "test_labels",
            lambda p: p.write_bytes(idx_raw(0x09, y)),
            "label -1 is outside 0..9",
            REFETCH,
        )
    if name == "idx float labels":
        y = np.zeros(60, ">f4")
        return idx_case(
            t,
            "train_labels",
            lambda p: p.write_bytes(idx_raw(0x0D, y)),
            "holds >f4 values, not integer class labels",
        )
    if name == "idx labels [N, 2]":
        return idx_case(
            t,
            "train_labels",
            labels(np.zeros((60, 2), np.uint8)),
            "holds shape [60, 2], not labels",
        )
    if name == "idx fewer labels":
        return idx_case(
            t, "test_labels", labels(np.zeros(19, np.uint8)), "19 labels for 20 images", REFETCH
        )
    if name == "idx flat images":
        return idx_case(
            t,
            "train_images",
            labels(np.zeros((60, 784), np.uint8)),
            "holds shape [60, 784], not images [N, H, W]",
        )
    if name == "idx float images":
        x = np.zeros((60, 28, 28), ">f4")
        return idx_case(
            t, "train_images", lambda p: p.write_bytes(idx_raw(0x0D, x)), "holds >f4 values"
        )
    if name == "idx test images of another size":
        return idx_case(
            t,
            "test_images",
            labels(np.zeros((20, 20, 20), np.uint8)),
            "images of 20x20, training images 28x28",
        )
    if name == "idx no images":
        return idx_case(t, "test_images", labels(np.zeros((0, 28, 28), np.uint8)), "holds 0 images")
    if name == "idx wrong magic":
        return idx_case(
            t,
            "train_images",
            lambda p: p.write_bytes(b"PK\x03\x04" + p.read_bytes()[4:]),
            "not an IDX file (bad magic number 504b0304",
            REFETCH,
        )
    if name == "idx truncated":
        return idx_case(t, "train_images", truncate, "truncated or corrupt IDX file", REFETCH)
    if name == "idx truncated header":
        return idx_case(t, "train_labels", lambda p: truncate(p, 6), "truncated IDX header")
    if name == "idx empty file":
        return idx_case(
            t, "test_labels", lambda p: p.write_bytes(b""), "bad magic number none", REFETCH
        )
    if name == "idx truncated gzip":
        root = make_tiny_idx(t / "gz", n_train=60, n_test=20)
        path = root / f"{FILES['train_images']}.gz"
        truncate(path, 2000)
        return [f"data.root={root}"], (path.name, "cannot read the IDX file", REFETCH)
    if name == "idx not gzip":
        root = make_tiny_idx(t / "gz", n_train=60, n_test=20)
        path = root / f"{FILES['test_labels']}.gz"
        path.write_bytes(gzip.decompress(path.read_bytes()))
        return [f"data.root={root}"], (path.name, "cannot read the IDX file (Not a gzipped file")
    if name == "idx a folder":
        root, path = idx_file(t, "train_labels")
        path.unlink()
        path.mkdir()
        return [f"data.root={root}"], (path.name, "a folder, not an IDX file", REFETCH)
    if name == "idx unreadable":
        root, path = idx_file(t, "train_images")
        unreadable(monkeypatch, path)
        return [f"data.root={root}"], (path.name, "Permission denied", "check its permissions")
    if name == "root ~nosuchuser":
        return ["data.root=~nosuchuser/data"], (
            "data.root: ~nosuchuser/data: ~nosuchuser cannot be expanded (no user 'nosuchuser')",
            "give the full path",
        )
    if name == "$DNNTRICK_DATA ~nosuchuser":
        monkeypatch.setenv("DNNTRICK_DATA", "~nosuchuser")
        return [], ("$DNNTRICK_DATA: ~nosuchuser: ~nosuchuser cannot be expanded",)
    if name == "$DNNTRICK_DATA missing":
        monkeypatch.setenv("DNNTRICK_DATA", str(t / "typo"))
        return [], ("$DNNTRICK_DATA: ", "typo: folder not found", "or unset it")
    if name == "root is a file":
        _, path = idx_file(t, "train_images")
        return [f"data.root={path}"], (path.name, "is a file, not a folder", "give the folder")
    if name == "root missing":  # the data exists elsewhere: not used in its place
        return [f"data.root={t / 'nowhere'}"], ("nowhere: folder not found", "give the folder")
    if name == "root without the files":
        root, path = idx_file(t, "test_labels")
        path.unlink()
        return [f"data.root={root}"], (path.name, "put the four IDX files there")
    if name == "npz ~nosuchuser":
        return arrays_case(Path("~nosuchuser/d.npz"), "no user 'nosuchuser'", "give the full path")
    if name == "npz missing":
        return arrays_case(t / "d.npz", "no such file or folder; check the path")
    if name == "npz empty":
        path = t / "d.npz"
        path.write_bytes(b"")
        return arrays_case(path, "not a .npz file", "write it with np.savez")
    if name == "npz truncated":
        path = own(t)
        truncate(path)
        return arrays_case(path, "not a readable .npz file", "write it again with np.savez")
    if name == "npz unreadable":
        path = own(t)
        unreadable(monkeypatch, path)
        return arrays_case(path, "cannot read it (Permission denied); check its permissions")
    if name == "npz label 5 of 3":
        path = own(t, y_test=np.full(10, 5))
        return arrays_case(
            path,
            "label 5 is out of range for data.n_classes: 3",
            "raise data.n_classes",
            extra=("data.n_classes=3",),
        )
    if name == "npz negative label":
        return arrays_case(own(t, y_train=np.arange(30) % 3 - 1), "negative label (-1)", "0..K-1")
    if name == "npz float labels":
        path = own(t, y_train=np.full(30, 0.5))
        return arrays_case(path, "integer class labels (dtype float64, e.g. 0.5)", "0..K-1")
    if name == "npz NaN":
        x = np.zeros((30, 4), np.float32)
        x[4, 1] = np.nan
        return arrays_case(own(t, x_train=x), "NaN or infinite values (first in row 4", "drop")
    if name == "npz inf":
        x = np.full((10, 4), np.inf, np.float32)
        return arrays_case(own(t, x_test=x), "x_test has NaN or infinite values", "drop or fill")
    if name == "npz counts":
        path = own(t, y_train=np.arange(29) % 3)
        return arrays_case(path, "30 rows in x_train but 29 labels", "give one label a row")
    if name == "npz 1-d x":
        path = own(t, x_train=np.zeros(30, np.float32))
        return arrays_case(path, "x_train has shape [30]; expected [N, features]")
    if name == "npy truncated":
        folder = npy_folder(t, lambda p: truncate(p, 100))
        return arrays_case(folder, "x_train.npy: not a readable .npy file", "np.save")
    if name == "npy text":
        folder = npy_folder(t, lambda p: p.write_text("1,2,3\n"))
        return arrays_case(folder, "x_train.npy: not a .npy file", "write it with np.save")
    if name == "csv ~nosuchuser":
        return csv_case(Path("~nosuchuser/d.csv"), "no user 'nosuchuser'", name="~nosuchuser")
    if name == "test_path ~nosuchuser":
        args, _ = csv_case(csv_file(t))
        return [*args[:3], "data.test_path=~nosuchuser/t.csv"], (
            "data.test_path: ~nosuchuser/t.csv: ~nosuchuser cannot be expanded",
        )
    if name == "csv a folder":
        (t / "d.csv").mkdir()
        return csv_case(t / "d.csv", "a folder, not a CSV file", "check data.path")
    if name == "csv unreadable":
        path = csv_file(t)
        unreadable(monkeypatch, path)
        return csv_case(
            path, "not a readable text CSV file (Permission denied); check its permissions"
        )
    if name == "csv empty":
        return csv_case(csv_file(t, ""), "empty file; a CSV needs a header row")
    if name == "csv label 1.5":
        path = csv_file(t, "a,label\n1,0\n2,1.5\n3,0\n4,1\n5,0\n")
        return csv_case(path, "integer class labels (dtype float64, e.g. 1.5)")
    raise AssertionError(name)


CASES = [
    "idx label 12",
    "idx negative label",
    "idx float labels",
    "idx labels [N, 2]",
    "idx fewer labels",
    "idx flat images",
    "idx float images",
    "idx test images of another size",
    "idx no images",
    "idx wrong magic",
    "idx truncated",
    "idx truncated header",
    "idx empty file",
    "idx truncated gzip",
    "idx not gzip",
    "idx a folder",
    "idx unreadable",
    "root ~nosuchuser",
    "$DNNTRICK_DATA ~nosuchuser",
    "$DNNTRICK_DATA missing",
    "root is a file",
    "root missing",
    "root without the files",
    "npz ~nosuchuser",
    "npz missing",
    "npz empty",
    "npz truncated",
    "npz unreadable",
    "npz label 5 of 3",
    "npz negative label",
    "npz float labels",
    "npz NaN",
    "npz inf",
    "npz counts",
    "npz 1-d x",
    "npy truncated",
    "npy text",
    "csv ~nosuchuser",
    "test_path ~nosuchuser",
    "csv a folder",
    "csv unreadable",
    "csv empty",
    "csv label 1.5",
]


@pytest.mark.parametrize("name", CASES)
def test_a_bad_data_file_or_path_is_one_line_and_exit_2(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
):
    args, expect = case(name, tmp_path, monkeypatch)
    spec = write_spec(tmp_path, SPEC + "data: {val_size: 10}\n")
    code, out, err = cli("train", str(spec), "--out", str(tmp_path / "runs"), *args)
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for text in expect:
        assert text in err, (text, err)
    assert not (tmp_path / "runs").exists()
