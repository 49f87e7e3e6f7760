"""Your own data: an .npz, a folder of .npy files or a CSV file → the same `Splits` as the
built-in sets (validation split, `classes`, `train_limit`, standardization alike).

Forms (docs/data.md):
- `dataset: arrays`, `path: data.npz` with the arrays x_train, y_train and optionally x_test,
  y_test; or `path: folder/` holding x_train.npy, y_train.npy [, x_test.npy, y_test.npy].
- `dataset: csv`, `path: train.csv`, `label: COLUMN`, optional `test_path: test.csv`: a header row
  of column names, comma-separated numbers; every column but the label is a feature.

x: [N, F] feature vectors, [N, H, W] images or [N, H, W, C]; flattened to [N, features]. uint8 is
read as pixels and divided by 255 (as the built-in sets are); any other number type is used as
it is. y: [N] integer class labels 0..K-1, K = data.n_classes or the largest label + 1. Every
file is read with allow_pickle=False: an array of Python objects is refused, never unpickled.
Every problem is a DataError (an unsafe file: UnsafeFileError), exit 2, one line naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dnntrick.data.paths import reason, user_path
from dnntrick.errors import DataError, UnsafeFileError, suggest

if TYPE_CHECKING:
    import torch

    from dnntrick.data.splits import Splits
    from dnntrick.spec.schema import DataSpec

KEYS = ("x_train", "y_train", "x_test", "y_test")
SAVE = {".npz": "np.savez", ".npy": "np.save"}  # the remedy for a file numpy cannot read
IN_MEMORY = "(in memory)"  # data.path of arrays handed to dnntrick.train(spec, data=...)
# a DataSpec's split fields at their plain values: no validation split, no cuts, no scaling
PLAIN = SimpleNamespace(
    val_size=0,
    val_from="last",
    classes=None,
    train_limit=None,
    standardize=False,
    augment=None,
    test_size=None,
    n_classes=None,
)


def _np_load(path: Path, kind: str) -> object:
    """np.load without pickles, after a look at the file's first bytes; an unreadable,
    mislabelled or pickled file is a one-line error."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}); check its permissions") from None
    if head.startswith(b"\x80"):  # pickle protocols 2-5 open with the PROTO opcode
        raise UnsafeFileError(
            f"{path}: a Python pickle, not a {kind} file; dnntrick never unpickles "
            "(save numeric arrays with np.save or np.savez)"
        )
    if not head.startswith((b"PK\x03\x04", b"\x93NUMPY")):  # an .npz is a zip archive
        raise DataError(
            f"{path}: not a {kind} file (it does not start as numpy's files do); "
            f"write it with {SAVE[kind]}"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, ValueError) and "pickle" in str(err):  # an array of Python objects
            raise UnsafeFileError(
                f"{path}: holds an array of Python objects, which would need unpickling; "
                "dnntrick never unpickles (save numeric arrays)"
            ) from None
        raise DataError(
            f"{path}: not a readable {kind} file ({reason(err)}); write it again with {SAVE[kind]}"
        ) from None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz archive: x_train, y_train and optionally x_test, y_test."""
    archive = _np_load(path, ".npz")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: an .npy array, not an .npz archive; save with np.savez")
    with archive:
        names = tuple(archive.files)
        _check_keys(names, str(path))
        try:
            return {k: archive[k] for k in names}
        except ValueError as err:  # an object array inside the archive
            raise UnsafeFileError(
                f"{path}: holds an array of Python objects ({reason(err)}); save numeric arrays"
            ) from None
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: a damaged .npz archive ({reason(err)})") from None


def read_npy_folder(folder: Path) -> dict[str, np.ndarray]:
    """x_train.npy, y_train.npy [, x_test.npy, y_test.npy] from `folder`."""
    names = tuple(sorted(p.stem for p in folder.glob("*.npy")))
    _check_keys(names, f"{folder}/", suffix=".npy")
    arrays = {}
    for name in names:
        array = _np_load(folder / f"{name}.npy", ".npy")
        if not isinstance(array, np.ndarray):
            raise DataError(f"{folder / name}.npy: an .npz archive, not an .npy array")
        arrays[name] = array
    return arrays


def _check_keys(names: tuple[str, ...], source: str, suffix: str = "") -> None:
    for name in names:
        if name not in KEYS:
            raise DataError(
                f"{source}: unknown array {name}{suffix}{suggest(name.lower(), KEYS)} "
                f"(expected x_train{suffix}, y_train{suffix} and optionally "
                f"x_test{suffix}, y_test{suffix})"
            )
    for name in ("x_train", "y_train"):
        if name not in names:
            raise DataError(
                f"{source}: no {name}{suffix} (it holds: {', '.join(sorted(names)) or 'none'})"
            )
    if ("x_test" in names) != ("y_test" in names):
        raise DataError(f"{source}: x_test{suffix} and y_test{suffix} come together; give both")


def read_csv(
    path: Path, label: str, columns: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x [N, F] float64, y [N] float64, the column names of x) of a CSV file with a header row.
    `columns`: the feature columns another file had, which this one must have too."""
    if not path.is_file():
        what = "a folder, not a CSV file" if path.is_dir() else "no such file"
        raise DataError(f"{path}: {what}; check data.path and data.test_path")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: Excel's BOM
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as err:
        fix = (
            "save it as UTF-8 text"
            if isinstance(err, UnicodeDecodeError)
            else "check its permissions"
        )
        raise DataError(f"{path}: not a readable text CSV file ({reason(err)}); {fix}") from None
    header = [name.strip() for name in header]
    if not header:
        raise DataError(f"{path}: empty file; a CSV needs a header row and data rows")
    if all(_is_number(name) for name in header):
        raise DataError(f"{path}: the first row holds numbers; it must be a header of column names")
    if len(set(header)) != len(header):
        twice = sorted({n for n in header if header.count(n) > 1})
        raise DataError(f"{path}: the header names column(s) {', '.join(twice)} twice")
    if label not in header:
        raise DataError(
            f"{path}: no label column {label!r}{suggest(label, tuple(header))} (data.label; "
            f"columns: {', '.join(header[:8])}{', …' if len(header) > 8 else ''})"
        )
    features = [n for n in header if n != label]
    if columns is not None and sorted(features) != sorted(columns):
        raise DataError(f"{path}: its columns differ from the training file's")
    try:
        with warnings.catch_warnings():  # "input contained no data": refused below as empty
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(
                path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2, encoding="utf-8"
            )
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a table of numbers ({reason(err)})") from None
    if table.size == 0:
        table = np.zeros((0, len(header)))
    if table.shape[1] != len(header):
        raise DataError(f"{path}: {table.shape[1]} values a row for {len(header)} columns")
    order = [header.index(n) for n in (columns or features)]
    return table[:, order], table[:, header.index(label)], features


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_own(spec: DataSpec) -> dict[str, np.ndarray]:
    """The arrays in the spec's files: x_train, y_train and, when there is one, x_test, y_test."""
    assert spec.path is not None  # the spec requires it for arrays and csv
    path = user_path(spec.path, "data.path")
    if spec.dataset == "csv":
        if path.suffix.lower() != ".csv":
            raise DataError(f"data.path: {path} is not a .csv file (dataset: csv)")
        x, y, columns = read_csv(path, spec.label or "")
        arrays = {"x_train": x, "y_train": y}
        if spec.test_path is not None:
            test = user_path(spec.test_path, "data.test_path")
            arrays["x_test"], arrays["y_test"], _ = read_csv(test, spec.label or "", columns)
        return arrays
    if path.is_dir():
        return read_npy_folder(path)
    if not path.exists():
        raise DataError(f"data.path: {path}: no such file or folder; check the path")
    if path.suffix.lower() == ".npz":
        return read_npz(path)
    hint = {".npy": "a folder of x_train.npy, y_train.npy …", ".csv": "dataset: csv"}
    raise DataError(
        f"data.path: {path}: dataset arrays reads an .npz file or a folder of .npy files"
        + (f" (use {hint[path.suffix.lower()]})" if path.suffix.lower() in hint else "")
    )


