"""`dnntrick compare` end to end on the tiny data set: seeds and pairing, the files it writes,
mixing run directories with specs, failing variants, exit codes and usage errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import REPO, tiny_overrides, write_spec

SPEC = """\
name: tiny
seed: 5
model: {hidden: [16], activation: relu}
train: {epochs: 1, batch_size: 50, optimizer: {name: sgd, lr: 0.05}}
"""


def compare(
    cli, tmp_path: Path, tiny_root: Path, *args: str, epochs: int = 1
) -> tuple[int, str, str]:
    overrides = tiny_overrides(tiny_root, epochs)  # --jobs 1: in process, no worker start-up
    return cli("compare", *args, *overrides, "--jobs", "1", "--out", str(tmp_path / "runs"))


def comparison(tmp_path: Path) -> tuple[Path, dict]:
    (folder,) = (tmp_path / "runs").glob("compare-*")
    return folder, json.loads((folder / "comparison.json").read_text())


@pytest.mark.integration
def test_seeds_differ_and_the_same_seed_means_the_same_data_order(
    cli, tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch
):
    orders: list[torch.Tensor] = []  # every data order drawn, in run order
    randperm = torch.randperm

    def recording(*args, **kwargs):
        orders.append(randperm(*args, **kwargs))
        return orders[-1]

    monkeypatch.setattr(torch, "randperm", recording)
    spec = write_spec(tmp_path, SPEC)
    code, _, err = compare(
        cli, tmp_path, tiny_root, str(spec), "--vary", "model.activation=relu,tanh",
        "--seeds", "2", "--jobs", "1",
    )  # fmt: skip
    assert code == 0, err
    _, doc = comparison(tmp_path)
    relu, tanh = doc["variants"]
    assert [r["seed"] for r in relu["runs"]] == [r["seed"] for r in tanh["runs"]] == [5, 6]
    # runs went relu/5, relu/6, tanh/5, tanh/6, one epoch each: one data order per run
    assert len(orders) == 4
    assert torch.equal(orders[0], orders[2]) and torch.equal(orders[1], orders[3])  # paired
    assert not torch.equal(orders[0], orders[1])  # seeds differ
    expected = torch.randperm(500, generator=torch.Generator().manual_seed(5))
    assert torch.equal(orders[0], expected)  # the order is the seed's own generator's
    # the seeds really change the result, and the runs recorded their seeds
    accuracies = [r["test_accuracy"] for r in relu["runs"]]
    assert accuracies[0] != accuracies[1]
    for run in relu["runs"] + tanh["runs"]:
        summary = json.loads((Path(run["run_dir"]) / "summary.json").read_text())
        assert summary["seed"] == run["seed"]
        assert summary["test_accuracy"] == run["test_accuracy"]
    d = tanh["stats"]["difference"]
    diffs = [
        t["test_accuracy"] - r["test_accuracy"]
        for t, r in zip(tanh["runs"], relu["runs"], strict=True)
    ]
    assert d["pairs"] == 2 and d["test_accuracy_mean"] == pytest.approx(sum(diffs) / 2)


@pytest.mark.integration
def test_outputs_table_json_csv_and_png(cli, tmp_path: Path, tiny_root: Path):
    spec = write_spec(tmp_path, SPEC)
    png, table = tmp_path / "cmp.png", tmp_path / "all.csv"
    code, out, err = compare(
        cli, tmp_path, tiny_root, str(spec), "--vary", "train.optimizer.lr=0.01,0.1",
        "--seeds", "2", "--target", "0.3", "--plot", str(png), "--csv", str(table), "--json",
        epochs=2,
    )  # fmt: skip
    assert code == 0, err
    folder, doc = comparison(tmp_path)
    assert json.loads(out) == doc  # --json: the document on stdout, the table on stderr
    assert "lr=0.1" in err and "test acc %" in err and "baseline" in err
    assert [v["label"] for v in doc["variants"]] == ["lr=0.01", "lr=0.1"]
    assert doc["seeds"] == [5, 6] and doc["target"] == 0.3 and doc["baseline"] == "lr=0.01"
    low, high = doc["variants"]
    assert low["differs"] == {} and high["differs"] == {"train.optimizer.lr": 0.1}
    accs = [r["test_accuracy"] for r in high["runs"]]
    stats = high["stats"]
    assert stats["n"] == 2 and stats["test_accuracy_mean"] == pytest.approx(sum(accs) / 2)
    assert stats["test_accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    assert stats["difference"]["verdict"] in ("better", "worse", "within noise")
    assert all(r["epochs_run"] == 2 for r in high["runs"])
    # the runs are grouped under the comparison directory, one normal run directory each
    run_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(run_dirs) == 4 and all((p / "summary.json").exists() for p in run_dirs)
    assert {Path(r["run_dir"]) for v in doc["variants"] for r in v["runs"]} == set(run_dirs)
    # CSV: one line per run, same numbers as the JSON, also copied to --csv
    rows = list(csv.DictReader(io.StringIO((folder / "comparison.csv").read_text())))
    assert table.read_text() == (folder / "comparison.csv").read_text()
    assert [(r["variant"], r["seed"], r["status"]) for r in rows] == [
        ("lr=0.01", "5", "ok"), ("lr=0.01", "6", "ok"), ("lr=0.1", "5", "ok"), ("lr=0.1", "6", "ok")
    ]  # fmt: skip
    assert float(rows[2]["test_accuracy"]) == high["runs"][0]["test_accuracy"]
    assert rows[0]["epochs_to_target"] in ("1", "2", "")
    # the PNG: two panels at 110 dpi of a 12 x 4.8 inch figure
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1320, 528)
    assert png.stat().st_size > 20_000


@pytest.mark.integration
def test_mixing_run_directories_and_specs(cli, tmp_path: Path, tiny_root: Path):
    spec = write_spec(tmp_path, SPEC)
    first = tmp_path / "first"
    code, _, err = cli(
        "compare", str(spec), *tiny_overrides(tiny_root), "model.activation=tanh",
        "--seeds", "2", "--jobs", "1", "--out", str(first),
    )  # fmt: skip
    assert code == 0, err
    (old,) = first.glob("compare-*")
    code, out, err = compare(cli, tmp_path, tiny_root, str(old), str(spec), "--seeds", "2")
    assert code == 0, err
    folder, doc = comparison(tmp_path)
    read, ran = doc["variants"]
    assert read["label"] == "tiny" and read["source"] == str(old)  # read as it was: baseline
    assert all(Path(r["run_dir"]).parent == old for r in read["runs"])  # not run again
    assert [r["seed"] for r in read["runs"]] == [5, 6]
    assert ran["label"] == "tiny #2" and all(
        Path(r["run_dir"]).parent == folder for r in ran["runs"]
    )
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 2  # only the spec's two seeds ran
    assert ran["differs"] == {"model.activation.name": "relu"}
    assert ran["stats"]["difference"]["pairs"] == 2  # same seeds: paired with the old runs
    assert "tiny #2" in out and "model.activation=relu" in out


@pytest.mark.integration
def test_failing_variants_are_reported_and_do_not_stop_the_others(
    cli, tmp_path: Path, tiny_root: Path
):
    def spec(name: str, data: str = "fashion-mnist", lr: str = "0.05", epochs: str = "epochs"):
        root = tiny_root if data == "fashion-mnist" else "null"  # kmnist: searched, not found
        text = SPEC.replace(
            "name: tiny", f"name: {name}\ndata: {{dataset: {data}, root: {root}, val_size: 100}}"
        )
        path = write_spec(tmp_path, text.replace("0.05", lr).replace("epochs", epochs), name)
        return str(path)

    args = [
        spec("tiny"),
        spec("typo", epochs="epocs"),
        spec("huge_lr", lr="1.0e+30"),  # the loss overflows to NaN
        spec("no_data", data="kmnist"),  # not installed: fails inside the worker, at start-up
    ]
    code, out, err = cli(
        "compare", *args, "--seeds", "2", "--jobs", "2", "--out", str(tmp_path / "runs")
    )
    assert code == 1, err  # a run failed (not only bad specs)
    _, doc = comparison(tmp_path)
    status = {v["label"]: v["status"] for v in doc["variants"]}
    assert status == {
        "tiny": "ok",
        "typo": "bad spec",
        "huge_lr": "diverged 2/2",
        "no_data": "error 2/2",
    }
    tiny = doc["variants"][0]
    assert tiny["stats"]["n"] == 2 and tiny["stats"]["test_accuracy_mean"] > 0.2
    assert "train.epocs: unknown key; did you mean 'epochs'?" in doc["variants"][1]["error"]
    assert "error: typo: " in err and "error: huge_lr seed 5: diverged: " in err
    assert "error: no_data seed 6: error: data set 'kmnist' not found" in err
    for line in ("tiny", "typo", "bad spec", "huge_lr", "diverged 2/2", "error 2/2"):
        assert line in out
    assert "Traceback" not in err


def test_worker_errors_are_rows_and_only_bad_input_exits_2(cli, tmp_path: Path, tiny_root: Path):
    good = write_spec(tmp_path, SPEC, "good.yaml")
    typo = write_spec(tmp_path, SPEC.replace("epochs", "epocs"), "typo.yaml")
    code, _, err = compare(cli, tmp_path, tiny_root, str(good), str(typo), "--seeds", "1")
    assert code == 2, err  # every failure was a bad spec
    _, doc = comparison(tmp_path)
    assert [v["status"] for v in doc["variants"]] == ["ok", "bad spec"]
    assert doc["variants"][0]["runs"][0]["test_accuracy"] > 0.1
    # a start-up failure inside the run (no data there) is an error row, exit 2 (bad data)
    code, _, err = cli(
        "compare",
        str(good),
        "data.dataset=kmnist",
        "data.root=null",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 2 and "error: tiny seed 5: error: data set 'kmnist' not found" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give at least one SPEC file or RUN_DIR"),
        (["SPEC", "--plot", "x.svg"], "--plot x.svg: the file name must end in .png"),
        (["SPEC", "--plot", "nowhere/x.png"], "folder nowhere does not exist"),
        (["SPEC", "--target", "88"], "--target 88: give an accuracy between 0 and 1"),
        (
            ["SPEC", "--baseline", "tiyn"],
            "--baseline 'tiyn' names no variant; did you mean 'tiny'?",
        ),
        (["SPEC", "--vary", "model.activation"], "is not KEY=V1,V2,..."),
        (["RUNS", "train.epochs=3"], "override 'train.epochs=3' applies to SPEC files"),
        (["SPEC", "--seeds", "0"], "Invalid value for '--seeds'"),
    ],
)
def test_usage_errors_exit_2_before_anything_runs(
    cli, tmp_path: Path, tiny_root: Path, args: list[str], message: str
):
    spec = write_spec(tmp_path, SPEC)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "spec.yaml").write_text(SPEC)
    args = [{"SPEC": str(spec), "RUNS": str(tmp_path / "old")}.get(a, a) for a in args]
    code, _, err = cli("compare", *args, "--out", str(tmp_path / "runs"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_compare_help_does_not_import_torch():
    probe = (
        "import sys; sys.argv = ['dnntrick', 'compare', '--help']\n"
        "from dnntrick.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert "NO-TORCH" in done.stderr and "--vary" in done.stdout


@pytest.mark.slow
def test_compare_on_fashion_mnist(cli, tmp_path: Path, fashion_root: Path):
    code, out, err = cli(
        "compare", "experiments/elu.yaml", "experiments/selu.yaml", f"data.root={fashion_root}",
        "train.epochs=1", "data.train_limit=5000", "--seeds", "2", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    (folder,) = tmp_path.glob("compare-*")
    doc = json.loads((folder / "comparison.json").read_text())
    for variant in doc["variants"]:
        assert variant["stats"]["n"] == 2 and variant["stats"]["test_accuracy_mean"] > 0.6
    assert doc["variants"][1]["differs"]["model.activation.name"] == "selu"
    assert "data.standardize=true" in out
