"""`dnntrick pretrain`: autoencoder pretraining without labels, then fine-tuning on the labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from dnntrick.cli.common import (
    DeviceOpt,
    JsonOpt,
    OutOpt,
    Overrides,
    PrintConfigOpt,
    QuietOpt,
    SpecArg,
)
from dnntrick.cli.train import train

ModeOpt = Annotated[
    Literal["greedy", "stack"] | None,
    typer.Option(
        "--mode",
        help="greedy: one hidden layer at a time; stack: all at once. Wins over pretrain.mode.",
        show_default=False,
    ),
]


def pretrain(
    spec: SpecArg,
    overrides: Overrides = None,
    mode: ModeOpt = None,
    out: OutOpt = Path("runs"),
    device: DeviceOpt = None,
    print_config: PrintConfigOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain SPEC's hidden layers as autoencoders on the training images (labels unused),
    then train the classifier from them. Uses the spec's `pretrain:` section (defaults if
    absent). Takes every option `train` takes."""
    from dnntrick.spec.config import load_spec

    overrides = list(overrides or [])
    if mode is not None:
        overrides.append(f"pretrain.mode={mode}")
    if load_spec(spec, overrides).pretrain is None:
        overrides.append("pretrain={}")  # the section's defaults
    train(spec, overrides, out, device, print_config, as_json, quiet)


def register(app: typer.Typer) -> None:
    app.command()(pretrain)
