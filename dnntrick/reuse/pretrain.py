"""Unsupervised pretraining (the book's §6): autoencoders trained on the training images
without their labels, then the classifier fine-tunes from them on the (few) labelled images.

The encoder IS the classifier's hidden blocks, trained in place, so fine-tuning starts from the
pretrained weights; decoders are thrown away. Two ways:
- greedy: one hidden layer at a time. Layer k learns to reconstruct its own input — the pixels
  for hidden1, the (fixed) codes of the layers below for the others — through a linear decoder.
- stack: every hidden layer at once, with a mirrored decoder back to the pixels.
Reconstruction loss: mean squared error per input feature. Pixels in [0, 1] are reconstructed
through a sigmoid; standardized pixels and hidden codes through a plain linear layer.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnntrick.data.datasets import Splits, load_splits
from dnntrick.errors import DivergedError
from dnntrick.spec.schema import PretrainSpec, Spec
from dnntrick.training.build import Prepared
from dnntrick.training.model import eval_mode
from dnntrick.training.report import Reporter
from dnntrick.training.step import StepParts, Sums, train_step
from dnntrick.tricks.activations import build_activation
from dnntrick.tricks.optimizers import build_optimizer

EVAL_BATCH = 10_000


def unlabelled_images(spec: Spec, data: Splits) -> torch.Tensor:
    """The training split's images [N, 784], data.train_limit NOT applied (that limits the
    labels), standardized with the same statistics as the labelled images."""
    assert spec.pretrain is not None
    limit = spec.data.train_limit
    if limit is None:
        x = data.x_train
    else:
        raw = spec.data.model_copy(update={"train_limit": None, "standardize": False})
        x = load_splits(raw, data.x_train.device).x_train
        if spec.data.standardize:  # the labelled images' statistics, as load_splits recorded them
            assert data.pixel_mean is not None and data.pixel_std is not None
            x = (x - data.pixel_mean) / data.pixel_std
    return x[: spec.pretrain.images] if spec.pretrain.images else x


@torch.inference_mode()
def reconstruction_loss(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor) -> float:
    """Mean squared error per feature of decoder(encoder(x)) against x, in eval mode."""
    total = torch.zeros((), device=x.device)
    with eval_mode(encoder, decoder):
        for start in range(0, len(x), EVAL_BATCH):
            xb = x[start : start + EVAL_BATCH]
            total += F.mse_loss(decoder(encoder(xb)), xb, reduction="sum")
    return total.item() / x.numel()


def train_autoencoder(
    names: list[str],
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    spec: PretrainSpec,
    generator: torch.Generator,
    reporter: Reporter,
) -> dict[str, Any]:
    """Train encoder+decoder to reconstruct x [N, F]; the losses before, per epoch and after."""
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = build_optimizer(spec.optimizer, params, x.device.type)
    before = reconstruction_loss(encoder, decoder, x)
    n, bs = len(x), spec.batch_size
    epoch_losses = []
    encoder.train()
    decoder.train()
    # the training step itself, with the reconstruction loss: outputs against the inputs
    parts = StepParts(nn.Sequential(encoder, decoder), optimizer, loss=F.mse_loss)
    sums = Sums(x.device, count_correct=False)  # on the device: read once per epoch
    for epoch in range(1, spec.epochs + 1):
        order = torch.randperm(n, generator=generator).to(x.device)
        sums.loss_sum.zero_()
        for start in range(0, n, bs):
            xb = x[order[start : start + bs]]
            train_step(parts, xb, xb, sums)
        epoch_losses.append(sums.loss_sum.item() / n)
        if not math.isfinite(epoch_losses[-1]):
            raise DivergedError(
                f"pretrain {'-'.join(names)}: the reconstruction loss became "
                f"{epoch_losses[-1]} in epoch {epoch}; lower pretrain.optimizer.lr"
            )
        reporter.message(
            f"pretrain {'+'.join(names):<16} epoch {epoch:>3}/{spec.epochs}  "
            f"reconstruction loss {epoch_losses[-1]:.5f}"
        )
    after = reconstruction_loss(encoder, decoder, x)
    return {"layers": names, "loss_before": before, "epoch_losses": epoch_losses, "loss": after}


@torch.inference_mode()
def _forward_eval(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """block(x) in eval mode (batch norm statistics untouched), by evaluation batches."""
    with eval_mode(block):
        out = torch.cat([block(x[s : s + EVAL_BATCH]) for s in range(0, len(x), EVAL_BATCH)])
    return out.clone()  # clone: an ordinary tensor again, usable by autograd


def pretrain_model(
    model: nn.Module, x: torch.Tensor, spec: Spec, generator: torch.Generator, reporter: Reporter
) -> list[dict[str, Any]]:
    """Pretrain every block of `model` but the output layer on x (no labels), in place."""
    p = spec.pretrain
    assert p is not None and isinstance(model, nn.Sequential)
    blocks = list(model.named_children())[:-1]
    # pixels in [0, 1] come back through a sigmoid; standardized ones are unbounded
    pixels: type[nn.Module] = nn.Identity if spec.data.standardize else nn.Sigmoid
    device = x.device

    def act(width: int) -> nn.Module:
        a = spec.model.activation
        return build_activation(a.name, a.args, width)

    if p.mode == "stack":
        widths, h = [x.shape[1]], x[:2]
        for _, block in blocks:
            h = _forward_eval(block, h)
            widths.append(h.shape[1])
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1, 0, -1):  # mirror: last code → … → pixels
            layers += [nn.Linear(widths[i], widths[i - 1])]
            layers += [act(widths[i - 1]) if i > 1 else pixels()]
        decoder = nn.Sequential(*layers).to(device)
        encoder = nn.Sequential(OrderedDict(blocks))
        names = [n for n, b in blocks if any(True for _ in b.parameters())]
        return [train_autoencoder(names, encoder, decoder, x, p, generator, reporter)]

    history, inputs = [], x
    for name, block in blocks:
        if any(True for _ in block.parameters()):
            out = _forward_eval(block, inputs[:2]).shape[1]
            decoder = nn.Sequential(
                nn.Linear(out, inputs.shape[1]), pixels() if inputs is x else nn.Identity()
            ).to(device)
            history.append(
                train_autoencoder([name], block, decoder, inputs, p, generator, reporter)
            )
        if name != blocks[-1][0]:
            inputs = _forward_eval(block, inputs)  # fixed codes for the next layer
    return history


def prepare_pretrained(spec: Spec, model: nn.Module, data: Splits, reporter: Reporter) -> Prepared:
    """The runner's hook: pretrain the hidden layers in place; fine-tuning starts from them."""
    assert spec.pretrain is not None
    t0 = time.perf_counter()
    x = unlabelled_images(spec, data)
    generator = torch.Generator().manual_seed(spec.seed)  # pretraining order: its own stream
    reporter.message(
        f"pretrain ({spec.pretrain.mode}) on {len(x):,} unlabelled images; "
        f"fine-tuning on {len(data.x_train):,} labelled ones"
    )
    history = pretrain_model(model, x, spec, generator, reporter)
    summary = {
        "pretrain": {
            "mode": spec.pretrain.mode,
            "unlabelled_images": len(x),
            "labelled_images": len(data.x_train),
            "seconds": time.perf_counter() - t0,
            "layers": history,
        }
    }
    return Prepared(model, data, summary)
