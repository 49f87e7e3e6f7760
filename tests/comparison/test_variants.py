"""compare's model: inputs → variants (grid, names, shared seeds), what differs, exit codes,
the table's hidden columns and highlights, and the executor's plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnntrick.comparison.executor import plan_jobs
from dnntrick.comparison.report import BEST, results_table
from dnntrick.comparison.stats import paired_difference
from dnntrick.comparison.variants import (
    RunRecord,
    Stats,
    Variant,
    epochs_to,
    exit_code,
    expand_specs,
    parse_vary,
    pick_baseline,
    short_key,
    split_inputs,
    split_values,
    what_differs,
)
from dnntrick.errors import UsageError
from tests.conftest import write_spec

SPEC = "name: base\nseed: 7\nmodel: {hidden: [16], activation: relu}\ntrain: {epochs: 1}\n"


def test_split_inputs_and_values(tmp_path: Path):
    spec = write_spec(tmp_path, SPEC)
    paths, overrides = split_inputs([str(spec), "train.epochs=5", "model.hidden=[8,4]"])
    assert paths == [str(spec)] and overrides == ["train.epochs=5", "model.hidden=[8,4]"]
    assert split_values("relu,elu, selu") == ["relu", "elu", "selu"]
    assert split_values("[300,100],[50],{name: elu, alpha: 0.5}") == [
        "[300,100]",
        "[50]",
        "{name: elu, alpha: 0.5}",
    ]
    assert split_values("'a,b',c") == ["'a,b'", "c"]


@pytest.mark.parametrize(
    "bad", ["model.activation", "model.activation=", "=1,2", "a b=1", "x=1,,2"]
)
def test_bad_vary_is_a_usage_error(bad: str):
    with pytest.raises(UsageError, match="--vary"):
        parse_vary([bad])
    with pytest.raises(UsageError, match="twice"):
        parse_vary(["seed=1,2", "seed=3"])


def test_vary_grid_expands_and_names_variants_by_differing_keys(tmp_path: Path):
    spec = write_spec(tmp_path, SPEC)
    grid = parse_vary(
        ["model.activation=relu,elu,selu", "train.optimizer.lr=0.01,0.1", "train.batch_size=64"]
    )
    variants = expand_specs([str(spec)], ["train.epochs=2"], grid, seeds=2)
    assert [v.label for v in variants] == [
        f"activation={a} lr={lr}" for a in ("relu", "elu", "selu") for lr in ("0.01", "0.1")
    ]  # batch_size has one value: it is applied but names nothing
    for v in variants:
        assert sorted(v.specs) == [7, 8]  # the spec's seed and the next: shared by every variant
        spec7 = v.specs[7]
        assert spec7.train.epochs == 2 and spec7.train.batch_size == 64
        assert f"activation={spec7.model.activation.name}" in v.label
        assert f"lr={spec7.train.optimizer.lr:g}" in v.label
        assert v.specs[8].model_copy(update={"seed": 7}) == spec7  # seeds differ, nothing else
        assert spec7.name == v.label.replace("=", "-").replace(" ", "_")  # run-directory name
    assert len({v.specs[7].name for v in variants}) == 6


def test_several_specs_are_named_by_spec_and_share_the_first_seed(tmp_path: Path):
    a = write_spec(tmp_path, SPEC, "a.yaml")
    b = write_spec(tmp_path, SPEC.replace("name: base\nseed: 7", "seed: 99"), "b.yaml")
    variants = expand_specs([str(a), str(b)], [], parse_vary(["model.activation=relu,elu"]), 3)
    assert [v.label for v in variants] == [
        "base activation=relu",
        "base activation=elu",
        "b activation=relu",
        "b activation=elu",
    ]
    assert all(sorted(v.specs) == [7, 8, 9] for v in variants)  # b's own seed 99 yields: paired


def test_short_key():
    keys = ["model.activation.name", "train.optimizer.lr", "model.init.name"]
    assert [short_key(k, keys) for k in keys] == ["activation", "lr", "init"]
    assert short_key("a.lr", ["a.lr", "b.lr"]) == "a.lr"


def test_bad_spec_becomes_a_failed_variant_not_an_exception(tmp_path: Path):
    good = write_spec(tmp_path, SPEC, "good.yaml")
    typo = write_spec(tmp_path, SPEC.replace("train:", "trian:"), "typo.yaml")
    variants = expand_specs([str(good), str(typo), str(tmp_path / "missing.yaml")], [], [], 2)
    assert [v.status for v in variants] == ["ok", "bad spec", "bad spec"]
    assert "trian: unknown key; did you mean 'train'?" in (variants[1].error or "")
    assert "no such file" in (variants[2].error or "")
    assert variants[1].runs == [] and variants[0].runs[1].seed == 8
    assert exit_code(variants) == 2  # only bad input failed


def test_exit_code_is_1_when_a_run_failed():
    ok = Variant("ok", "a", runs=[RunRecord(1, "ok", {"test_accuracy": 0.9})])
    bad = Variant("bad", "b", error="x: unknown key", exit_code=2)
    diverged = Variant("div", "c", runs=[RunRecord(1, "diverged", exit_code=3)])
    assert exit_code([ok]) == 0
    assert exit_code([ok, bad]) == 2
    assert exit_code([ok, bad, diverged]) == 1
    assert diverged.status == "diverged 1/1" and diverged.failed


def test_what_differs_and_baseline(tmp_path: Path):
    spec = write_spec(tmp_path, SPEC)
    grid = parse_vary(["model.activation={name: leaky_relu, alpha: 0.2},selu"])
    leaky, selu = expand_specs([str(spec)], [], grid, 1)
    assert what_differs(selu, leaky) == {"model.activation.name": "selu"}  # alpha: not selu's
    assert what_differs(leaky, selu) == {
        "model.activation.name": "leaky_relu",
        "model.activation.alpha": 0.2,
    }
    assert what_differs(leaky, leaky) == {}
    assert pick_baseline([leaky, selu], None) is leaky
    assert pick_baseline([leaky, selu], "activation=selu") is selu
    with pytest.raises(UsageError, match="did you mean 'activation=selu'"):
        pick_baseline([leaky, selu], "activation=sleu")


def test_epochs_to_target():
    history = [{"epoch": e, "val_accuracy": a} for e, a in [(1, 0.7), (2, 0.86), (3, 0.9)]]
    assert epochs_to(history, 0.85) == 2 and epochs_to(history, 0.95) is None


def _stats(acc: float, parameters: int, seconds: float) -> Stats:
    return Stats(
        n=3,
        test_accuracy=(acc, 0.01),
        best_val_accuracy=acc,
        best_epoch=4.0,
        epochs_run=5.0,
        epochs_to_target=None,
        reached=0,
        train_seconds=seconds,
        samples_per_second=1000 / seconds,
        parameters=parameters,
        difference=paired_difference({1: acc, 2: acc + 0.01}, {1: 0.8, 2: 0.805}),
    )


def test_table_hides_same_for_all_columns_and_highlights_the_best():
    a, b, c = (Variant(n, n) for n in "abc")
    stats = [_stats(0.80, 100, 2.0), _stats(0.85, 100, 1.0), _stats(0.82, 100, 3.0)]
    stats[0].difference = None
    table, same = results_table([a, b, c], stats, a, None)
    headers = [col.header for col in table.columns]
    assert "parameters" not in headers and "parameters 100" in same
    assert "best epoch 4.0" in same and "epochs 5.0" in same and "status ok" in same
    assert {"variant", "test acc %", "verdict", "train s", "samples/s"} <= set(headers)
    cells = {col.header: list(col._cells) for col in table.columns}
    assert cells["test acc %"][1] == f"[{BEST}]85.00 ± 1.00[/]"  # highest accuracy
    assert cells["train s"][1] == f"[{BEST}]1.0[/]"  # shortest time
    assert cells["test acc %"][0] == "80.00 ± 1.00"
    assert cells["Δ pp [95% CI]"][0] == "baseline"
    stats[2].parameters = 200
    table, same = results_table([a, b, c], stats, a, None)
    assert "parameters" in [col.header for col in table.columns]


def test_plan_jobs():
    assert plan_jobs(9, cores=2, gpus=0) == (2, 1)  # CPU: one single-threaded run per core
    assert plan_jobs(9, cores=16, gpus=0) == (9, 1)  # never more workers than runs
    assert plan_jobs(1, cores=2, gpus=0) == (1, 2)  # one run alone gets every core
    assert plan_jobs(3, cores=16, gpus=0) == (3, 5)  # never more workers than runs
    assert plan_jobs(20, cores=16, gpus=1) == (4, 4)  # several runs share one GPU
    assert plan_jobs(20, cores=16, gpus=2) == (8, 2)
    assert plan_jobs(20, cores=4, gpus=0, jobs=8) == (8, 1)  # --jobs wins, threads ≥ 1


def test_a_tie_for_all_is_not_highlighted():
    a, b = Variant("a", "a"), Variant("b", "b")
    stats = [_stats(0.80, 100, 2.0), _stats(0.80, 100, 1.0)]
    table, _ = results_table([a, b], stats, a, None)
    cells = {col.header: list(col._cells) for col in table.columns}
    assert not any(BEST in cell for cell in cells["test acc %"])
    assert cells["train s"] == ["2.0", f"[{BEST}]1.0[/]"]


def test_curves_of_runs_of_different_lengths():
    from dnntrick.comparison.plots import curve

    short = [{"epoch": e, "val_accuracy": 0.5 + 0.1 * e} for e in (1, 2, 3)]  # stopped early
    long = [{"epoch": e, "val_accuracy": 0.6 + 0.1 * e} for e in (1, 2, 3, 4, 5)]
    epochs, mean, std = curve([short, long], "val_accuracy")
    assert epochs == [1, 2, 3, 4, 5]
    assert mean == pytest.approx([0.65, 0.75, 0.85, 1.0, 1.1])
    assert std[:3] == pytest.approx([0.0707107] * 3) and std[3:] == [0.0, 0.0]  # one run left
