"""Data sets in MNIST's IDX format: find the files, decode them once, split, put them on the device.

The four IDX files (`.gz` or raw) are read from `data.root` when it is set (that folder only),
else the first of `$DNNTRICK_DATA`, the user cache folder, `/usr/share/datasets/<name>` (Debian's
dataset packages) that has them, else torchvision's download into the cache folder. Bad files and
paths are DataErrors (exit 2) naming the file and what to do. Decoded arrays are cached as
`.npy` files keyed by a blake2b digest of the source files' bytes, each checked against its
digest when read (a damaged cache is rebuilt), so the second load skips gunzip and parsing.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnntrick.data.catalog import DATASETS
from dnntrick.data.paths import reason, user_path
from dnntrick.data.splits import Splits, cut_splits, make_splits
from dnntrick.errors import DataError

if TYPE_CHECKING:
    import torch

    from dnntrick.spec.schema import DataSpec


FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def cache_dir() -> Path:
    """The user cache: $DNNTRICK_CACHE, else $XDG_CACHE_HOME/dnntrick, else ~/.cache/dnntrick."""
    if env := os.environ.get("DNNTRICK_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dnntrick"


def candidate_dirs(name: str, root: str | None) -> list[Path]:
    """Every folder searched for data set `name`, in order: data.root's alone when it is set."""
    tv = DATASETS[name].torchvision_class
    bases: list[Path] = []
    if root:
        bases.append(user_path(root, "data.root"))
    else:
        if env := os.environ.get("DNNTRICK_DATA"):
            folder = user_path(env, "$DNNTRICK_DATA")
            if not folder.is_dir():  # a typo would fall through to other files unnoticed
                raise DataError(
                    f"$DNNTRICK_DATA: {env}: folder not found; set it to the folder that holds "
                    "the data sets (or unset it)"
                )
            bases += [folder, folder / name]
        bases += [cache_dir() / name, Path("/usr/share/datasets") / name]
    dirs: list[Path] = []
    for base in bases:
        for folder in (base, base / tv / "raw"):
            if folder not in dirs:
                dirs.append(folder)
    return dirs


def _file_in(folder: Path, stem: str, name: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        try:
            if candidate.is_file():
                return candidate
            if candidate.is_dir():  # else the search would go on and say "not found"
                raise DataError(f"{candidate}: a folder, not an IDX file; {refetch(name)}")
        except OSError:  # a name too long, a loop of links: not there
            continue
    return None


def find_files(name: str, root: str | None, download: bool = True) -> dict[str, Path]:
    """Paths of the four IDX files of `name`, or a DataError listing every place looked. A
    data.root is the one folder looked in: a typo in it must not train on other files."""
    dirs = candidate_dirs(name, root)
    if root and not dirs[0].is_dir():
        what = "is a file, not a folder" if dirs[0].exists() else "folder not found"
        raise DataError(
            f"data.root: {root}: {what}; give the folder that holds the four IDX files, or "
            "drop data.root to search the usual places (docs/data.md)"
        )
    for folder in dirs:
        found = {key: _file_in(folder, stem, name) for key, stem in FILES.items()}
        if all(found.values()):
            return {k: v for k, v in found.items() if v is not None}
    looked = ", ".join(str(d) for d in dirs)
    if root:
        missing = [stem for stem in FILES.values() if _file_in(dirs[0], stem, name) is None]
        raise DataError(
            f"data.root: {root}: no {', '.join(missing)} (.gz or raw) of {name!r} in {looked}; "
            "put the four IDX files there, or drop data.root to search the usual places"
        )
    if download and not os.environ.get("DNNTRICK_NO_DOWNLOAD"):
        fetched = _download(name)
        if fetched is not None:
            return find_files(name, str(fetched), download=False)
    debian = "apt-get install dataset-fashion-mnist, " if name == "fashion-mnist" else ""
    raise DataError(
        f"data set {name!r} not found (looked in: {looked}; the download failed or was off). "
        f"Get it with `dnntrick data fetch {name}` ({debian}or put the four IDX files in a folder "
        "and set data.root or $DNNTRICK_DATA)"
    )


def _download(name: str) -> Path | None:
    """torchvision's download into the cache folder; None when it fails (e.g. no network)."""
    import socket

    target = cache_dir() / name
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, DATASETS[name].torchvision_class)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cls(root=str(target), train=True, download=True)
            cls(root=str(target), train=False, download=True)
        return target / DATASETS[name].torchvision_class / "raw"
    except Exception:  # any failure means "not downloadable here"; the caller reports all places
        return None
    finally:
        socket.setdefaulttimeout(old_timeout)


def read_idx(path: Path, dataset: str | None = None) -> np.ndarray:
    """Decode one IDX file (gzip or raw) of data set `dataset`. A bad or truncated file is a
    DataError naming it and saying what to do."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(
            f"{path}: cannot read the IDX file ({reason(err)}); {refetch(dataset)}"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'}); "
            f"{refetch(dataset)}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; {refetch(dataset)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[raw[2]]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file ({len(raw) - header} bytes of data, "
            f"expected {expected} for shape {list(shape)}); {refetch(dataset)}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_arrays(name: str, root: str | None) -> dict[str, np.ndarray]:
    """The four decoded arrays of data set `name`, from the decoded cache when it holds these
    files' arrays intact."""
    if name not in DATASETS:  # own data (arrays, csv) is read by data/own.py, not cached here
        raise DataError(f"{name!r} is not a built-in data set ({', '.join(DATASETS)})")
    files = find_files(name, root)
    # Keyed on the files' bytes, not their size and mtime: a file replaced by another of the
    # same size with its mtime kept (cp -p, rsync -t, a restored backup) is a new key.
    sources = {k: _file_digest(p, name) for k, p in sorted(files.items())}
    key = hashlib.blake2b(repr((CACHE_FORMAT, sources)).encode(), digest_size=8).hexdigest()
    folder = cache_dir() / "decoded" / f"{name}-{key}"
    cached = _read_cache(folder)
    if cached is not None:
        return cached
    arrays = {k: read_idx(p, name) for k, p in files.items()}
    _check_consistent(arrays, files, name)
    _write_cache(folder, arrays)
    return arrays


