"""`dnntrick data`: find or fetch the data sets."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Annotated

import typer

from dnntrick.errors import DataError

app = typer.Typer(
    help="Find or fetch data sets (MNIST, Fashion-MNIST, KMNIST).", no_args_is_help=True
)
DatasetArg = Annotated[str, typer.Argument(help="mnist, fashion-mnist or kmnist.")]
DEBIAN_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}


def _check_name(dataset: str) -> None:
    from dnntrick.data.catalog import DATASETS
    from dnntrick.errors import suggest

    if dataset not in DATASETS:
        raise DataError(
            f"unknown data set {dataset!r}{suggest(dataset, DATASETS)} "
            f"(choices: {', '.join(DATASETS)})"
        )


@app.command()
def where(dataset: DatasetArg = "fashion-mnist") -> None:
    """Print the folder the data set is read from (no download)."""
    from dnntrick.data.datasets import find_files

    _check_name(dataset)
    typer.echo(find_files(dataset, None, download=False)["train_images"].parent)


@app.command()
def fetch(dataset: DatasetArg = "fashion-mnist") -> None:
    """Make DATASET available: already there, torchvision's download, or Debian's package."""
    from dnntrick.data.datasets import _download, cache_dir, find_files

    _check_name(dataset)
    try:
        found = find_files(dataset, None, download=False)
        typer.echo(f"{dataset}: already available in {found['train_images'].parent}")
        return
    except DataError:
        pass
    typer.echo(f"{dataset}: downloading with torchvision into {cache_dir() / dataset} ...")
    if _download(dataset) is not None:
        folder = find_files(dataset, None, download=False)["train_images"].parent
        typer.echo(f"{dataset}: downloaded to {folder}")
        return
    package = DEBIAN_PACKAGES.get(dataset)
    if package is None or shutil.which("apt-get") is None:
        raise DataError(
            f"{dataset}: the download failed and there is no system package for it; "
            "put the four IDX files in a folder and set $DNNTRICK_DATA"
        )
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    typer.echo(
        f"{dataset}: the download failed (no network?); installing Debian's {package} "
        "with apt-get ..."
    )
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(
            [*sudo, *cmd],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"{' '.join([*sudo, *cmd])} failed ({last}); run it as root")
    folder = find_files(dataset, None, download=False)["train_images"].parent
    typer.echo(f"{dataset}: installed {package}; files in {folder}")
