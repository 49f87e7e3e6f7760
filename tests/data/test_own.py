"""Own data (dnntrick/data/own.py): .npz, a folder of .npy, CSV → the built-in sets' splits;
every bad file a one-line exit-2 error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dnntrick.data.datasets import load_arrays, load_splits
from dnntrick.data.own import splits_from_arrays
from dnntrick.errors import DataError, UnsafeFileError
from dnntrick.spec.schema import DataSpec
from tests.conftest import run_probe, write_spec

SPLIT_FIELDS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


@pytest.fixture
def tiny(tiny_root: Path) -> dict[str, np.ndarray]:
    """The tiny IDX set's arrays (uint8 images [N, 28, 28], uint8 labels)."""
    return {k: np.asarray(v) for k, v in load_arrays("fashion-mnist", str(tiny_root)).items()}


def save_npz(path: Path, tiny: dict[str, np.ndarray], **changes: np.ndarray) -> Path:
    arrays = {
        "x_train": tiny["train_images"],
        "y_train": tiny["train_labels"],
        "x_test": tiny["test_images"],
        "y_test": tiny["test_labels"],
        **changes,
    }
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def features(n: int, f: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flat float features whose class (0..2) is the argmax of the first three columns."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    return x, x[:, :3].argmax(axis=1)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, order: list[int] | None = None) -> Path:
    names = [f"f{i}" for i in range(x.shape[1])] + ["label"]
    table = np.column_stack([x.astype(np.float64), y])
    order = order or list(range(len(names)))
    lines = [",".join(names[i] for i in order)]
    lines += [",".join(repr(float(row[i])) for i in order) for row in table]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "kw",
    [
        {"val_size": 100},
        {"val_size": 50, "val_from": "first", "standardize": True},
        {"val_size": 80, "classes": [7, 2, 5], "train_limit": 90, "standardize": True},
        {"val_size": 0, "train_limit": 10},
    ],
)
def test_npz_gives_the_built_in_splits_bitwise(tmp_path: Path, tiny, kw):
    path = save_npz(tmp_path / "tiny.npz", tiny)
    own = load_splits(DataSpec(dataset="arrays", path=str(path), **kw))
    ref = load_splits(DataSpec(**kw), arrays=tiny)
    for name in (*SPLIT_FIELDS, "pixel_mean", "pixel_std"):
        a, b = getattr(own, name), getattr(ref, name)
        assert (a is None and b is None) or torch.equal(a, b), name
    keep = kw.get("classes", range(10))
    assert own.classes == tuple(str(c) for c in keep)


def test_npy_folder_and_csv_give_the_npz_splits(tmp_path: Path):
    x, y = features(300)
    xt, yt = features(60, seed=1)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    folder = tmp_path / "npy"
    folder.mkdir()
    for name, array in {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}.items():
        np.save(folder / f"{name}.npy", array)
    write_csv(tmp_path / "train.csv", x, y)
    write_csv(tmp_path / "test.csv", xt, yt, order=[6, 3, 0, 1, 2, 4, 5])  # columns by name
    common = {"val_size": 40, "standardize": True}
    specs = [
        DataSpec(dataset="arrays", path=str(tmp_path / "d.npz"), **common),
        DataSpec(dataset="arrays", path=str(folder), **common),
        DataSpec(
            dataset="csv",
            path=str(tmp_path / "train.csv"),
            test_path=str(tmp_path / "test.csv"),
            label="label",
            **common,
        ),
    ]
    npz, npy, table = (load_splits(s) for s in specs)
    for name in SPLIT_FIELDS:
        assert torch.equal(getattr(npz, name), getattr(npy, name)), name
        assert torch.equal(getattr(npz, name), getattr(table, name)), name
    assert npz.x_train.shape == (260, 6) and npz.n_classes == 3
    assert torch.equal(npz.y_test, torch.from_numpy(yt))
    # float features are used as they are (only uint8 pixels are divided by 255)
    raw = splits_from_arrays(x, y, xt, yt, DataSpec(dataset="arrays", path="-", val_size=0))
    assert torch.equal(raw.x_train, torch.from_numpy(x))


def test_splits_from_arrays_leaves_the_callers_arrays_alone():
    x, y = features(100)
    before = x.copy()
    spec = DataSpec(dataset="arrays", path="-", val_size=10, standardize=True, test_size=20)
    splits = splits_from_arrays(x, y, spec=spec)
    assert np.array_equal(x, before)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (70, 10, 20)
    assert torch.equal(splits.y_test, torch.from_numpy(y[80:]))  # the last 20 rows


