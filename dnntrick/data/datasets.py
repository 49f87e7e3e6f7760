"""Data sets in MNIST's IDX format: find the files, decode them once, split, put them on the device.

Lookup order for the four IDX files (`.gz` or raw): `data.root`, `$DNNTRICK_DATA`, the user cache
folder, `/usr/share/datasets/<name>` (Debian's dataset packages), then torchvision's download into
the cache folder. Decoded arrays are cached as `.npy` files keyed by the source files' size and
mtime, so the second load skips gunzip and parsing.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnntrick.data.catalog import DATASETS
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
    """Every folder searched for data set `name`, in order."""
    tv = DATASETS[name].torchvision_class
    bases: list[Path] = []
    if root:
        bases.append(Path(root).expanduser())
    if env := os.environ.get("DNNTRICK_DATA"):
        bases += [Path(env).expanduser(), Path(env).expanduser() / name]
    bases += [cache_dir() / name, Path("/usr/share/datasets") / name]
    dirs: list[Path] = []
    for base in bases:
        for folder in (base, base / tv / "raw"):
            if folder not in dirs:
                dirs.append(folder)
    return dirs


def _file_in(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def find_files(name: str, root: str | None, download: bool = True) -> dict[str, Path]:
    """Paths of the four IDX files of `name`, or a DataError listing every place looked."""
    dirs = candidate_dirs(name, root)
    for folder in dirs:
        found = {key: _file_in(folder, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return {k: v for k, v in found.items() if v is not None}
    if download and not os.environ.get("DNNTRICK_NO_DOWNLOAD"):
        fetched = _download(name)
        if fetched is not None:
            return find_files(name, str(fetched), download=False)
    looked = ", ".join(str(d) for d in dirs)
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


def read_idx(path: Path) -> np.ndarray:
    """Decode one IDX file (gzip or raw). A bad or truncated file is a DataError naming it."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(
            f"{path}: cannot read the IDX file ({err}); delete it and fetch the data set again"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'}); "
            "expected MNIST's format"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; delete it and fetch the data set again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[raw[2]]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file ({len(raw) - header} bytes of data, "
            f"expected {expected} for shape {list(shape)}); fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_arrays(name: str, root: str | None) -> dict[str, np.ndarray]:
    """The four decoded arrays of data set `name`, from the decoded cache when it is fresh."""
    if name not in DATASETS:  # own data (arrays, csv) is read by data/own.py, not cached here
        raise DataError(f"{name!r} is not a built-in data set ({', '.join(DATASETS)})")
    files = find_files(name, root)
    key = hashlib.sha256(
        repr(
            sorted(
                (k, str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                for k, p in files.items()
            )
        ).encode()
    ).hexdigest()[:16]
    folder = cache_dir() / "decoded" / f"{name}-{key}"
    with contextlib.suppress(OSError, ValueError):
        return {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in FILES}
    arrays = {k: read_idx(p) for k, p in files.items()}
    _check_consistent(arrays, files)
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        folder.mkdir(parents=True, exist_ok=True)
        for k, array in arrays.items():
            tmp = folder / f".{k}.{os.getpid()}.tmp.npy"
            np.save(tmp, array)
            os.replace(tmp, folder / f"{k}.npy")
    return arrays


def _check_consistent(arrays: dict[str, np.ndarray], files: dict[str, Path]) -> None:
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(
                f"{files[split + '_images']}: expected images [N, H, W] and labels [N] "
                f"(got {list(images.shape)} and {list(labels.shape)})"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{files[split + '_labels']}: {len(labels)} labels for "
                f"{len(images)} images; the files do not belong together"
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
