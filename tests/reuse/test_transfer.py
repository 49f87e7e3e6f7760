"""Transfer on the tiny data set: reuse, freeze, cache, unfreeze, and every refusal."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dnntrick import runner
from dnntrick.data.datasets import load_splits
from dnntrick.errors import UsageError
from dnntrick.reuse.transfer import cached_prefix, prepare_transfer, unfreeze
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.training import build as building
from dnntrick.training.loop import fit
from dnntrick.training.model import MLP, Dense, build_model
from dnntrick.training.report import Reporter
from tests.conftest import tiny_overrides, write_spec

SOURCE = """\
name: src
seed: 1
model: {hidden: [32, 16, 16, 16]}
train: {epochs: 2, batch_size: 50, optimizer: {name: adam, lr: 0.003}}
"""
TARGET = """\
name: tgt
seed: 5
model: {hidden: [32, 16, 16, 12]}
train: {epochs: 2, batch_size: 50, optimizer: {name: adam, lr: 0.003}}
transfer: {reuse: "hidden[123]", freeze: "hidden[12]"}
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, tiny_root: Path) -> Path:
    """The run directory of a trained 32-16-16-16 model."""
    folder = tmp_path_factory.mktemp("source")
    spec = load_spec(write_spec(folder, SOURCE), tiny_overrides(tiny_root, 2))
    return run_spec(spec, out=folder / "runs").run_dir


def target(tmp_path: Path, tiny_root: Path, source: Path, *extra: str, epochs: int = 2):
    overrides = [*tiny_overrides(tiny_root, epochs), f"transfer.from={source}", *extra]
    return load_spec(write_spec(tmp_path, TARGET), overrides)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


def test_reused_layers_take_the_source_weights_bitwise(
    tmp_path: Path, tiny_root: Path, source: Path
):
    spec = target(tmp_path, tiny_root, source)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, 784, 10)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_transfer(spec, model, load_splits(spec.data), Reporter())
    src, now = weights(source), model.state_dict()
    for key in ("hidden1.weight", "hidden1.bias", "hidden2.weight", "hidden3.weight"):
        assert torch.equal(now[key], src[key]), key
        assert not torch.equal(now[key], fresh[key]), key
    for key in ("hidden4.weight", "outputs.weight"):  # new layers keep their own init
        assert torch.equal(now[key], fresh[key])
    assert not model.hidden1.weight.requires_grad and model.hidden3.weight.requires_grad


def test_frozen_layers_bitwise_unchanged_while_the_others_train(
    tmp_path: Path, tiny_root: Path, source: Path, monkeypatch: pytest.MonkeyPatch
):
    given: list[torch.Tensor] = []
    build = building.build_optimizer

    def spy(spec, params, device_type, **kwargs):
        given.extend(params)
        return build(spec, params, device_type, **kwargs)

    monkeypatch.setattr(building, "build_optimizer", spy)
    spec = target(tmp_path, tiny_root, source, "train.optimizer.weight_decay=0.1")
    result = run_spec(spec, out=tmp_path / "runs")
    src, after = weights(source), weights(result.run_dir)
    for key in ("hidden1.weight", "hidden1.bias", "hidden2.weight", "hidden2.bias"):
        assert torch.equal(after[key], src[key]), f"frozen {key} changed"
    assert not torch.equal(after["hidden3.weight"], src["hidden3.weight"])  # reused, trainable
    model = result.model
    frozen = {id(p) for n in ("hidden1", "hidden2") for p in model.get_submodule(n).parameters()}
    assert given and not frozen & {id(p) for p in given}  # frozen ones are not in the optimizer
    assert len(given) == 6  # hidden3, hidden4, outputs: weight and bias each
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["transfer"]["frozen"] == ["hidden1", "hidden2"]
    assert summary["transfer"]["trainable_parameters"] == 16 * 16 + 16 + 16 * 12 + 12 + 130