def test_class_count_is_the_largest_label_plus_one_or_n_classes(tmp_path: Path):
    x, y = features(100)
    xt, yt = features(20, seed=1)
    assert (
        splits_from_arrays(x, y, xt, yt, DataSpec(dataset="arrays", path="-", val_size=0)).n_classes
        == 3
    )
    spec = DataSpec(dataset="arrays", path="-", val_size=0, n_classes=5)
    assert splits_from_arrays(x, y, xt, yt, spec).classes == ("0", "1", "2", "3", "4")
    with pytest.raises(DataError, match=r"label 2 is out of range for data.n_classes: 2"):
        splits_from_arrays(x, y, xt, yt, spec.model_copy(update={"n_classes": 2}))
    with pytest.raises(DataError, match=r"data.classes: 4 is not a label of data \(0..2\)"):
        splits_from_arrays(
            x, y, xt, yt, DataSpec(dataset="arrays", path="-", val_size=0, classes=[0, 4])
        )


def test_images_with_channels_are_flattened(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    y = np.arange(50) % 2
    splits = splits_from_arrays(
        x, y, spec=DataSpec(dataset="arrays", path="-", val_size=5, test_size=5)
    )
    assert splits.in_features == 192
    assert torch.equal(splits.x_train[0], torch.from_numpy(x[0].reshape(-1) / 255).float())


def test_augmentation_needs_square_one_channel_images(tmp_path: Path, tiny):
    aug = {"augment": {"shift": 2}, "val_size": 10, "test_size": 10}
    x, y = features(60)
    with pytest.raises(DataError, match=r"holds flat feature vectors \[N, 6\], not images"):
        splits_from_arrays(x, y, spec=DataSpec(dataset="arrays", path="-", **aug))
    wide = np.zeros((60, 8, 10), np.uint8)
    with pytest.raises(DataError, match=r"square one-channel images \[N, S, S\] \(got \[8, 10\]"):
        splits_from_arrays(wide, y, spec=DataSpec(dataset="arrays", path="-", **aug))
    square = splits_from_arrays(
        tiny["train_images"][:60], y, spec=DataSpec(dataset="arrays", path="-", **aug)
    )
    assert square.in_features == 784


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and isinstance(err, DataError | UnsafeFileError)
    assert err.exit_code == 2  # type: ignore[attr-defined]
    return text


X, Y = features(40)
XT, YT = features(10, seed=1)
BAD_ARRAYS = {
    "unknown key": ({"X_train": X, "y_train": Y}, "unknown array X_train; did you mean 'x_train'?"),
    "no y_train": (
        {"x_train": X, "x_test": XT, "y_test": YT},
        "no y_train (it holds: x_test, x_train, y_test)",
    ),
    "x_test alone": ({"x_train": X, "y_train": Y, "x_test": XT}, "x_test and y_test come together"),
    "float labels": (
        {"x_train": X, "y_train": Y + 0.5, "x_test": XT, "y_test": YT},
        "y_train must hold integer class labels (dtype float64, e.g. 2.5)",
    ),
    "string labels": (
        {"x_train": X, "y_train": Y.astype(str), "x_test": XT, "y_test": YT},
        "y_train must hold integer class labels (dtype <U21)",
    ),
    "negative label": (
        {"x_train": X, "y_train": Y - 1, "x_test": XT, "y_test": YT},
        "y_train has a negative label (-1)",
    ),
    "one-hot labels": (
        {"x_train": X, "y_train": np.eye(3)[Y], "x_test": XT, "y_test": YT},
        "one-hot labels: take their argmax",
    ),
    "x/y lengths": (
        {"x_train": X, "y_train": Y[:-1], "x_test": XT, "y_test": YT},
        "40 rows in x_train but 39 labels in y_train",
    ),
    "test row shape": (
        {"x_train": X, "y_train": Y, "x_test": XT[:, :5], "y_test": YT},
        "x_test rows have shape [5], x_train rows [6]",
    ),
    "NaN feature": (
        {
            "x_train": np.where(np.arange(40)[:, None] == 7, np.nan, X),
            "y_train": Y,
            "x_test": XT,
            "y_test": YT,
        },
        "x_train has NaN or infinite values (first in row 7, of 1 rows)",
    ),
    "inf feature": (
        {"x_train": X, "y_train": Y, "x_test": np.full_like(XT, np.inf), "y_test": YT},
        "x_test has NaN or infinite values (first in row 0, of 10 rows)",
    ),
    "float64 overflow": (
        {"x_train": X.astype(np.float64) * 1e300, "y_train": Y, "x_test": XT, "y_test": YT},
        "x_train has NaN or infinite values",
    ),
    "empty train": (
        {"x_train": X[:0], "y_train": Y[:0], "x_test": XT, "y_test": YT},
        "the train split is empty (0 rows)",
    ),
    "empty test": (
        {"x_train": X, "y_train": Y, "x_test": XT[:0], "y_test": YT[:0]},
        "the test split is empty (0 rows)",
    ),
    "1-d x": (
        {"x_train": Y, "y_train": Y, "x_test": XT, "y_test": YT},
        "x_train has shape [40]; expected [N, features]",
    ),
    "no test set": (
        {"x_train": X, "y_train": Y},
        "no test set; add x_test and y_test (csv: data.test_path), or set data.test_size",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_arrays_are_one_line_errors_in_npz_and_npy(tmp_path: Path, case: str):
    arrays, message = BAD_ARRAYS[case]
    np.savez(tmp_path / "d.npz", **arrays)
    folder = tmp_path / "npy"
    folder.mkdir()
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    for path in (tmp_path / "d.npz", folder):
        with pytest.raises(DataError) as caught:
            load_splits(DataSpec(dataset="arrays", path=str(path), val_size=5))
        text = one_line(caught.value)
        assert message.replace(".npy", "") in text.replace(".npy", ""), text
        assert str(path) in text


def test_bad_splits_are_one_line_errors(tmp_path: Path):
    np.savez(tmp_path / "d.npz", x_train=X, y_train=Y, x_test=XT, y_test=YT)
    cases = {
        "data.val_size: 40 leaves no training rows": {"val_size": 40},
        "has a test set, so data.test_size must not be set": {"test_size": 5},
        "no train rows left after data.classes/train_limit": {"classes": [3, 4], "n_classes": 5},
    }
    for message, kw in cases.items():
        spec = DataSpec(dataset="arrays", path=str(tmp_path / "d.npz"), **{"val_size": 5, **kw})
        with pytest.raises(DataError) as caught:
            load_splits(spec)
        assert message in one_line(caught.value)
    with pytest.raises(DataError) as caught:
        splits_from_arrays(X, Y, spec=DataSpec(dataset="arrays", path="-", test_size=40))
    assert "data.test_size: 40 leaves no training rows (data has 40)" in one_line(caught.value)


def bad_file(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Write one mislabelled or unsafe file; return its path and the expected message."""
    if case == "text named .npz":
        path = tmp_path / "d.npz"
        path.write_text("x_train,y_train\n1,2\n")
        return path, "d.npz: not a .npz file (it does not start as numpy's files do)"
    if case == "pickle named .npz":
        path = tmp_path / "d.npz"
        path.write_bytes(pickle.dumps({"x_train": X, "y_train": Y}))
        return path, "d.npz: a Python pickle, not a .npz file; dnntrick never unpickles"
    if case == "npy named .npz":
        path = tmp_path / "d.npz"
        with open(path, "wb") as handle:
            np.save(handle, X)
        return path, "an .npy array, not an .npz archive"
    if case == "truncated npz":
        np.savez(tmp_path / "full.npz", x_train=X, y_train=Y)
        path = tmp_path / "d.npz"
        path.write_bytes((tmp_path / "full.npz").read_bytes()[:300])
        return path, "not a readable .npz file"
    if case == "object array in npz":
        path = tmp_path / "d.npz"
        np.savez(path, x_train=np.array([{"a": 1}] * 40, dtype=object), y_train=Y)
        return path, "holds an array of Python objects"
    if case == "pickle named .npy":
        folder = tmp_path / "npy"
        folder.mkdir()
        np.save(folder / "y_train.npy", Y)
        (folder / "x_train.npy").write_bytes(pickle.dumps(X))
        return folder, "x_train.npy: a Python pickle, not a .npy file; dnntrick never unpickles"
    if case == "object array in npy":
        folder = tmp_path / "npy"
        folder.mkdir()
        np.save(folder / "y_train.npy", Y)
        np.save(folder / "x_train.npy", np.array([object()] * 40), allow_pickle=True)
        return folder, "x_train.npy: holds an array of Python objects, which would need unpickling"
    if case == "npz named .npy":
        folder = tmp_path / "npy"
        folder.mkdir()
        np.save(folder / "y_train.npy", Y)
        with open(folder / "x_train.npy", "wb") as handle:
            np.savez(handle, x_train=X)
        return folder, "x_train.npy: an .npz archive, not an .npy array"
    if case == "typo in a folder":
        folder = tmp_path / "npy"
        folder.mkdir()
        for name, array in {"x_train": X, "y_train": Y, "x_tset": XT}.items():
            np.save(folder / f"{name}.npy", array)
        return folder, "unknown array x_tset.npy; did you mean 'x_test'?"
    if case == "missing file":
        return tmp_path / "nope.npz", "nope.npz: no such file or folder"
    if case == "a single .npy":
        np.save(tmp_path / "x.npy", X)
        return tmp_path / "x.npy", "(use a folder of x_train.npy, y_train.npy …)"
    if case == "a .csv":
        return write_csv(tmp_path / "d.csv", X, Y), "(use dataset: csv)"
    raise AssertionError(case)


FILE_CASES = [
    "text named .npz",
    "pickle named .npz",
    "npy named .npz",
    "truncated npz",
    "object array in npz",
    "pickle named .npy",
    "object array in npy",
    "npz named .npy",
    "typo in a folder",
    "missing file",
    "a single .npy",
    "a .csv",
]


@pytest.mark.parametrize("case", FILE_CASES)
def test_files_that_are_not_what_they_say_are_refused(tmp_path: Path, case: str):
    path, message = bad_file(tmp_path, case)
    with pytest.raises((DataError, UnsafeFileError)) as caught:
        load_splits(DataSpec(dataset="arrays", path=str(path), val_size=5, test_size=5))
    assert message in one_line(caught.value)


def csv_case(tmp_path: Path, case: str) -> tuple[dict[str, str], str]:
    good = write_csv(tmp_path / "good.csv", X, Y)
    lines = good.read_text().splitlines()
    path = tmp_path / "d.csv"
    spec = {"path": str(path), "label": "label", "test_size": 5}
    if case == "no header":
        path.write_text("\n".join(lines[1:]) + "\n")
        return spec, "the first row holds numbers; it must be a header of column names"
    if case == "no such label":
        good.rename(path)
        return {**spec, "label": "lable"}, "no label column 'lable'; did you mean 'label'?"
    if case == "a word in a cell":
        path.write_text(
            "\n".join([*lines[:3], lines[3].replace(lines[3].split(",")[0], "abc"), *lines[4:]])
        )
        return spec, "not a table of numbers (could not convert string 'abc' to float64"
    if case == "a short row":
        path.write_text("\n".join([*lines[:5], lines[5].rsplit(",", 1)[0], *lines[6:]]))
        return spec, "not a table of numbers"
    if case == "a column twice":
        path.write_text("\n".join([lines[0].replace("f1", "f0"), *lines[1:]]))
        return spec, "the header names column(s) f0 twice"
    if case == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(range(256)))
        return spec, "not a readable text CSV file"
    if case == "header only":
        path.write_text(lines[0] + "\n")
        return spec, "the train split is empty (0 rows)"
    if case == "empty":
        path.write_text("")
        return spec, "empty file; a CSV needs a header row and data rows"
    if case == "test columns differ":
        good.rename(path)
        other = write_csv(tmp_path / "test.csv", XT[:, :5], YT)
        spec = {"path": str(path), "label": "label", "test_path": str(other)}
        return spec, "test.csv: its columns differ from the training file's"
    if case == "missing test file":
        good.rename(path)
        spec = {"path": str(path), "label": "label", "test_path": str(tmp_path / "t.csv")}
        return spec, "t.csv: no such file"
    if case == "not .csv":
        spec = {**spec, "path": str(tmp_path / "d.txt")}
        return spec, "is not a .csv file (dataset: csv)"
    if case == "NaN cell":
        path.write_text("\n".join([*lines[:9], "nan," + lines[9].split(",", 1)[1], *lines[10:]]))
        return spec, "x_train has NaN or infinite values (first in row 8, of 1 rows)"
    raise AssertionError(case)


CSV_CASES = [
    "no header",
    "no such label",
    "a word in a cell",
    "a short row",
    "a column twice",
    "binary",
    "header only",
    "empty",
    "test columns differ",
    "missing test file",
    "not .csv",
    "NaN cell",
]


@pytest.mark.parametrize("case", CSV_CASES)
def test_bad_csv_files_are_one_line_errors(tmp_path: Path, case: str):
    spec, message = csv_case(tmp_path, case)
    with pytest.raises(DataError) as caught:
        load_splits(DataSpec(dataset="csv", val_size=5, **spec))
    assert message in one_line(caught.value)


SPEC = "model: {hidden: [16]}\ntrain: {epochs: 2, batch_size: 50}\ndevice: cpu\n"


def test_train_on_an_npz_end_to_end(cli, tmp_path: Path, tiny):
    path = save_npz(tmp_path / "tiny.npz", tiny)
    spec = write_spec(tmp_path, SPEC + f"data: {{dataset: arrays, path: {path}, val_size: 100}}\n")
    code, out, err = cli("train", str(spec), "--out", str(tmp_path / "runs"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["dataset"] == "arrays" and summary["epochs_run"] == 2
    assert summary["test_accuracy"] > 0.5  # 10 classes; the bars make them easy
    assert "arrays 500/100/200" in err
    import hashlib

    [record] = summary["data_files"]  # provenance: which bytes the run read
    assert record == {
        "path": str(path.resolve()),
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def test_a_bad_file_exits_2_with_one_line_and_no_run_dir(cli, tmp_path: Path):
    path, message = bad_file(tmp_path, "pickle named .npy")
    spec = write_spec(tmp_path, SPEC + f"data: {{dataset: arrays, path: {path}, test_size: 5}}\n")
    code, out, err = cli("train", str(spec), "--out", str(tmp_path / "runs"), "data.val_size=5")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    spec = write_spec(
        tmp_path, SPEC + "data: {dataset: arrays, path: x.npz, augment: {shift: 1}}\n"
    )
    path = tmp_path / "x.npz"
    np.savez(path, x_train=X, y_train=Y, x_test=XT, y_test=YT)
    code, _, err = cli(
        "train", str(spec), "--out", str(tmp_path / "runs"), f"data.path={path}", "data.val_size=5"
    )
    assert code == 2 and "holds flat feature vectors [N, 6], not images" in err


def test_check_validates_own_data_specs_without_torch_or_the_file(tmp_path: Path):
    spec = write_spec(tmp_path, "data: {dataset: csv, path: missing.csv, label: y, n_classes: 3}\n")
    probe = (
        "import sys; from dnntrick.cli import main\n"
        "try:\n    main(['check', sys.argv[1]])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code, file=sys.stderr)\n"
    )
    done = run_probe(probe, str(spec))
    assert "NO-TORCH 0" in done.stderr and "label: y" in done.stdout
    bad = write_spec(tmp_path, "data: {dataset: csv, path: d.csv}\n", "bad.yaml")
    done = run_probe(probe, str(bad))
    assert "dataset csv needs label" in done.stderr and "NO-TORCH 2" in done.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{dataset: arrays}", "data: dataset arrays needs path: the file to read"),
        (
            "{dataset: csv, path: a.csv}",
            "data: dataset csv needs label: the name of the label column",
        ),
        (
            "{dataset: arrays, path: a.npz, label: y}",
            "data: label applies to csv only (dataset is arrays)",
        ),
        ("{dataset: arrays, path: a.npz, root: r}", "data: root applies to the built-in sets only"),
        (
            "{path: a.npz}",
            "data: path applies to own data (arrays, csv) only (dataset is fashion-mnist)",
        ),
        ("{n_classes: 3}", "data: n_classes applies to own data (arrays, csv) only"),
        (
            "{dataset: csv, path: a.csv, label: y, test_path: b.csv, test_size: 5}",
            "data: test_size and test_path both give a test set; drop one",
        ),
        ("{classes: [0, 12]}", "data.classes: labels run from 0 to 9"),
        (
            "{dataset: arrays, path: a.npz, n_classes: 0}",
            "data.n_classes: input should be greater than 0",
        ),
    ],
)
def test_own_data_spec_errors(cli, tmp_path: Path, data: str, message: str):
    code, out, err = cli("check", str(write_spec(tmp_path, f"data: {data}\n")))
    assert code == 2 and out == "" and message in err, err


def test_own_data_labels_may_pass_9(cli, tmp_path: Path):
    path = write_spec(tmp_path, "data: {dataset: arrays, path: a.npz, classes: [3, 12]}\n")
    code, out, _ = cli("check", str(path))
    assert code == 0 and "- 12" in out


def test_csv_with_excels_byte_order_mark(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", X, Y, order=[6, 0, 1, 2, 3, 4, 5])  # label first
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    spec = DataSpec(dataset="csv", path=str(path), label="label", val_size=0, test_size=10)
    splits = load_splits(spec)
    assert torch.equal(splits.y_train, torch.from_numpy(Y[:30]))
    assert torch.equal(splits.x_train, torch.from_numpy(X[:30]))


def test_load_splits_takes_own_arrays_in_memory(tmp_path: Path):
    """The hook for dnntrick.train(spec, data=...): the arrays, not the spec's file."""
    spec = DataSpec(dataset="arrays", path="unused.npz", val_size=5, test_size=5)
    splits = load_splits(spec, arrays={"x_train": X, "y_train": Y})
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (30, 5, 5)
    with pytest.raises(
        DataError,
        match=r"^the arrays given: 40 rows in x_train but 3 labels in y_train; give one label a",
    ):
        load_splits(spec, arrays={"x_train": X, "y_train": Y[:3]})
