"""`Splits`: a data set's train/validation/test tensors on the training device, whatever file
they came from (the built-in IDX sets: datasets.py; your own arrays or CSV: own.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from dnntrick.spec.schema import DataSpec


@dataclass
class Splits:
    """Tensors on the training device. x: float32 [N, features], y: int64 [N]."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    # per-pixel statistics [1, features] of the training split when data.standardize, else None;
    # pixel_std is what x is divided by: 1 where the feature is constant in the training split
    pixel_mean: torch.Tensor | None = None
    pixel_std: torch.Tensor | None = None
    # x = raw value / input_divisor (then standardized): 255 for pixels stored as bytes
    input_divisor: float = 255.0

    @property
    def in_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def cut_splits(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    spec: DataSpec,
    classes: tuple[str, ...],
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """The spec's cuts, in this order, of training rows x [N, ...], y [N] and the test rows:
    the validation split (val_size rows from the first or the last), data.classes (rows of those
    labels only, renumbered 0..k-1 in the given order) and train_limit; (parts, class names).
    The caller checks that val_size leaves training rows, and what is left after the cuts."""
    n_val = spec.val_size
    if spec.val_from == "first":
        val, train = slice(0, n_val), slice(n_val, None)
    else:
        val, train = slice(len(x) - n_val, None), slice(0, len(x) - n_val)
    parts = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x_test, y_test)}
    if spec.classes is not None:
        parts = {k: _keep_classes(xs, ys, spec.classes) for k, (xs, ys) in parts.items()}
        classes = tuple(classes[c] for c in spec.classes)
    if spec.train_limit is not None:
        xs, ys = parts["train"]
        parts["train"] = (xs[: spec.train_limit], ys[: spec.train_limit])
    return parts, classes


def _keep_classes(x: np.ndarray, y: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label is in `keep`, labels renumbered to their position in `keep`."""
    labels = y.astype(np.int64)
    mapping = np.full(max(int(labels.max(initial=-1)), *keep) + 1, -1, dtype=np.int64)
    mapping[keep] = np.arange(len(keep))
    new = mapping[labels]
    mask = new >= 0
    return x[mask], new[mask]


def make_splits(
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: tuple[str, ...],
    standardize: bool,
    device: torch.device | str = "cpu",
) -> Splits:
    """Splits from the rows of "train", "val" and "test" (x [N, ...], integer y [N]): x is
    flattened to float32 [N, features], uint8 pixels divided by 255 (other types as they are),
    then, with `standardize`, centred and scaled by the training split's per-feature statistics
    (std 1 for a feature that is constant there, so it is only centred)."""
    import torch

    divisor = 255.0 if parts["train"][0].dtype == np.uint8 else 1.0

    def to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features = int(np.prod(x.shape[1:]))  # not -1: val_size 0 makes an empty split
        xt = torch.from_numpy(np.array(x, order="C")).reshape(len(x), features).to(device)
        yt = torch.from_numpy(y.astype(np.int64)).to(device)  # the copies: a cache is mmap'd
        return (xt.float().div_(divisor) if divisor != 1.0 else xt.float()), yt

    tensors = {k: to_tensors(x, y) for k, (x, y) in parts.items()}
    mean = std = None
    if standardize:
        train_x = tensors["train"][0]
        mean = train_x.mean(dim=0, keepdim=True)
        # torch's unbiased std; a single row has none (and every feature of it is constant)
        std = train_x.std(dim=0, keepdim=True, correction=int(len(train_x) > 1))
        # A feature constant in the training split (a corner pixel of 500 images) is scaled by 1,
        # as scikit-learn's StandardScaler does: the book's std + 1e-10 turned any validation or
        # test input where it varies into ±1e10. Exact equality, not std == 0: a constant 0.3
        # column has a rounding-error std of ~1e-8, which would blow up just the same.
        constant = (train_x == train_x[:1]).all(dim=0, keepdim=True)
        std = torch.where(constant, torch.ones_like(std), std)
        for xt, _ in tensors.values():
            xt.sub_(mean).div_(std)
    return Splits(
        *tensors["train"],
        *tensors["val"],
        *tensors["test"],
        classes,
        pixel_mean=mean,
        pixel_std=std,
        input_divisor=divisor,
    )
