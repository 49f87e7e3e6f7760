"""`dnntrick transfer`: train a spec starting from the layers of a trained model."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dnntrick.cli.common import Overrides, RunOptions, SpecArg, run_options
from dnntrick.cli.train import run_training

FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Source: a run directory, a .safetensors file, or runs/NAME for the newest run of "
        "NAME. Wins over the spec's transfer.from.",
        show_default=False,
    ),
]


@run_options
def transfer(
    spec: SpecArg, overrides: Overrides = None, source: FromOpt = None, *, options: RunOptions
) -> None:
    """Train SPEC reusing (and maybe freezing) layers of a trained model: its `transfer:`
    section, with --from for the source. Takes every option `train` takes."""
    from dnntrick.errors import UsageError
    from dnntrick.spec.config import load_spec

    overrides = list(overrides or [])
    if source is not None:
        overrides.append(f"transfer.from={json.dumps(source)}")  # a JSON string is YAML
    resolved = load_spec(spec, overrides)  # no torch yet: a spec without a source fails fast
    if resolved.transfer is None or resolved.transfer.source is None:
        raise UsageError(
            f"{spec}: nothing to transfer from; give --from RUN_DIR or set transfer.from"
        )
    run_training(spec, overrides, options)


def register(app: typer.Typer) -> None:
    app.command()(transfer)
