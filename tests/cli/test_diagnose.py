"""`dnntrick diagnose` end to end (tiny data set): table, verdict, --json, --plot, errors."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dnntrick.diagnosis.plot import plot_gradient_norms, recorded_layers
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from tests.conftest import REPO, tiny_overrides, write_spec

VANISHING = str(REPO / "experiments" / "vanishing.yaml")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def on_tiny(root: Path) -> list[str]:
    return [f"data.root={root}", "data.val_size=100"]


def test_diagnose_prints_every_layer_and_the_verdict(cli, tiny_root: Path):
    code, out, err = cli("diagnose", VANISHING, *on_tiny(tiny_root))
    assert code == 0, err
    lines = out.splitlines()
    rows = [line.split()[0] for line in lines if line.strip().startswith(("hidden", "outputs"))]
    assert rows[:11] == [f"hidden{i}" for i in range(1, 11)] + ["outputs"]  # depth order
    assert "vanishing" in out and "cause:" in out and "remedy:" in out


@pytest.mark.integration
def test_diagnose_json_and_plot(cli, tiny_root: Path, tmp_path: Path):
    png = tmp_path / "v.png"
    code, out, err = cli(
        "diagnose", VANISHING, *on_tiny(tiny_root), "--json", "--plot", str(png),
        "--batch-size", "64",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["diagnosis"]["verdict"] == "vanishing" and report["batch_size"] == 64
    assert [s["layer"] for s in report["layers"]][-1] == "outputs"
    assert report["layers"][0]["ratio"] < 1e-10 < report["layers"][-2]["ratio"]
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000


@pytest.mark.integration
def test_diagnose_same_seed_same_numbers_different_seed_different(cli, tiny_root: Path):
    def grads(*extra: str) -> list[float]:
        code, out, err = cli("diagnose", VANISHING, *on_tiny(tiny_root), "--json", *extra)
        assert code == 0, err
        return [s["grad"] for s in json.loads(out)["layers"]]

    assert grads() == grads()
    assert grads() != grads("seed=7")


def test_diagnose_bad_input_is_one_line_exit_2(cli, tiny_root: Path, tmp_path: Path):
    code, _, err = cli("diagnose", VANISHING, "--plot", str(tmp_path / "no" / "x.png"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    code, _, err = cli("diagnose", VANISHING, "train.diagnostics.every=0")
    assert code == 2 and "train.diagnostics.every" in err
    code, _, err = cli("diagnose", VANISHING, "train.diagnostics.evry=3")
    assert code == 2 and "did you mean 'every'" in err


def test_gradient_norms_plot_from_run_directories(tmp_path: Path, tiny_root: Path):
    text = "name: g\nmodel: {hidden: [16, 16]}\ntrain: {batch_size: 50}\n"
    spec_path = write_spec(tmp_path, text)
    runs = []
    for extra in (["train.diagnostics={every: 4}"], []):
        spec = load_spec(spec_path, [*tiny_overrides(tiny_root), *extra])
        runs.append(run_spec(spec, out=tmp_path / "runs").run_dir)
    layers = recorded_layers(runs[0])
    assert layers is not None and [s.layer for s in layers] == ["hidden1", "hidden2", "outputs"]
    assert recorded_layers(runs[0], "first") != layers and recorded_layers(runs[1]) is None
    fig, ax = plt.subplots()
    missing = plot_gradient_norms(ax, [("on", [runs[0]]), ("off", [runs[1]])])
    assert missing == ["off"] and len(ax.lines) == 1
    assert list(ax.lines[0].get_ydata()) == pytest.approx([s.grad for s in layers])
    plt.close(fig)


@pytest.mark.integration
def test_compare_plot_gradients(cli, tiny_root: Path, tmp_path: Path):
    text = "name: g\nmodel: {hidden: [16, 16]}\ntrain: {batch_size: 50}\n"
    spec = write_spec(tmp_path, text)
    png = tmp_path / "grads.png"
    code, out, err = cli(
        "compare", str(spec), *on_tiny(tiny_root), "train.epochs=1",
        "train.diagnostics={every: 3}", "--seeds", "1", "--jobs", "1",
        "--out", str(tmp_path / "runs"), "--plot-gradients", str(png),
    )  # fmt: skip
    assert code == 0, err
    assert png.read_bytes()[:8] == PNG_MAGIC and "no recorded diagnostics" not in out + err
    code, _, err = cli("compare", str(spec), "--plot-gradients", str(tmp_path / "x.jpg"))
    assert code == 2 and "--plot-gradients" in err and "give a .png" in err
