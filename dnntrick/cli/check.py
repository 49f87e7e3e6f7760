"""`dnntrick check`: validate a spec and print it resolved, without importing torch."""

from __future__ import annotations

import typer

from dnntrick.cli.common import Overrides, SpecArg


def check(spec: SpecArg, overrides: Overrides = None) -> None:
    """Validate SPEC (with overrides) and print the resolved spec. Imports no torch."""
    from dnntrick.spec.config import dump_spec, load_spec
    from dnntrick.spec.limits import check_spec

    resolved = load_spec(spec, overrides or [])
    warnings = check_spec(resolved)  # memory, time and lr with the data set's nominal sizes
    typer.echo(dump_spec(resolved), nl=False)
    for line in warnings:
        typer.echo(f"# {line}", err=True)
    typer.echo(f"# {spec}: valid", err=True)


def register(app: typer.Typer) -> None:
    app.command()(check)
