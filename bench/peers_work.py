"""One peer's run of the benchmark's work; bench/peers.py starts one process per run.

The work: Fashion-MNIST's 60k training images split into the first 55k for training and the
last 5k for validation (dnntrick's data.val_from: last), the 10k test images, pixels / 255; an MLP
784-300-100-10 with ELU, He-normal weights (an untruncated normal, std sqrt(2 / fan_in), as
dnntrick's he_normal) and zero biases; Adam lr 1e-3 (betas 0.9/0.999, eps 1e-8: torch's defaults,
which Keras is given too); softmax cross-entropy; the training set reshuffled every epoch;
validation after each epoch; test accuracy at the end.

Peers: plain PyTorch with a DataLoader over a TensorDataset (`torch-dataloader`) and over the
split preloaded as one tensor, batches by index (`torch-preloaded`); PyTorch Lightning as its docs
show (`lightning`); Keras 3's `model.fit` on arrays with the torch backend (`keras-torch`) or
TensorFlow's (`keras-tf`). Each is written as its own docs write it, with its own defaults.

Train time is what dnntrick's summary.json calls train_seconds: the wall time of each epoch's
training steps, validation excluded, summed over the epochs. The result is one line on stdout,
`PEER-RESULT {json}`. This file runs in the peers' venv: numpy at import time, each framework
imported by the peer that uses it, and never dnntrick.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

PEERS = ("torch-dataloader", "torch-preloaded", "lightning", "keras-torch", "keras-tf")
STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
HIDDEN = (300, 100)
LR = 1e-3
ADAM_EPS = 1e-8  # torch's default (dnntrick's too); Keras' own default is 1e-7
MARKER = "PEER-RESULT "


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (MNIST's format), gzipped or raw, as a uint8 array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for path in (root / f"{stem}.gz", root / stem):
        if path.is_file():
            return path
    raise FileNotFoundError(f"{root}: no {stem}(.gz)")


def load_data(
    root: Path, val_size: int = 5000, train_limit: int | None = None
) -> dict[str, np.ndarray]:
    """x_* float32 [N, 784] in [0, 1], y_* int64 [N]: train = all but the last val_size training
    images (its first train_limit when given), val = the last val_size, test = the test file."""
    arrays = {key: read_idx(_find(root, stem)) for key, stem in STEMS.items()}

    def prepared(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
        return x, labels.astype(np.int64)

    n = len(arrays["train_images"]) - val_size
    x, y = prepared(arrays["train_images"], arrays["train_labels"])
    x_test, y_test = prepared(arrays["test_images"], arrays["test_labels"])
    stop = n if train_limit is None else min(n, train_limit)
    return {
        "x_train": x[:stop],
        "y_train": y[:stop],
        "x_val": x[n:],
        "y_val": y[n:],
        "x_test": x_test,
        "y_test": y_test,
    }


class TrainClock:
    """Sums the wall time between start() and stop(); a stop without a start is ignored (the
    frameworks' validation hooks also fire outside training epochs)."""

    def __init__(self) -> None:
        self.epochs: list[float] = []  # seconds of each epoch's training steps
        self.cpu_epochs: list[float] = []  # the process's CPU seconds in them (all threads)
        self._t0: tuple[float, float] | None = None

    @property
    def seconds(self) -> float:
        return sum(self.epochs)

    def start(self) -> None:
        self._t0 = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        if self._t0 is not None:
            self.epochs.append(time.perf_counter() - self._t0[0])
            self.cpu_epochs.append(time.process_time() - self._t0[1])
            self._t0 = None


def torch_mlp(nn: Any, n_in: int = 784, n_out: int = 10) -> Any:
    """nn.Sequential 784-300-100-10 ELU with He-normal weights and zero biases."""
    import math

    widths = (n_in, *HIDDEN)
    layers: list[Any] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ELU()]
    layers.append(nn.Linear(widths[-1], n_out))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / layer.in_features))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def run_torch(args: argparse.Namespace, data: dict[str, np.ndarray], clock: TrainClock) -> dict:
    """The hand-written loop: a DataLoader over a TensorDataset, or batches by index from a
    preloaded tensor (`torch-preloaded`)."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    model = torch_mlp(nn)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, eps=ADAM_EPS)
    x, y, n, bs = t["x_train"], t["y_train"], len(t["x_train"]), args.batch

    def accuracy(xs: torch.Tensor, ys: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            correct = (model(xs).argmax(1) == ys).sum().item()
        model.train()
        return correct / len(ys)

    loader = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)
    val_accuracy = 0.0
    for _ in range(args.epochs):
        clock.start()
        if args.peer == "torch-preloaded":
            order = torch.randperm(n)
            loss_sum = torch.zeros(())
            for i in range(0, n, bs):
                idx = order[i : i + bs]
                xb, yb = x[idx], y[idx]
                optimizer.zero_grad()
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(yb)
            train_loss = loss_sum.item() / n
        else:
            total = 0.0
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(yb)
            train_loss = total / n
        clock.stop()
        val_accuracy = accuracy(t["x_val"], t["y_val"])
    return {
        "train_loss": train_loss,
        "val_accuracy": val_accuracy,
        "test_accuracy": accuracy(t["x_test"], t["y_test"]),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__},
    }


def run_lightning(args: argparse.Namespace, data: dict[str, np.ndarray], clock: TrainClock) -> dict:
    """A LightningModule and Trainer.fit over DataLoaders of TensorDatasets, as Lightning's docs
    show; the clock runs from each training epoch's start to its validation's start."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch_mlp(nn)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            xb, yb = batch
            loss = F.cross_entropy(self.net(xb), yb)
            self.log("train_loss", loss)
            return loss

        def _score(self, batch: Any, prefix: str) -> None:
            xb, yb = batch
            logits = self.net(xb)
            self.log(f"{prefix}_loss", F.cross_entropy(logits, yb))
            self.log(f"{prefix}_acc", (logits.argmax(1) == yb).float().mean())

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self._score(batch, "val")

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self._score(batch, "test")

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=LR, eps=ADAM_EPS)

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            clock.start()

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            clock.stop()  # the sanity check's validation comes before any start: ignored

    def loader(split: str, shuffle: bool = False) -> DataLoader:
        xs, ys = torch.from_numpy(data[f"x_{split}"]), torch.from_numpy(data[f"y_{split}"])
        return DataLoader(TensorDataset(xs, ys), batch_size=args.batch, shuffle=shuffle)

    model = MLP()
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
    )
    trainer.fit(model, loader("train", shuffle=True), loader("val"))
    val = trainer.callback_metrics
    test = trainer.test(model, loader("test"), verbose=False)[0]
    return {
        "train_loss": float(val["train_loss"]),
        "val_accuracy": float(val["val_acc"]),
        "test_accuracy": float(test["test_acc"]),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "lightning": L.__version__},
    }


