"""Arguments shared by the commands that take a spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SpecArg = Annotated[
    Path, typer.Argument(help="The experiment spec (.yaml).", metavar="SPEC", show_default=False)
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="KEY=VALUE",
        help="Dotted overrides KEY=VALUE, values parsed as YAML "
        "(e.g. train.epochs=5 model.activation=elu).",
        show_default=False,
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder that receives the run directories.")]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="Override the spec's device (auto, cpu, cuda, cuda:N)."),
]
PrintConfigOpt = Annotated[
    bool, typer.Option("--print-config", help="Print the resolved spec and exit.")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Summary JSON on stdout; progress on stderr.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or epoch table; one result line.")
]
