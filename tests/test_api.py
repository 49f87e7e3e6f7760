"""The Python API (dnntrick/api.py): the same runs as the CLI, run objects, reopening a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dnntrick
from dnntrick.data.datasets import load_arrays
from dnntrick.errors import SpecError, UsageError
from tests.conftest import REPO, tiny_overrides, write_spec

SPEC = """\
name: api
seed: 7
model: {hidden: [32, 16], activation: elu}
train: {epochs: 2, batch_size: 50, optimizer: {name: adam, lr: 0.003}}
"""


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    return write_spec(tmp_path, SPEC)


def test_import_dnntrick_does_not_import_torch():
    probe = "import sys, dnntrick; print('torch' in sys.modules, callable(dnntrick.train))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.split() == ["False", "True"]


def test_train_gives_the_clis_run_bitwise(cli, tmp_path: Path, spec_file: Path, tiny_root: Path):
    overrides = tiny_overrides(tiny_root, 2)
    code, _, err = cli("train", str(spec_file), *overrides, "--out", str(tmp_path / "cli"), "-q")
    assert code == 0, err
    [cli_dir] = (tmp_path / "cli").iterdir()
    run = dnntrick.train(spec_file, overrides=overrides, out=tmp_path / "api", quiet=True)
    assert (run.run_dir / "model.safetensors").read_bytes() == (
        cli_dir / "model.safetensors"
    ).read_bytes()
    assert rows(run.run_dir) == rows(cli_dir)
    cli_summary = json.loads((cli_dir / "summary.json").read_text())
    assert run.summary["test_accuracy"] == cli_summary["test_accuracy"]
    assert [r["epoch"] for r in run.history] == [1, 2]


def test_dict_spec_object_and_dotted_keywords_are_the_same_run(
    tmp_path: Path, spec_file: Path, tiny_root: Path
):
    import yaml

    overrides = tiny_overrides(tiny_root, 1)
    as_dict = yaml.safe_load(SPEC)
    a = dnntrick.train(as_dict, overrides=overrides, out=tmp_path / "a", quiet=True)
    spec = dnntrick.Spec.model_validate(as_dict)
    b = dnntrick.train(
        spec,
        out=tmp_path / "b",
        quiet=True,
        **{"data.root": str(tiny_root), "data.val_size": 100, "train.epochs": 1},
    )
    assert a.summary["test_accuracy"] == b.summary["test_accuracy"]
    assert rows(a.run_dir) == rows(b.run_dir)
    assert "train.epochs=1" in b.summary["overrides"]


def test_run_objects_predict_evaluate_and_reopen(tmp_path: Path, spec_file: Path, tiny_root: Path):
    run = dnntrick.train(
        spec_file,
        [*tiny_overrides(tiny_root, 2), "data.standardize=true"],
        out=tmp_path,
        quiet=True,
    )
    raw = load_arrays("fashion-mnist", str(tiny_root))
    x, y = raw["test_images"], raw["test_labels"]  # uint8 pixels, as the data set stores them
    scores = run.evaluate(x, y)
    # the preprocessing (÷255, the training split's standardization) is the run's own
    assert scores["accuracy"] == pytest.approx(run.summary["test_accuracy"], abs=1e-12)
    assert scores["loss"] == pytest.approx(run.summary["test_loss"], rel=1e-5)
    predicted = run.predict(x)
    assert predicted.shape == (len(x),) and (predicted == y).mean() == scores["accuracy"]
    again = dnntrick.load_run(run.run_dir)
    assert np.array_equal(again.predict(x), predicted)
    assert again.summary == run.summary and again.history == run.history
    assert np.allclose(again.predict_proba(x[:5]).sum(axis=1), 1.0)
    frame = run.to_pandas()
    assert list(frame.index) == [1, 2] and "val_accuracy" in frame.columns
    figure = run.plot()
    assert len(figure.axes) == 2 and figure.axes[0].get_title() == "loss"
    with pytest.raises(UsageError, match="784"):
        run.predict(np.zeros((2, 10)))


def test_bad_api_inputs_are_the_products_errors(tmp_path: Path, spec_file: Path):
    with pytest.raises(SpecError, match=r"train\.epochs"):
        dnntrick.train(spec_file, **{"train.epochs": -1}, out=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="give a path, a dict or a Spec"):
        dnntrick.train(42, out=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="not a finished run directory"):
        dnntrick.load_run(tmp_path)
    assert not list(tmp_path.glob("api-*"))  # nothing was created


@pytest.mark.integration
def test_compare_and_diagnose_return_their_numbers(
    tmp_path: Path, spec_file: Path, tiny_root: Path
):
    result = dnntrick.compare(
        spec_file,
        seeds=2,
        vary=["model.activation=elu,relu"],
        overrides=tiny_overrides(tiny_root, 1),
        jobs=1,
        out=tmp_path,
        quiet=True,
    )
    table = result.table
    assert len(table) == 2 and [row["baseline"] for row in table] == [True, False]
    assert all(row["stats"]["n"] == 2 for row in table)
    assert 0 < table[1]["stats"]["test_accuracy_mean"] <= 1
    assert len(result.runs) == 4 and all(r["status"] == "ok" for r in result.runs)
    assert (result.folder / "comparison.json").is_file()
    assert len(result.plot().axes) == 2
    diagnosed = dnntrick.diagnose(
        REPO / "experiments" / "vanishing.yaml", [f"data.root={tiny_root}", "data.val_size=100"]
    )
    assert diagnosed.verdict == "vanishing"
    assert [layer["layer"] for layer in diagnosed.layers][-1] == "outputs"


def test_own_arrays_in_memory_train_as_the_same_npz_does(cli, tmp_path: Path, spec_file: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)  # a learnable rule
    xt = rng.normal(size=(100, 12)).astype(np.float32)
    yt = (xt[:, 0] + xt[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "own.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    common = ["data.val_size=50", "train.epochs=3"]
    code, _, err = cli(
        "train",
        str(spec_file),
        *common,
        "data.dataset=arrays",
        f"data.path={tmp_path}/own.npz",
        "--out",
        str(tmp_path / "cli"),
        "-q",
    )
    assert code == 0, err
    [cli_dir] = (tmp_path / "cli").iterdir()
    run = dnntrick.train(spec_file, common, data=(x, y, xt, yt), out=tmp_path / "api", quiet=True)
    assert rows(run.run_dir) == rows(cli_dir)
    assert run.summary["test_accuracy"] > 0.8
    assert run.evaluate(xt, yt)["accuracy"] == run.summary["test_accuracy"]  # no ÷255 for floats
    with pytest.raises(dnntrick.errors.DataError, match="x_train and y_train"):
        dnntrick.train(spec_file, common, data={"x": x}, out=tmp_path / "bad", quiet=True)


def test_progress_in_a_log_file_is_plain_rows(tmp_path: Path, spec_file: Path, tiny_root: Path):
    log = tmp_path / "train.log"
    args = f"{str(spec_file)!r}, {tiny_overrides(tiny_root, 2)!r}, out={str(tmp_path)!r}"
    code = f"import dnntrick; dnntrick.train({args})"
    with log.open("w") as out:
        subprocess.run(
            [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, check=True
        )
    text = log.read_text()
    assert "\x1b[" not in text  # no escape codes, no progress bar redraws
    assert "test accuracy" in text and len([ln for ln in text.splitlines() if ln.strip()]) < 30
