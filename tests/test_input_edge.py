"""The input edge: hostile or absurd input is exit 2 and one line naming the bad thing, never a
traceback, a hang or a silent acceptance. One test per class of input, with its exact message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides, write_spec


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path, "name: edge\ntrain: {epochs: 1}\n")


def refused(cli, *args: str) -> str:
    """The one-line message of a refused command (exit 2, no traceback), within seconds (a
    train's first call in a process imports torch)."""
    start = time.perf_counter()
    code, _, err = cli(*args)
    assert time.perf_counter() - start < (5 if args[0] == "check" else 60), "too slow to refuse"
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---- resource bombs in the YAML itself ----


LAUGHS = "name: x\nmodel:\n  hidden: [&a [1,1,1,1,1,1,1,1,1]" + "".join(
    f", &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            LAUGHS + "]\n",
            "line 3, column 167: more than 20,000 values (aliases counted once per use); "
            "a spec holds a few dozen",
        ),
        (
            "name: x\nmodel: {hidden: " + "[" * 100_000 + "]" * 100_000 + "}\n",
            "line 2, column 47: nested more than 32 levels deep; a spec needs about 4",
        ),
        (
            "name: x\n" + "".join(" " * i + f"k{i}:\n" for i in range(100)),
            "line 33, column 32: nested more than 32 levels deep; a spec needs about 4",
        ),
        (
            "name: x\nmodel: &m {hidden: [*m]}\n",
            "line 2, column 21: alias *m refers to a value that contains it; "
            "a spec cannot be recursive",
        ),
        (
            "name: x\n? [a, b]\n: 1\n",
            "line 2, column 3: a key must be a plain name, not a list or mapping",
        ),
        (
            "name: !!binary aGVsbG8=\n",
            "line 1, column 7: tag 'tag:yaml.org,2002:binary' is not allowed: a spec holds plain "
            "strings, numbers, booleans, lists and mappings",
        ),
        (
            "name: x\nmodel: {hidden: !!set {1, 2}}\n",
            "line 2, column 17: tag 'tag:yaml.org,2002:set' is not allowed: a spec holds plain "
            "strings, numbers, booleans, lists and mappings",
        ),
        (
            "name: x\x00\n",
            "character 8: special characters are not allowed (code 0); a spec is plain text",
        ),
        (
            "seed: " + "9" * 5000 + "\n",
            "a value cannot be read (Exceeds the limit (4300 digits) for integer string "
            "conversion); use a smaller number",
        ),
        (
            "name: x\n#" + "x" * 300_000 + "\n",
            "the file is larger than 256 KiB; a spec is a few kilobytes",
        ),
    ],
    ids=[
        "laughs",
        "nested-flow",
        "nested-block",
        "recursive",
        "list-key",
        "binary",
        "set",
        "nul",
        "digits",
        "huge-file",
    ],
)
def test_yaml_bombs_are_refused_while_parsing(cli, tmp_path: Path, text: str, message: str):
    path = write_spec(tmp_path, text)
    assert refused(cli, "check", str(path)) == f"error: {path}: {message}"


def test_a_device_file_is_not_read_forever(cli):
    assert refused(cli, "check", "/dev/zero") == (
        "error: /dev/zero: is not a regular file; give the path of a spec .yaml file"
    )


def test_a_bare_date_is_a_string(cli, tmp_path: Path):
    code, out, _ = cli("check", str(write_spec(tmp_path, "name: 2024-01-31\n")))
    assert code == 0 and "name: '2024-01-31'" in out


def test_an_override_cannot_nest_endlessly(cli, spec: Path):
    assert refused(cli, "check", str(spec), "a" + ".a" * 40 + "=1") == (
        "error: override 'a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.'…: "
        "nested more than 32 keys deep"
    )


