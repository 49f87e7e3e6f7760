"""Spec loading: strict YAML, overrides, and one clear message per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnntrick.errors import SpecError, UsageError
from dnntrick.spec.config import apply_overrides, dump_spec, load_spec, parse_yaml
from tests.conftest import write_spec


def problems(tmp_path: Path, text: str, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, text), overrides)
    return info.value.problems


def test_name_defaults_to_file_stem(tmp_path: Path):
    spec = load_spec(write_spec(tmp_path, "seed: 1\n", "my-exp.yaml"))
    assert spec.name == "my-exp"
    assert spec.seed == 1


def test_scientific_notation_is_a_float():
    assert parse_yaml("lr: 1e-3\nb: 2E+2\nc: 7", "x") == {"lr": 0.001, "b": 200.0, "c": 7}


def test_unknown_key_suggests_the_right_one(tmp_path: Path):
    found = problems(tmp_path, "trian:\n  epochs: 3\nmodel:\n  hiden: [10]\n")
    assert "trian: unknown key; did you mean 'train'?" in found
    assert "model.hiden: unknown key; did you mean 'hidden'?" in found


def test_all_errors_are_reported_at_once(tmp_path: Path):
    found = problems(
        tmp_path,
        "train:\n  epochs: many\n  batch_size: -5\n"
        "model:\n  hidden: [100, -3]\n  activation: selux\n",
    )
    assert len(found) == 4
    assert any(
        p.startswith("train.epochs: input should be a valid integer") and "'many'" in p
        for p in found
    )
    assert "train.batch_size: input should be greater than 0 (got -5)" in found
    assert "model.hidden.1: input should be greater than 0 (got -3)" in found
    assert any(
        p.startswith("model.activation: unknown activation 'selux'; did you mean 'selu'?")
        for p in found
    )


def test_activation_arguments_are_checked(tmp_path: Path):
    found = problems(tmp_path, "model:\n  activation: {name: relu, alpha: 0.1}\n")
    assert found == [
        "model.activation: activation 'relu' does not take alpha (it takes: no arguments)"
    ]


def test_optimizer_arguments_are_checked(tmp_path: Path):
    found = problems(tmp_path, "train:\n  optimizer: {name: sgd, lr: 0.1, momentum: 0.9}\n")
    assert found == [
        "train.optimizer: optimizer 'sgd' does not take momentum (it takes: weight_decay)"
    ]


def test_duplicate_key_is_an_error(tmp_path: Path):
    found = problems(tmp_path, "seed: 1\nseed: 2\n")
    assert found == ["line 2, column 1: duplicate key 'seed'"]


def test_python_tags_are_refused(tmp_path: Path):
    sentinel = tmp_path / "pwned"
    found = problems(tmp_path, f'name: !!python/object/apply:os.system ["touch {sentinel}"]\n')
    assert "is not allowed" in found[0]
    assert not sentinel.exists()


def test_empty_and_missing_files(tmp_path: Path):
    assert "empty" in problems(tmp_path, "")[0]
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")


def test_overrides_are_dotted_and_parsed_as_yaml(tmp_path: Path):
    path = write_spec(tmp_path, "model:\n  activation: leaky_relu\n")
    spec = load_spec(
        path,
        [
            "train.epochs=5",
            "model.activation.alpha=0.2",
            "train.optimizer.lr=1e-3",
            "model.hidden=[20, 10]",
        ],
    )
    assert spec.train.epochs == 5
    assert spec.model.activation.name == "leaky_relu" and spec.model.activation.alpha == 0.2
    assert spec.train.optimizer.lr == 0.001
    assert spec.model.hidden == [20, 10]


def test_override_errors(tmp_path: Path):
    with pytest.raises(UsageError, match="not KEY=VALUE"):
        apply_overrides({}, ["epochs5"])
    found = problems(tmp_path, "seed: 1\n", ["train.epoch=5"])
    assert found == ["train.epoch: unknown key; did you mean 'epochs'?"]


def test_dump_round_trips(tmp_path: Path):
    spec = load_spec(write_spec(tmp_path, "model:\n  activation: {name: elu, alpha: 0.5}\n"))
    again = load_spec(write_spec(tmp_path, dump_spec(spec), "again.yaml"))
    assert again == spec


def test_aliases_and_init_arguments(tmp_path: Path):
    spec = load_spec(
        write_spec(tmp_path, "model:\n  init: {name: kaiming_normal, mode: fan_avg}\n")
    )
    assert spec.model.init.name == "he_normal" and spec.model.init.mode == "fan_avg"
    assert (
        "std applies to init 'normal' only"
        in problems(tmp_path, "model:\n  init: {name: he_normal, std: 2}\n")[0]
    )


def test_bad_name_is_refused(tmp_path: Path):
    found = problems(tmp_path, "name: ../../etc\n")
    assert found[0].startswith("name: must be letters, digits")