def check_pair(x: np.ndarray, y: np.ndarray, split: str, source: str) -> tuple[np.ndarray, ...]:
    """(x as float32 or uint8, y as int64) after checking their shapes, types and values."""
    x, y = np.asarray(x), np.asarray(y)
    where = source
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: x_{split} must hold numbers (dtype {x.dtype})")
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"{where}: x_{split} has shape {list(x.shape)}; expected [N, features], "
            "[N, H, W] or [N, H, W, C]"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{where}: y_{split} has shape {list(y.shape)}; expected [N] class labels "
            "(one-hot labels: take their argmax)"
        )
    if len(x) != len(y):
        raise DataError(
            f"{where}: {len(x)} rows in x_{split} but {len(y)} labels in y_{split}; give one "
            "label a row"
        )
    if len(x) == 0:
        raise DataError(f"{where}: the {split} split is empty (0 rows)")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
        bad = "" if y.dtype.kind != "f" else f", e.g. {float(y[np.mod(y, 1) != 0][0])!r}"
        raise DataError(
            f"{where}: y_{split} must hold integer class labels (dtype {y.dtype}{bad}); save "
            "the class numbers 0..K-1"
        )
    y = y.astype(np.int64)
    if (low := int(y.min())) < 0:
        raise DataError(f"{where}: y_{split} has a negative label ({low}); labels run 0..K-1")
    if x.dtype != np.uint8:
        with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused below
            x = np.array(x, dtype=np.float32, order="C")  # a copy: the caller keeps its own
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            raise DataError(
                f"{where}: x_{split} has NaN or infinite values (first in row "
                f"{int(np.argmin(finite))}, of {int((~finite).sum())} rows); drop or fill them"
            )
    return x, y


