"""`dnntrick tune` through the command line: each option reaches the study (--seeds, --pruner,
--seed, --plot, --json, --out) and `tune --resume DIR --trials N` continues the folder's study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tuning.test_tune import LR, csv_rows, spec_file

pytestmark = pytest.mark.integration


def test_the_options_reach_the_study_and_resume_continues_it(cli, tmp_path: Path, tiny_root: Path):
    spec = str(spec_file(tmp_path, tiny_root))
    png = tmp_path / "tune.png"
    args = ["--search", LR, "--trials", "2", "--json"]
    code, out, err = cli(
        "tune", spec, *args, "--seeds", "2", "--pruner", "none", "--seed", "7",
        "--plot", str(png), "--out", str(tmp_path / "a"),
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    [folder] = (tmp_path / "a").glob("tune-*")
    assert document == json.loads((folder / "tune.json").read_text())
    config = document["config"]
    assert (config["pruner"], config["sampler_seed"], config["seeds"]) == ("none", 7, [1, 2])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = csv_rows(folder)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]  # no pruner: none pruned
    assert all(len(r["run_dirs"].split()) == 2 for r in rows), rows  # two seeds each

    # --seed: TPE's own seed, so another one proposes another second trial
    code, out, err = cli("tune", spec, *args, "--seed", "8", "--out", str(tmp_path / "b"))
    assert code == 0, err
    [other] = (tmp_path / "b").glob("tune-*")
    lrs = [csv_rows(f)[1]["train.optimizer.lr"] for f in (folder, other)]
    assert lrs[0] != lrs[1], lrs

    before = (folder / "trials.csv").read_text().splitlines()
    code, _, err = cli("tune", "--resume", str(folder), "--trials", "3")
    assert code == 0, err
    after = (folder / "trials.csv").read_text().splitlines()
    assert after[: len(before)] == before and len(after) == len(before) + 1
