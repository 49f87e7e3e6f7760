"""compare --tune: each variant tuned on seeds disjoint from the comparison's, then compared at
its best; comparison.json and the table show each variant's tuned values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnntrick.spec.config import load_spec
from tests.conftest import write_spec
from tests.tuning.test_tune import SPEC, csv_rows

pytestmark = pytest.mark.integration


def test_compare_tune_tunes_each_variant_on_disjoint_seeds(cli, tmp_path: Path, tiny_root: Path):
    relu = write_spec(tmp_path, SPEC.format(root=tiny_root, epochs=1), "relu.yaml")
    elu = write_spec(tmp_path, SPEC.format(root=tiny_root, epochs=1), "elu.yaml")
    code, out, err = cli(
        "compare", str(relu), str(elu), "model.activation=elu", "--seeds", "2", "--jobs", "1",
        "--tune", "train.optimizer.lr=loguniform:1e-3:1", "--trials", "2",
        "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert code == 0, err
    folder = next((tmp_path / "runs").glob("compare-*"))
    document = json.loads((folder / "comparison.json").read_text())
    compared = set(document["seeds"])
    assert compared == {1, 2} and set(document["tuning"]["seeds"]).isdisjoint(compared)
    for variant in document["variants"]:
        tuned = variant["tuned"]["train.optimizer.lr"]
        study = Path(document["tuning"]["studies"][variant["label"]])
        rows = csv_rows(study)
        assert {r["seeds"] for r in rows} == {"1001"}  # every tuning run on the tuning seed
        best = max((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: float(r["value"]))
        assert float(best["train.optimizer.lr"]) == pytest.approx(tuned)
        for run in variant["runs"]:  # the comparison's runs train at the tuned lr
            spec = load_spec(Path(run["run_dir"]) / "spec.yaml")
            assert spec.train.optimizer.lr == tuned and spec.seed in compared
    assert out.count("tuned ") == 2 and "train.optimizer.lr=" in out