# ---- numbers at the extremes, in the spec model ----


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=4294967296", "seed: 4294967296 is too large (at most 4294967295)"),
        ("seed=true", "seed: expected a number, not true"),
        ("train.epochs=false", "train.epochs: expected a number, not false"),
        ("model.hidden=[300, true]", "model.hidden: expected a number, not true"),
        (
            "train.optimizer.lr=.inf",
            "train.optimizer.lr: input should be a finite number (got inf)",
        ),
        ("train.l2=.nan", "train.l2: input should be a finite number (got nan)"),
        (
            "model.activation={name: elu, alpha: .inf}",
            "model.activation.alpha: input should be a finite number (got inf)",
        ),
        (
            "train.optimizer={name: momentum, momentum: 1.5}",
            "train.optimizer.momentum: input should be less than 1 (got 1.5)",
        ),
        (
            "train.optimizer={name: nesterov, momentum: 0}",
            "train.optimizer: nesterov needs a momentum above 0 (e.g. 0.9); or use sgd",
        ),
        (
            "train.optimizer={name: adam, beta2: 1.0}",
            "train.optimizer.beta2: input should be less than 1 (got 1.0)",
        ),
        (
            "model.activation={name: rrelu, lower: 0.5, upper: 0.1}",
            "model.activation: rrelu's lower slope bound 0.5 is above its upper bound 0.1; swap "
            "them (default lower 1/8, upper 1/3)",
        ),
        (
            "device=cuda:01",
            "device: unknown device 'cuda:01'; did you mean 'cuda'? "
            "(choices: auto, cpu, cuda, cuda:N)",
        ),
        (
            "device=cpu:3",
            "device: unknown device 'cpu:3'; did you mean 'cpu'? "
            "(choices: auto, cpu, cuda, cuda:N)",
        ),
        (
            "train.early_stopping={patience: 2}",
            "train.early_stopping: watches val_loss, but data.val_size is 0; hold out validation "
            "images (e.g. data.val_size: 5000) or remove early_stopping",
        ),
        (
            "train.schedule={name: performance, min_lr: 0.5}",
            "train.schedule.min_lr: 0.5 is not below the lr (0.01), so a plateau would not lower "
            "the lr; set min_lr below train.optimizer.lr",
        ),
        (
            'name="../../etc"',
            "name: must be letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (got '../../etc')",
        ),
        ('transfer={from: "a\\0b"}', "transfer.from: contains a NUL character"),
        (
            "train.mc_dropout={samples: 1000000000}",
            "train.mc_dropout.samples: input should be less than or equal to 10000 "
            "(got 1000000000)",
        ),
        (
            "transfer={from: x, reuse: '" + "(" * 1000 + "'}",
            "transfer.reuse: a regular expression nested too deep to compile",
        ),
        (
            "model.hidden=[" + ", ".join(["1"] * 1001) + "]",
            "model.hidden: list should have at most 1000 items after validation, not 1001 "
            "(got [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, "
            "1, 1…)",
        ),
    ],
)
def test_numbers_and_names_out_of_range_are_refused(cli, spec: Path, override: str, message: str):
    extra = ["data.val_size=0"] if "early_stopping" in override else []
    assert refused(cli, "check", str(spec), override, *extra) == f"error: {spec}: {message}"


# ---- memory, time and learning rate, before anything is allocated ----


def test_a_model_that_cannot_fit_in_ram_is_refused_by_check(cli, spec: Path, monkeypatch):
    monkeypatch.setattr("dnntrick.spec.limits.available_ram", lambda: 16 * 2**30)
    # on a GPU the model is still built in RAM first (device=cuda: the same on every machine)
    assert refused(cli, "check", str(spec), "model.hidden=[1000000000]", "device=cuda") == (
        "error: the model's 795,000,000,010 parameters (2,961.6 GiB) and the data (209.4 MiB) "
        "are built in RAM first, which has 16.0 GiB available; use fewer or narrower layers "
        "(model.hidden)"
    )


