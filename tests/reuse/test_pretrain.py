"""Unsupervised pretraining on the tiny data set: the loss falls, the weights reach the
classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dnntrick import runner
from dnntrick.data.datasets import load_splits
from dnntrick.reuse.pretrain import pretrain_model, unlabelled_images
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.training.model import build_model
from dnntrick.training.report import Reporter
from tests.conftest import tiny_overrides, write_spec

SPEC = """\
name: pre
seed: 2
model: {hidden: [32, 16], activation: selu}
data: {train_limit: 50}
train: {epochs: 2, batch_size: 25, optimizer: {name: sgd, lr: 0.01}}
pretrain: {mode: greedy, epochs: 3, batch_size: 50, optimizer: {name: adam, lr: 0.003}}
"""


def spec_for(tmp_path: Path, tiny_root: Path, *extra: str):
    return load_spec(write_spec(tmp_path, SPEC), [*tiny_overrides(tiny_root, 2), *extra])


@pytest.mark.parametrize("mode", ["greedy", "stack"])
def test_pretraining_reduces_the_reconstruction_loss(tmp_path: Path, tiny_root: Path, mode: str):
    spec = spec_for(tmp_path, tiny_root, f"pretrain.mode={mode}")
    data = load_splits(spec.data)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, data.in_features, data.n_classes)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x = unlabelled_images(spec, data)
    history = pretrain_model(model, x, spec, torch.Generator().manual_seed(0), Reporter())
    expected = [["hidden1"], ["hidden2"]] if mode == "greedy" else [["hidden1", "hidden2"]]
    assert [h["layers"] for h in history] == expected
    for layer in history:
        assert layer["loss"] < 0.8 * layer["loss_before"], layer
        assert layer["epoch_losses"][-1] < layer["epoch_losses"][0]
    now = model.state_dict()
    assert not torch.equal(now["hidden1.weight"], start["hidden1.weight"])
    assert not torch.equal(now["hidden2.weight"], start["hidden2.weight"])
    assert torch.equal(now["outputs.weight"], start["outputs.weight"])  # not part of the encoder


def test_unlabelled_images_ignore_train_limit_and_share_its_statistics(
    tmp_path: Path, tiny_root: Path
):
    spec = spec_for(tmp_path, tiny_root, "data.standardize=true")
    data = load_splits(spec.data)
    x = unlabelled_images(spec, data)
    assert len(data.x_train) == 50 and len(x) == 500  # the tiny set's 600 - 100 validation
    torch.testing.assert_close(x[:50], data.x_train)  # standardized with the labelled statistics
    capped = spec_for(tmp_path, tiny_root, "pretrain.images=120")
    assert len(unlabelled_images(capped, load_splits(capped.data))) == 120


def test_pretrained_weights_reach_the_classifier(
    tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch
):
    starts: list[dict[str, torch.Tensor]] = []
    original = runner.fit

    def spy(model, *args, **kwargs):
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(runner, "fit", spy)
    spec = spec_for(tmp_path, tiny_root)
    result = run_spec(spec, out=tmp_path / "runs")
    scratch = spec.model_copy(update={"pretrain": None})
    run_spec(scratch, out=tmp_path / "runs")

    # the same pretraining by hand, from the same seed, gives what fine-tuning started from
    data = load_splits(spec.data)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, data.in_features, data.n_classes)
    x = unlabelled_images(spec, data)
    pretrain_model(model, x, spec, torch.Generator().manual_seed(spec.seed), Reporter())
    for key, value in model.state_dict().items():
        assert torch.equal(starts[0][key], value), key
        if key.startswith("hidden"):
            assert not torch.equal(starts[1][key], value), key  # scratch starts elsewhere
    summary = json.loads((result.run_dir / "summary.json").read_text())["pretrain"]
    assert summary["mode"] == "greedy"
    assert summary["unlabelled_images"] == 500 and summary["labelled_images"] == 50
    assert [layer["layers"] for layer in summary["layers"]] == [["hidden1"], ["hidden2"]]


def test_pretrain_command_adds_the_section_and_takes_mode(cli, tmp_path: Path, tiny_root: Path):
    plain = write_spec(tmp_path, SPEC.split("pretrain:")[0], "plain.yaml")
    code, out, err = cli(
        "pretrain",
        str(plain),
        "--mode",
        "stack",
        "--json",
        "--out",
        str(tmp_path / "runs"),
        *tiny_overrides(tiny_root, 1),
        "pretrain.epochs=1",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["pretrain"]["mode"] == "stack"
    assert summary["pretrain"]["layers"][0]["layers"] == ["hidden1", "hidden2"]
    code, out, err = cli(
        "pretrain", str(plain), "--quiet", "--out", str(tmp_path / "runs"),
        *tiny_overrides(tiny_root, 1),
    )  # fmt: skip
    assert code == 0, err
    run_dir = Path(out.split("run_dir=")[1].strip())
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["pretrain"]["mode"] == "greedy" and "pretrain={}" in saved["overrides"]
    code, _, err = cli("pretrain", str(plain), "--mode", "layerwise")
    assert code == 2 and "layerwise" in err