def test_summary_records_the_source_and_a_hash_of_its_weights(
    tmp_path: Path, tiny_root: Path, source: Path
):
    result = run_spec(target(tmp_path, tiny_root, source, epochs=1), out=tmp_path / "runs")
    record = json.loads((result.run_dir / "summary.json").read_text())["transfer"]
    file = source / "model.safetensors"
    assert record["from"] == str(file)
    assert record["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert record["reused"] == ["hidden1", "hidden2", "hidden3"]


def test_runs_name_means_the_newest_run_of_that_name(tmp_path: Path, tiny_root: Path, source: Path):
    runs = source.parent
    newer = runs / "src-29991231-235959"  # a later timestamp than the real run
    newer.mkdir()
    try:
        (newer / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
        spec = target(tmp_path, tiny_root, runs / "src", epochs=1)
        result = run_spec(spec, out=tmp_path / "runs")
        assert result.summary["transfer"]["from"] == str(newer / "model.safetensors")
    finally:
        (newer / "model.safetensors").unlink()
        newer.rmdir()


def test_cached_and_uncached_runs_agree(
    tmp_path: Path, tiny_root: Path, source: Path, monkeypatch: pytest.MonkeyPatch
):
    widths: list[int] = []
    original = runner.fit

    def spy(model, optimizer, data, *args, **kwargs):
        widths.append(data.x_train.shape[1])
        return original(model, optimizer, data, *args, **kwargs)

    monkeypatch.setattr(runner, "fit", spy)
    plain = run_spec(target(tmp_path, tiny_root, source, epochs=3), out=tmp_path / "runs")
    spec = target(tmp_path, tiny_root, source, "transfer.cache_frozen=true", epochs=3)
    cached = run_spec(spec, out=tmp_path / "runs")
    assert widths == [784, 16]  # the cached run trains on hidden2's 16 outputs
    assert cached.summary["transfer"]["cached"] == ["hidden1", "hidden2"]
    for a, b in zip(plain.history, cached.history, strict=True):
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert plain.summary["test_accuracy"] == cached.summary["test_accuracy"]
    a, b = weights(plain.run_dir), weights(cached.run_dir)
    assert a.keys() == b.keys()  # the cached run still saves the whole model
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_caching_refused_with_unfreeze_after(cli, tmp_path: Path, tiny_root: Path, source: Path):
    spec = write_spec(tmp_path, TARGET)
    code, _, err = cli(
        "transfer",
        str(spec),
        "--from",
        str(source),
        "--out",
        str(tmp_path / "runs"),
        *tiny_overrides(tiny_root, 3),
        "transfer.cache_frozen=true",
        "transfer.unfreeze_after=1",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cache_frozen is refused with unfreeze_after" in err
    assert not (tmp_path / "runs").exists()


def test_caching_refused_with_augmentation(cli, tmp_path: Path, tiny_root: Path, source: Path):
    spec = write_spec(tmp_path, TARGET)
    code, _, err = cli(
        "transfer",
        str(spec),
        "--from",
        str(source),
        "--out",
        str(tmp_path / "runs"),
        *tiny_overrides(tiny_root, 3),
        "transfer.cache_frozen=true",
        "data.augment={shift: 2}",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "transfer.cache_frozen: refused with data.augment" in err
    assert not (tmp_path / "runs").exists()


def test_caching_refused_when_the_frozen_prefix_is_random(
    cli, tmp_path: Path, tiny_root: Path, source: Path
):
    spec = write_spec(tmp_path, TARGET)
    code, _, err = cli(
        "transfer",
        str(spec),
        "--from",
        str(source),
        "--out",
        str(tmp_path / "runs"),
        *tiny_overrides(tiny_root),
        "transfer.cache_frozen=true",
        "model.activation=rrelu",  # random slopes in training mode
    )
    assert code == 2 and "hidden1 has RReLU" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    dropout = MLP(
        OrderedDict(
            hidden1=Dense(4, 3, nn.Sequential(nn.ReLU(), nn.Dropout(0.5))),
            outputs=Dense(3, 2),
        )
    )
    with pytest.raises(UsageError, match="hidden1 has Dropout"):
        cached_prefix(dropout, ["hidden1"])


def test_caching_refused_when_a_trainable_layer_comes_first(
    tmp_path: Path, tiny_root: Path, source: Path
):
    spec = target(tmp_path, tiny_root, source, "transfer.freeze=hidden2", "transfer.cache_frozen=1")
    with pytest.raises(UsageError, match="hidden1 trains but comes before the frozen hidden2"):
        run_spec(spec, out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_mismatched_shapes_list_every_layer(cli, tmp_path: Path, tiny_root: Path, source: Path):
    spec = write_spec(tmp_path, TARGET)
    code, _, err = cli(
        "transfer",
        str(spec),
        "--from",
        str(source),
        "--out",
        str(tmp_path / "runs"),
        *tiny_overrides(tiny_root),
        "model.hidden=[30, 16, 16, 12]",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "2 reused layer(s) do not fit" in err
    assert "hidden1 (weight [32, 784] vs [30, 784], bias [32] vs [30])" in err
    assert "hidden2 (weight [16, 32] vs [16, 30])" in err
    assert not (tmp_path / "runs").exists()


def test_a_pattern_that_matches_nothing_names_the_source_layers(
    cli, tmp_path: Path, tiny_root: Path, source: Path
):
    spec = write_spec(tmp_path, TARGET)
    args = ["transfer", str(spec), "--from", str(source), *tiny_overrides(tiny_root)]
    code, _, err = cli(*args, "transfer.reuse=hidden[7-9]", "transfer.freeze=null")
    assert code == 2
    assert "transfer.reuse: 'hidden[7-9]' matches none of the source's" in err
    assert "(hidden1, hidden2, hidden3, hidden4, outputs)" in err
    code, _, err = cli(*args, "transfer.freeze=Hidden1")
    assert code == 2 and "transfer.freeze: 'Hidden1' matches none of the new model's" in err


def test_freeze_must_be_reused_and_something_must_train(
    tmp_path: Path, tiny_root: Path, source: Path
):
    spec = target(tmp_path, tiny_root, source, "transfer.freeze=hidden[1234]")
    with pytest.raises(UsageError, match="hidden4 would be frozen but is not reused"):
        run_spec(spec, out=tmp_path / "runs")
    everything = target(
        tmp_path, tiny_root, source, "model.hidden=[32, 16, 16, 16]", "transfer.reuse=.*"
    )
    everything = everything.model_copy(
        update={"transfer": everything.transfer.model_copy(update={"freeze": ".*"})}
    )
    with pytest.raises(UsageError, match="every layer is frozen"):
        run_spec(everything, out=tmp_path / "runs")


def test_unfreeze_after_trains_every_layer_at_the_scaled_lr(
    tmp_path: Path, tiny_root: Path, source: Path
):
    frozen_only = run_spec(target(tmp_path, tiny_root, source, epochs=1), out=tmp_path / "a")
    spec = target(
        tmp_path,
        tiny_root,
        source,
        "transfer.unfreeze_after=1",
        "transfer.unfreeze_lr_factor=0.5",
        epochs=3,
    )
    result = run_spec(spec, out=tmp_path / "b")
    # epoch 1 is the frozen run's epoch 1; afterwards the frozen layers moved too
    assert result.history[0]["train_loss"] == frozen_only.history[0]["train_loss"]
    assert [r["lr"] for r in result.history] == [0.003, 0.0015, 0.0015]
    src, after = weights(source), weights(result.run_dir)
    assert not torch.equal(after["hidden1.weight"], src["hidden1.weight"])
    assert not torch.equal(after["hidden2.bias"], src["hidden2.bias"])


def test_unfreeze_after_must_leave_epochs_to_train(tmp_path: Path, tiny_root: Path, source: Path):
    from dnntrick.errors import SpecError

    with pytest.raises(SpecError, match=r"transfer\.unfreeze_after: 2 epochs is not less than"):
        target(tmp_path, tiny_root, source, "transfer.unfreeze_after=2", epochs=2)


def _bn_mlp() -> MLP:
    """784-16-8-10 with batch norm after each hidden layer's linear part (hand-built)."""

    def block(n_in: int, n_out: int) -> Dense:
        return Dense(n_in, n_out, nn.Sequential(nn.BatchNorm1d(n_out), nn.ReLU()))

    return MLP(OrderedDict(hidden1=block(784, 16), hidden2=block(16, 8), outputs=Dense(8, 10)))


def test_frozen_batch_norm_stays_frozen(tmp_path: Path, tiny_root: Path):
    torch.manual_seed(0)
    trained = _bn_mlp()
    with torch.no_grad():  # a source whose running statistics are clearly not the defaults
        for m in trained.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(7)
    save_file(trained.state_dict(), tmp_path / "bn.safetensors")
    spec = load_spec(
        write_spec(tmp_path, "name: bn\ntrain: {epochs: 2, batch_size: 50}\n"),
        [
            *tiny_overrides(tiny_root, 2),
            f"transfer.from={tmp_path / 'bn.safetensors'}",
            "transfer.reuse=hidden[12]",
            "transfer.freeze=hidden1",
        ],
    )
    data = load_splits(spec.data)
    model = _bn_mlp()
    messages: list[str] = []

    class Capture(Reporter):
        def message(self, text: str) -> None:
            messages.append(text)

    prepare_transfer(spec, model, data, Capture())
    assert "BN frozen: running statistics, not updated" in messages[0]
    assert "BN trains: batch statistics" in messages[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.05)
    fit(model, optimizer, data, spec.train, torch.Generator().manual_seed(0), Reporter())
    after = model.state_dict()
    for key in before:
        if key.startswith("hidden1."):
            assert torch.equal(after[key], before[key]), f"frozen {key} changed"
    stats = "hidden2.act.0.running_mean"
    assert not torch.equal(after[stats], before[stats])  # the trainable BN kept learning
    assert after["hidden2.act.0.num_batches_tracked"] > before["hidden2.act.0.num_batches_tracked"]
    model.train()
    assert not model.hidden1.act[0].training and model.hidden2.act[0].training
    unfreeze(model, ["hidden1"])
    assert model.hidden1.act[0].training and model.hidden1.weight.requires_grad
    model.eval()
    model.train()
    assert model.hidden1.act[0].training  # follows the model again


BN_SOURCE = """\
name: bnsrc
seed: 1
model: {hidden: [32, 16], norm: {momentum: 0.5}}
train: {epochs: 2, batch_size: 50, optimizer: {name: adam, lr: 0.003}}
"""


def test_frozen_batch_norm_from_the_spec_stays_frozen(tmp_path: Path, tiny_root: Path):
    src = run_spec(
        load_spec(write_spec(tmp_path, BN_SOURCE, "src.yaml"), tiny_overrides(tiny_root, 2)),
        out=tmp_path / "src",
    )
    text = BN_SOURCE.replace("name: bnsrc", "name: bntgt").replace("seed: 1", "seed: 3")
    spec = load_spec(
        write_spec(tmp_path, text + "transfer: {reuse: hidden.*, freeze: hidden1}\n"),
        [*tiny_overrides(tiny_root, 2), f"transfer.from={src.run_dir}", "train.max_norm=1.0"],
    )
    result = run_spec(spec, out=tmp_path / "runs")
    before, after = weights(src.run_dir), weights(result.run_dir)
    frozen = [k for k in before if k.startswith("hidden1.")]
    assert "hidden1.norm.running_mean" in frozen and "hidden1.norm.num_batches_tracked" in frozen
    for key in frozen:  # statistics, BN scale/shift and weights (max-norm too leaves them)
        assert torch.equal(after[key], before[key]), f"frozen {key} changed"
    assert not torch.equal(after["hidden2.norm.running_mean"], before["hidden2.norm.running_mean"])
    assert not torch.equal(after["hidden2.norm.weight"], before["hidden2.norm.weight"])
    assert not result.model.hidden1.norm.training and result.model.hidden2.norm.training


def test_caching_refused_with_dropout_from_the_spec(
    cli, tmp_path: Path, tiny_root: Path, source: Path
):
    spec = write_spec(tmp_path, TARGET)
    code, _, err = cli(
        "transfer", str(spec), "--from", str(source), "--out", str(tmp_path / "runs"),
        *tiny_overrides(tiny_root), "transfer.cache_frozen=true",
        "model.dropout={rate: 0.2, input_rate: 0}",
    )  # fmt: skip
    assert code == 2 and "hidden1 has Dropout" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(
        "transfer", str(spec), "--from", str(source), "--out", str(tmp_path / "runs"),
        *tiny_overrides(tiny_root), "transfer.cache_frozen=true",
        "model.dropout={rate: 0, input_rate: 0.2}",
    )  # fmt: skip
    assert code == 2 and "inputs has Dropout" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.integration
def test_transfer_command_takes_train_options(cli, tmp_path: Path, tiny_root: Path, source: Path):
    text = TARGET + "  from: /no/such/run\n"
    text = text.replace('transfer: {reuse: "hidden[123]", freeze: "hidden[12]"}', "transfer:")
    text = text.replace("  from:", '  reuse: "hidden[123]"\n  from:')
    spec = write_spec(tmp_path, text)
    code, out, err = cli(
        "transfer",
        str(spec),
        "--from",  # wins over the spec's from
        str(source),
        "--out",
        str(tmp_path / "runs"),
        "--json",
        *tiny_overrides(tiny_root),
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["transfer"]["from"] == str(source / "model.safetensors")
    assert summary["transfer"]["frozen"] == []
    assert Path(summary["run_dir"]).parent == tmp_path / "runs"
    code, _, err = cli("transfer", str(write_spec(tmp_path, "name: x\n", "plain.yaml")))
    assert code == 2 and "nothing to transfer from; give --from" in err