def test_a_batch_that_cannot_fit_is_refused_with_the_estimate(
    cli, spec: Path, tiny_root: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr("dnntrick.spec.limits.available_ram", lambda: 2**30)
    args = [*tiny_overrides(tiny_root), "model.hidden=[20000, 20000]", "device=cpu"]
    message = refused(cli, "train", str(spec), *args, "--out", str(tmp_path / "runs"))
    assert message == (
        "error: the run needs about 3.2 GiB on cpu (parameters 1.5 GiB, gradients 1.5 GiB, a "
        "batch's activations 19.7 MiB, an evaluation batch 114.4 MiB, data 2.4 MiB) but RAM has "
        "1.0 GiB available; use fewer or narrower layers (model.hidden), a smaller "
        "train.batch_size or train.eval_batch_size, or fewer images (data.train_limit)"
    )
    assert not (tmp_path / "runs").exists()


def test_a_run_of_years_is_refused_and_one_of_days_warned(cli, spec: Path):
    assert refused(cli, "check", str(spec), "train.epochs=1000000000", "device=cuda") == (
        "error: train.epochs: 1,000,000,000 epochs of 55,000 images with 266,610 parameters "
        "would take about 3.7 years on cuda (a rough estimate); lower train.epochs or the "
        "model's size"
    )
    code, _, err = cli("check", str(spec), "train.epochs=100000", "device=cpu")
    assert code == 0
    assert (
        "# warning: 100,000 epochs of 55,000 images with 266,610 parameters would take about "
        "5.5 days on cpu (a rough estimate)" in err
    )


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            "{name: exponential, decay_rate: 1e30, period: 1}",
            "train.schedule: exponential's lr overflows at step 11 (epoch 1 of 1); it must stay "
            "a positive finite number over the whole run: change the schedule's parameters or "
            "lower train.epochs",
        ),
        (
            "{name: exponential, decay_rate: 1e-300, period: 1}",
            "train.schedule: exponential's lr underflows (0) at step 2 (epoch 1 of 1); it must "
            "stay a positive finite number over the whole run: change the schedule's parameters "
            "or lower train.epochs",
        ),
        (
            "{name: power, power: 1e300, period: 1e-300}",
            "train.schedule: power's lr overflows at step 1 (epoch 1 of 1); it must stay a "
            "positive finite number over the whole run: change the schedule's parameters or "
            "lower train.epochs",
        ),
        (
            "{name: performance, factor: 1e-200, patience: 1}",
            "train.schedule: performance may cut the lr 5 times (every 1 epochs of 5), and after "
            "2 cuts by 1e-200 it underflows to 0; set min_lr (e.g. 1e-6) or a larger factor",
        ),
    ],
    ids=["overflow", "underflow", "power", "performance"],
)
def test_a_schedule_whose_lr_leaves_the_floats_is_refused(
    cli, spec: Path, schedule: str, message: str
):
    args = (
        [f"train.schedule={schedule}", "train.epochs=5"]
        if "performance" in schedule
        else [f"train.schedule={schedule}"]
    )
    assert refused(cli, "check", str(spec), *args) == f"error: {message}"


def test_the_schedule_is_checked_on_the_real_step_count(
    cli, spec: Path, tiny_root: Path, tmp_path: Path
):
    """The tiny data set has 500 training images: 16 steps of 32 per epoch, 16,000 in 1000."""
    args = [
        *tiny_overrides(tiny_root, epochs=1000),
        "train.schedule={name: exponential, period: 1}",
    ]
    message = refused(cli, "train", str(spec), *args, "--out", str(tmp_path / "runs"))
    assert message == (
        "error: train.schedule: exponential's lr underflows (1e-308) at step 306 (epoch 20 of "
        "1,000); it must stay a positive finite number over the whole run: change the "
        "schedule's parameters or lower train.epochs"
    )
    assert not (tmp_path / "runs").exists()