def run_keras(args: argparse.Namespace, data: dict[str, np.ndarray], clock: TrainClock) -> dict:
    """keras.Sequential of Dense layers, `model.fit` on the arrays; the torch backend
    (`keras-torch`) or TensorFlow's (`keras-tf`). The clock runs from each epoch's start to its
    validation's start (Keras runs validation as an evaluate inside the epoch)."""
    backend = "tensorflow" if args.peer == "keras-tf" else "torch"
    os.environ["KERAS_BACKEND"] = backend
    versions: dict[str, str] = {}
    if backend == "tensorflow":
        import tensorflow as tf

        # one op at a time on `threads` threads, as torch's eager ops run
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        versions["tensorflow"] = tf.__version__
        threads = args.threads
    else:
        import torch

        torch.set_num_threads(args.threads)
        versions["torch"] = torch.__version__
        threads = torch.get_num_threads()
    import keras

    versions["keras"] = keras.__version__
    keras.utils.set_random_seed(args.seed)
    # dnntrick's he_normal is untruncated; Keras' HeNormal is the truncated form
    he = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
    model = keras.Sequential(
        [
            keras.Input((784,)),
            *[keras.layers.Dense(w, activation="elu", kernel_initializer=he) for w in HIDDEN],
            keras.layers.Dense(10, kernel_initializer=he),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LR, epsilon=ADAM_EPS),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            clock.start()

        def on_test_begin(self, logs: Any = None) -> None:
            clock.stop()

    history = model.fit(
        data["x_train"],
        data["y_train"],
        batch_size=args.batch,
        epochs=args.epochs,
        validation_data=(data["x_val"], data["y_val"]),
        verbose=0,
        callbacks=[Clock()],
    )
    _, test_accuracy = model.evaluate(data["x_test"], data["y_test"], verbose=0)
    return {
        "train_loss": float(history.history["loss"][-1]),
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "test_accuracy": float(test_accuracy),
        "threads": threads,
        "versions": versions,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer", choices=PEERS, required=True)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--train-limit", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one peer; print and return its result."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    data = load_data(args.root, args.val_size, args.train_limit)
    data_seconds = time.perf_counter() - t0
    clock = TrainClock()
    run = {"lightning": run_lightning, "keras-torch": run_keras, "keras-tf": run_keras}
    result = run.get(args.peer, run_torch)(args, data, clock)
    n = len(data["x_train"]) * args.epochs
    result.update(
        peer=args.peer,
        batch_size=args.batch,
        epochs=args.epochs,
        seed=args.seed,
        train_samples=n,
        train_seconds=clock.seconds,
        epoch_train_seconds=clock.epochs,
        epoch_train_cpu_seconds=clock.cpu_epochs,
        samples_per_second=n / max(clock.seconds, 1e-9),
        data_seconds=data_seconds,
    )
    print(MARKER + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()  # and the interpreter's usual exit, as a user's script has
