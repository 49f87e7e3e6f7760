"""`dnntrick pretrain`: autoencoder pretraining without labels, then fine-tuning on the labels."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from dnntrick.cli.common import Overrides, RunOptions, SpecArg, run_options
from dnntrick.cli.train import run_training

ModeOpt = Annotated[
    Literal["greedy", "stack"] | None,
    typer.Option(
        "--mode",
        help="greedy: one hidden layer at a time; stack: all at once. Wins over pretrain.mode.",
        show_default=False,
    ),
]


@run_options
def pretrain(
    spec: SpecArg, overrides: Overrides = None, mode: ModeOpt = None, *, options: RunOptions
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
    run_training(spec, overrides, options)


def register(app: typer.Typer) -> None:
    app.command()(pretrain)