def test_a_shift_beyond_the_image_is_refused(cli, spec: Path, tiny_root: Path, tmp_path: Path):
    args = [*tiny_overrides(tiny_root), "data.augment={shift: 28}"]
    assert refused(cli, "train", str(spec), *args, "--out", str(tmp_path / "runs")) == (
        "error: data.augment.shift: 28 pixels moves a 28×28 image entirely out of view; use at "
        "most 27 (a few pixels, e.g. 2)"
    )


# ---- tampered weight files (the fuzz test covers many more) ----


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch

    from dnntrick.spec.schema import ModelSpec
    from dnntrick.training.model import build_model

    torch.manual_seed(0)
    return build_model(ModelSpec(hidden=[8]), 784, 10).state_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("int", "tensor hidden1.bias is int64, expected float32"),
        ("bool", "tensor hidden1.bias is bool, expected float32"),
        ("float64", "tensor hidden1.bias is float64, expected float32"),
        (
            "name",
            "tensor 'hidden1' is not named layer.param (e.g. hidden1.weight; layers are "
            "inputs, hidden1…hiddenN, outputs)",
        ),
        ("nan", "tensor hidden1.bias holds NaN or infinite values"),
    ],
)
def test_a_tampered_transfer_source_is_refused(
    cli, spec: Path, tiny_root: Path, tmp_path: Path, weights: dict, change: str, message: str
):
    import torch
    from safetensors.torch import save_file

    state = dict(weights)
    if change == "name":
        state["hidden1"] = state.pop("hidden1.bias")
    elif change == "nan":
        state["hidden1.bias"] = torch.full_like(state["hidden1.bias"], float("nan"))
    else:
        dtype = {"int": torch.int64, "bool": torch.bool, "float64": torch.float64}[change]
        state["hidden1.bias"] = state["hidden1.bias"].to(dtype)
    source = tmp_path / "src.safetensors"
    save_file(state, source)
    args = [*tiny_overrides(tiny_root), "model.hidden=[8]", "--from", str(source)]
    assert refused(cli, "transfer", str(spec), *args, "--out", str(tmp_path / "runs")) == (
        f"error: transfer.from: {source}: {message}; give the model.safetensors of a dnntrick run"
    )
    assert not (tmp_path / "runs").exists()


def test_extra_and_missing_tensors_name_the_layer(
    cli, spec: Path, tiny_root: Path, tmp_path: Path, weights: dict
):
    from safetensors.torch import save_file

    state = dict(weights)
    del state["hidden1.bias"]
    state["hidden1.scale"] = state["hidden1.weight"][0].clone()
    source = tmp_path / "src.safetensors"
    save_file(state, source)
    args = [*tiny_overrides(tiny_root), "model.hidden=[8]", "--from", str(source)]
    assert refused(cli, "transfer", str(spec), *args, "--out", str(tmp_path / "runs")) == (
        "error: transfer.reuse: 1 reused layer(s) do not fit the new model (source shape vs new "
        "shape): hidden1 (bias absent vs [8], scale [784] vs absent). Change model.hidden to "
        "match the source or reuse fewer layers (new model's layers: hidden1, outputs)"
    )


def test_a_run_without_a_validation_split_trains(cli, spec: Path, tiny_root: Path, tmp_path: Path):
    """data.val_size 0 is legal when nothing watches the validation split (it used to crash
    reshaping the empty split)."""
    args = [f"data.root={tiny_root}", "data.val_size=0", "train.epochs=1", "-q"]
    code, out, err = cli("train", str(spec), *args, "--out", str(tmp_path / "runs"))
    assert code == 0, err
    assert out.startswith("edge: test_accuracy=")


