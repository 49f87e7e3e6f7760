"""Arguments shared by the commands that take a spec, and the options of the commands that train
one (train, transfer, pretrain): defined once here, added to each by `@run_options`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

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
ThreadsOpt = Annotated[
    str | None,
    typer.Option(
        "--threads",
        metavar="N|auto",
        help="Override the spec's train.threads: N torch threads, or auto (one, unless "
        "OMP_NUM_THREADS says otherwise).",
        show_default=False,
    ),
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


@dataclass(frozen=True)
class RunOptions:
    """The options every training command takes, as one value."""

    out: OutOpt = Path("runs")
    device: DeviceOpt = None
    threads: ThreadsOpt = None
    print_config: PrintConfigOpt = False
    as_json: JsonOpt = False
    quiet: QuietOpt = False

    def overrides(self) -> list[str]:
        """The spec overrides that --device and --threads stand for (validated with the rest)."""
        return [
            f"{key}={value}"
            for key, value in (("device", self.device), ("train.threads", self.threads))
            if value is not None
        ]


def run_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command RunOptions' fields as its last options (what typer shows and parses) and
    call it with them gathered into one `options: RunOptions` argument."""
    hints = inspect.get_annotations(RunOptions, eval_str=True)
    shared = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
        )
        for f in fields(RunOptions)
    ]
    signature = inspect.signature(command, eval_str=True)
    own = [p for name, p in signature.parameters.items() if name != "options"]

    @functools.wraps(command)
    def with_options(*args: Any, **kwargs: Any) -> None:
        options = RunOptions(**{p.name: kwargs.pop(p.name, p.default) for p in shared})
        command(*args, options=options, **kwargs)

    with_options.__signature__ = signature.replace(parameters=own + shared)  # type: ignore[attr-defined]
    with_options.__annotations__ = {
        **{p.name: p.annotation for p in own + shared},
        "return": signature.return_annotation,
    }
    return with_options
