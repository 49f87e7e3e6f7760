"""The search space: DIST parsing, and every bad input refused in one line, exit 2, before any
folder or run exists (tune and compare --tune)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnntrick.errors import UsageError
from dnntrick.tuning.search import Dimension, parse_search, spec_values, yaml_text
from tests.conftest import run_probe, write_spec

SPEC = """\
name: tiny
seed: 1
data: {dataset: fashion-mnist, val_size: 100}
model: {hidden: [16], activation: relu}
train: {epochs: 1, batch_size: 32, optimizer: {name: sgd, lr: 0.05}}
"""


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (
            "train.optimizer.lr=loguniform:1e-4:0.1",
            Dimension("train.optimizer.lr", "loguniform", 1e-4, 0.1),
        ),
        ("train.l2=uniform:0:0.01", Dimension("train.l2", "uniform", 0.0, 0.01)),
        ("train.batch_size=int:16:256", Dimension("train.batch_size", "int", 16, 256)),
        (
            "model.activation=choice:relu,elu",
            Dimension("model.activation", "choice", choices=("relu", "elu")),
        ),
        ("train.clip=choice:null,1.0", Dimension("train.clip", "choice", choices=(None, 1.0))),
    ],
)
def test_dist_parses(item: str, expected: Dimension):
    assert parse_search([item]) == [expected]


def test_values_read_back_as_yaml():
    """1e-05 must not become the string '1e-05' (YAML 1.1) in the trial's override."""
    assert yaml_text(1e-5) == "1.0e-05" and yaml_text("elu") == "elu" and yaml_text(None) == "null"


def test_the_spec_default_is_the_first_point_when_in_the_space():
    data = {"name": "t", "train": {"optimizer": {"name": "sgd", "lr": 0.05}}}
    inside, outside = (
        parse_search(["train.optimizer.lr=loguniform:1e-3:1"]),
        parse_search(["train.optimizer.lr=loguniform:0.1:1"]),
    )
    assert spec_values(data, inside) == {"train.optimizer.lr": 0.05}
    assert spec_values(data, outside) is None


BAD = [
    (["--search", "train.optimizer.lrr=uniform:0.01:0.1"], "lrr"),  # unknown key
    (["--search", "train.optimizer.lr=gauss:1:2"], "unknown distribution 'gauss'"),
    (["--search", "train.optimizer.lr=uniform:a:1"], "'a' is not a number"),
    (["--search", "train.optimizer.lr=uniform:0.1"], "uniform:LOW:HIGH"),
    (["--search", "train.optimizer.lr"], "KEY=DIST"),
    (["--search", "train.optimizer.lr=uniform:0.1:0.1"], "LOW 0.1 must be below HIGH 0.1"),
    (["--search", "train.optimizer.lr=uniform:0.5:0.1"], "must be below"),
    (["--search", "train.optimizer.lr=loguniform:0:0.1"], "LOW > 0"),
    (["--search", "train.optimizer.lr=int:1.5:3"], "not an integer"),
    (["--search", "model.activation=choice:relu,nope"], "refuses nope"),
    (["--search", "model.activation=choice:relu,"], "choice:A,B"),
    (["--search", "train.optimizer.lr=uniform:-1:0.1"], "refuses -1"),  # lr must be > 0
    (["--search", "train.optimizer.lr=uniform:0.1:1", "--trials", "0"], "--trials"),
    (["--search", "a.b=uniform:0:1", "--search", "a.b=uniform:0:2"], "given twice"),
    (["train.optimizer.lr=0.1", "--search", "train.optimizer.lr=uniform:0.01:1"], "both set"),
    ([], "--search"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_exit_2_and_no_folder(cli, tmp_path: Path, args, message: str):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "runs"
    code, _stdout, err = cli("tune", str(spec), *args, "--out", str(out))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "tune",
    [["--tune", "train.optimizer.lr=loguniform:-1:1"], ["--tune", "model.activation=choice:x"]],
)
def test_compare_tune_bad_input_exits_2_before_anything(cli, tmp_path: Path, tune: list[str]):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "runs"
    code, _, err = cli("compare", str(spec), *tune, "--trials", "2", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_trials_without_tune_is_refused(cli, tmp_path: Path):
    code, _, err = cli("compare", str(write_spec(tmp_path, SPEC)), "--trials", "3")
    assert code == 2 and "add --tune" in err


def test_parse_search_needs_an_item():
    with pytest.raises(UsageError, match="at least one"):
        parse_search([])


def test_tune_help_and_bad_input_import_neither_torch_nor_optuna(tmp_path: Path):
    """`dnntrick tune --help` stays fast; a bad --search is refused before torch or Optuna load."""
    spec = write_spec(tmp_path, SPEC)
    probe = (
        "import sys\nfrom dnntrick.cli import main\n"
        "for argv in (['tune', '--help'], ['tune', sys.argv[1], '--search', 'x=gauss:1:2']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print([m for m in ('torch', 'optuna') if m in sys.modules], file=sys.stderr)\n"
    )
    done = run_probe(probe, str(spec))
    assert "--search" in done.stdout and "unknown distribution" in done.stderr
    assert done.stderr.strip().endswith("[]"), done.stderr