def test_gpu_memory_is_checked_against_the_device(monkeypatch):
    """On CUDA the estimate meets torch.cuda.mem_get_info (faked here: no GPU needed)."""
    import torch

    from dnntrick.errors import UsageError
    from dnntrick.spec.limits import Sizes, check_start
    from dnntrick.spec.schema import Spec

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 80 * 2**30))
    monkeypatch.setattr("dnntrick.spec.limits.available_ram", lambda: 64 * 2**30)
    spec = Spec.model_validate({"name": "gpu", "model": {"hidden": [20000, 20000]}})
    with pytest.raises(UsageError) as info:
        check_start(spec, Sizes(55_000, 5000, 10_000, 784, 10), "cuda:0")
    assert str(info.value) == (
        "the run needs about 5.6 GiB on cuda:0 (parameters 1.5 GiB, gradients 1.5 GiB, a "
        "batch's activations 19.7 MiB, an evaluation batch 2.2 GiB, data 209.9 MiB) but cuda:0 "
        "has 1.0 GiB available; use fewer or narrower layers (model.hidden), a smaller "
        "train.batch_size or train.eval_batch_size, or fewer images (data.train_limit)"
    )


def test_a_path_longer_than_the_file_system_allows(cli, tmp_path: Path):
    long = str(tmp_path / ("a" * 300) / "spec.yaml")
    assert refused(cli, "check", long) == (
        f"error: {long[:80]}…: cannot look it up (File name too long); check the path"
    )
    assert refused(cli, "train", "--resume", str(tmp_path / ("a" * 300))) == (
        "error: --resume: cannot look the folder up (File name too long)"
    )


def test_a_compare_of_a_billion_runs_is_refused_at_once(cli, spec: Path, tmp_path: Path):
    assert refused(cli, "compare", str(spec), "--seeds", "1000000000", "--out", str(tmp_path)) == (
        "error: compare: 1 spec(s) × 1000000000 seeds is 1,000,000,000 runs, more than 10,000; "
        "use fewer --seeds or --vary values"
    )


def test_check_knows_the_built_in_data_sets_size(cli, spec: Path):
    assert refused(cli, "check", str(spec), "data.val_size=60000") == (
        "error: data.val_size: 60000 leaves no training images (the training set has 60,000); "
        "use a smaller value"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--end", "inf"],
            "--start 1e-05 and --end inf: need 0 < start < end, both finite normal numbers "
            "(e.g. 1e-5 and 10)",
        ),
        (["--steps", "1000000000"], "--steps 1000000000: at most 100,000 (a few hundred is usual)"),
    ],
)
def test_lr_find_range_and_steps_are_bounded(cli, spec: Path, tmp_path: Path, args, message):
    assert refused(cli, "lr-find", str(spec), *args, "--out", str(tmp_path)) == f"error: {message}"


@pytest.mark.parametrize("value", ["[]", "{a: 1}", "[[1]]"])
def test_a_name_that_is_not_a_string_is_a_type_error_not_a_crash(cli, spec: Path, value: str):
    """Found by the property test: the init's alias lookup hashed a list (TypeError, exit 1)."""
    assert refused(cli, "check", str(spec), f"model.init.name={value}").endswith(
        "model.init.name: input should be a valid string (got "
        + repr(__import__("yaml").safe_load(value))
        + ")"
    )


@pytest.mark.parametrize(
    ("overrides", "batch"), [(["train.batch_size=1"], 1), (["train.batch_size=499"], 499)]
)
def test_batch_norm_with_a_batch_of_one_is_refused_before_training(
    cli, tmp_path: Path, tiny_root: Path, overrides: list[str], batch: int
):
    """A batch of 1 crashed batch norm mid-run (ValueError, exit 1); 500 images in batches of
    499 leave a last batch of 1."""
    path = write_spec(tmp_path, "name: bn\nmodel: {hidden: [16], norm: {name: batch}}\n")
    args = [*tiny_overrides(tiny_root), *overrides, "--out", str(tmp_path / "runs")]
    assert refused(cli, "train", str(path), *args) == (
        f"error: model.norm: batch norm needs at least 2 images per training batch, but "
        f"train.batch_size {batch} with 500 training images leaves a batch of 1; pick another "
        "train.batch_size (or data.train_limit)"
    )
    assert not (tmp_path / "runs").exists()