def splits_from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    spec: DataSpec | None = None,
    device: torch.device | str = "cpu",
    source: str = "data",
) -> Splits:
    """Train/validation/test splits of in-memory arrays, as the built-in sets get them from
    `data.load_splits`: the spec's test_size (when there is no x_test), val_size, val_from,
    classes, train_limit, standardize and augment apply (its dataset and path fields do not).
    `source` names the data in error messages. Raises DataError on any bad array."""
    spec = cast("DataSpec", spec or PLAIN)  # PLAIN has the fields read here
    x, y = check_pair(x_train, y_train, "train", source)
    if (x_test is None) != (y_test is None):
        raise DataError(f"{source}: x_test and y_test come together; give both")
    if x_test is not None and y_test is not None:
        if spec.test_size is not None:
            raise DataError(f"{source}: has a test set, so data.test_size must not be set")
        xt, yt = check_pair(x_test, y_test, "test", source)
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{source}: x_test rows have shape {list(xt.shape[1:])}, x_train rows "
                f"{list(x.shape[1:])}"
            )
    elif spec.test_size is not None:
        if spec.test_size >= len(x):
            raise DataError(
                f"data.test_size: {spec.test_size} leaves no training rows ({source} has "
                f"{len(x)}); use a smaller value"
            )
        cut = len(x) - spec.test_size
        x, xt, y, yt = x[:cut], x[cut:], y[:cut], y[cut:]
    else:
        raise DataError(
            f"{source}: no test set; add x_test and y_test (csv: data.test_path), or set "
            "data.test_size: N to hold out the last N rows"
        )
    top = int(max(y.max(), yt.max()))
    k = spec.n_classes if spec.n_classes is not None else top + 1
    if top >= k:
        raise DataError(
            f"{source}: label {top} is out of range for data.n_classes: {k}; raise "
            "data.n_classes or fix the labels"
        )
    if k < 2:
        raise DataError(f"{source}: every label is 0; a classifier needs at least 2 classes")
    if spec.augment is not None:
        _check_augmentable(x.shape, source)
    return _split(x, y, xt, yt, tuple(str(c) for c in range(k)), spec, device, source)