CACHE_FORMAT = 2  # 1: keyed on size and mtime; 2: on content, each array's digest in MANIFEST
MANIFEST = "manifest.json"


def refetch(name: str | None) -> str:
    """What to do about a bad IDX file of data set `name` (None: not known here)."""
    fetch = f"dnntrick data fetch {name}" if name else "dnntrick data fetch NAME"
    return f"delete it and fetch the data set again ({fetch}), or fix data.root"


def _file_digest(path: Path, name: str) -> str:
    """blake2b of a file's bytes, streamed (Fashion-MNIST's four .gz files: ~50 ms)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "blake2b").hexdigest()
    except OSError as err:
        raise DataError(
            f"{path}: cannot read the IDX file ({reason(err)}); check its permissions, or "
            f"{refetch(name)}"
        ) from None


def _array_digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).data).hexdigest()


def _read_cache(folder: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays (memory-mapped) when every one matches the manifest's shape, dtype and
    digest; None when anything is missing, truncated or garbled: the caller rebuilds it."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        arrays = {}
        for k in FILES:
            array = np.load(folder / f"{k}.npy", mmap_mode="r", allow_pickle=False)
            expected = manifest["arrays"][k]
            if (
                list(array.shape) != expected["shape"]
                or array.dtype.str != expected["dtype"]
                or _array_digest(array) != expected["blake2b"]
            ):
                return None
            arrays[k] = array
    except Exception:  # whatever a damaged cache raises (np.load's header parser: many kinds)
        return None
    return arrays


def _write_cache(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """The arrays as .npy files, then the manifest that vouches for them (written last, so a
    half-written cache has none and is rebuilt). A read-only cache only costs speed."""
    entries: dict[str, dict[str, object]] = {}
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        for k, array in arrays.items():
            tmp = folder / f".{k}.{os.getpid()}.tmp.npy"
            np.save(tmp, array)
            os.replace(tmp, folder / f"{k}.npy")
            entries[k] = {
                "shape": list(array.shape),
                "dtype": array.dtype.str,
                "blake2b": _array_digest(array),
            }
        tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"format": CACHE_FORMAT, "arrays": entries}, indent=1))
        os.replace(tmp, folder / MANIFEST)


def _check_consistent(arrays: dict[str, np.ndarray], files: dict[str, Path], name: str) -> None:
    """The four decoded arrays are a data set of `name`'s kind: uint8 images [N, H, W] of one
    size, integer labels [N] in 0..classes-1, as many labels as images; else a DataError naming
    the file."""

    def bad(key: str, what: str) -> DataError:
        return DataError(f"{files[key]}: {what}; {refetch(name)}")

    n_classes = len(DATASETS[name].classes)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3:
            raise bad(f"{split}_images", f"holds shape {list(images.shape)}, not images [N, H, W]")
        if images.dtype != np.uint8:
            raise bad(f"{split}_images", f"holds {images.dtype} values, not bytes (IDX type 0x08)")
        if len(images) == 0:
            raise bad(f"{split}_images", "holds 0 images")
        if labels.ndim != 1:
            raise bad(f"{split}_labels", f"holds shape {list(labels.shape)}, not labels [N]")
        if labels.dtype.kind not in "iu":
            raise bad(f"{split}_labels", f"holds {labels.dtype} values, not integer class labels")
        if len(images) != len(labels):
            raise bad(
                f"{split}_labels",
                f"{len(labels)} labels for {len(images)} images; the files do not belong together",
            )
        out = labels[(labels < 0) | (labels >= n_classes)]
        if len(out):
            raise bad(
                f"{split}_labels",
                f"label {int(out[0])} is outside 0..{n_classes - 1} ({len(out)} of "
                f"{len(labels)} labels)",
            )
    train, test = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train != test:
        raise bad(
            "test_images", f"images of {test[0]}x{test[1]}, training images {train[0]}x{train[1]}"
        )


def load_splits(
    spec: DataSpec,
    device: torch.device | str = "cpu",
    arrays: dict[str, np.ndarray] | None = None,
) -> Splits:
    """Train/validation/test splits of the spec's data set, as tensors on `device`, from
    `arrays` (the four decoded arrays) when given, else from `load_arrays`."""

    if spec.dataset not in DATASETS:  # own data (arrays, csv): its files, or `arrays` x_train…
        from dnntrick.data.own import load_own_splits

        return load_own_splits(spec, device, arrays)
    if arrays is None:
        arrays = load_arrays(spec.dataset, spec.root)
    images, labels = arrays["train_images"], arrays["train_labels"]
    if spec.val_size >= len(images):
        raise DataError(
            f"data.val_size: {spec.val_size} leaves no training images "
            f"(the training set has {len(images)}); use a smaller value"
        )
    test_images, test_labels = arrays["test_images"], arrays["test_labels"]
    classes = DATASETS[spec.dataset].classes
    parts, classes = cut_splits(images, labels, test_images, test_labels, spec, classes)
    if len(parts["train"][0]) == 0:
        raise DataError(
            "no training images left after data.classes/train_limit; check those settings"
        )

    return make_splits(parts, classes, spec.standardize, device)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) as an IDX file, gzipped if the name ends in .gz (tests, tools)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload, compresslevel=1) if path.suffix == ".gz" else payload)