def _check_augmentable(shape: tuple[int, ...], source: str) -> None:
    if len(shape) == 2:
        raise DataError(
            f"data.augment: {source} holds flat feature vectors [N, {shape[1]}], not images; "
            "augmentation shifts, rotates and flips images. Set data.augment: null"
        )
    side = shape[1:3]
    if side[0] != side[1] or (len(shape) == 4 and shape[3] != 1):
        raise DataError(
            f"data.augment: needs square one-channel images [N, S, S] (got {list(shape[1:])} "
            f"in {source}); set data.augment: null"
        )


def _split(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: tuple[str, ...],
    spec: DataSpec,
    device: torch.device | str,
    source: str,
) -> Splits:
    """data.load_splits' recipe: the same cuts, scaling and statistics (data/splits.py)."""
    from dnntrick.data.splits import cut_splits, make_splits

    if spec.val_size >= len(x):
        raise DataError(
            f"data.val_size: {spec.val_size} leaves no training rows ({source} has {len(x)} for "
            "training and validation); use a smaller value"
        )
    if spec.classes is not None and (big := max(spec.classes)) >= len(classes):
        raise DataError(f"data.classes: {big} is not a label of {source} (0..{len(classes) - 1})")
    parts, classes = cut_splits(x, y, x_test, y_test, spec, classes)
    for name, (xs, _) in parts.items():
        if len(xs) == 0 and (name != "val" or spec.val_size):
            raise DataError(
                f"{source}: no {name} rows left after data.classes/train_limit; check them"
            )

    return make_splits(parts, classes, spec.standardize, device)


def load_own_splits(
    spec: DataSpec, device: torch.device | str = "cpu", arrays: dict[str, np.ndarray] | None = None
) -> Splits:
    """The splits of `spec.path` (dataset arrays or csv), or of `arrays` (x_train, y_train
    [, x_test, y_test]) when given: data.load_splits' own-data branch."""
    source = str(spec.path) if arrays is None else "the arrays given"
    arrays = read_own(spec) if arrays is None else arrays
    return splits_from_arrays(**arrays, spec=spec, device=device, source=source)


def provenance(spec: DataSpec) -> dict[str, object]:
    """summary.json's record of the own-data files a run read ({} for the built-in sets):
    {"data_files": [{"path": absolute path, "bytes": size, "sha256": hex digest}, ...]}."""
    if spec.path is None:
        return {}
    if spec.path == IN_MEMORY:
        return {"data_files": [IN_MEMORY]}
    path = user_path(spec.path, "data.path")
    files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
    files += [user_path(spec.test_path, "data.test_path")] if spec.test_path else []
    records: list[dict[str, object]] = []
    for file in files:
        try:
            with open(file, "rb") as handle:
                sha256: str | None = hashlib.file_digest(handle, "sha256").hexdigest()
            size: int | None = file.stat().st_size
        except OSError:  # gone since it was read: the record says so, the run still finishes
            sha256 = size = None
        records.append({"path": str(file.resolve()), "bytes": size, "sha256": sha256})
    return {"data_files": records}


def arrays_from_python(data: Any) -> dict[str, Any]:
    """dnntrick.train's `data`: (x_train, y_train), (x_train, y_train, x_test, y_test) or a
    dict with those keys, as the arrays load_own_splits takes (checked there like a file)."""
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(KEYS))
        if unknown or not {"x_train", "y_train"} <= set(data):
            raise DataError(
                f"data: a dict needs x_train and y_train (optional x_test, y_test); got keys "
                f"{', '.join(sorted(map(str, data)))}"
            )
        return dict(data)
    if isinstance(data, tuple | list) and len(data) in (2, 4):
        return dict(zip(KEYS, data, strict=False))
    raise DataError(
        "data: give (x_train, y_train), (x_train, y_train, x_test, y_test) or a dict of them"
    )
