"""The command line: exit codes, one-line errors, --json, --print-config, check, lazy imports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dnntrick.data.datasets import FILES
from tests.conftest import REPO, make_tiny_idx, run_cli, tiny_overrides, write_spec

GOOD = "model: {hidden: [16]}\ntrain: {epochs: 1, batch_size: 100}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trian: {epochs: 3}\n", "trian: unknown key; did you mean 'train'?"),
        ("train: {epochs: three}\n", "train.epochs: input should be a valid integer"),
        (
            "model: {hidden: [300, -100]}\n",
            "model.hidden.1: input should be greater than 0 (got -100)",
        ),
        ("train: {batch_size: 0}\n", "train.batch_size: input should be greater than 0 (got 0)"),
        ("model: {activation: relux}\n", "unknown activation 'relux'; did you mean 'relu'?"),
        ("seed: 1\nseed: 2\n", "line 2, column 1: duplicate key 'seed'"),
        ("", "the file is empty"),
    ],
)
def test_bad_specs_exit_2_with_one_clear_line(cli, tmp_path: Path, text: str, message: str):
    path = write_spec(tmp_path, text)
    for args in (["train", str(path), "--out", str(tmp_path / "runs")], ["check", str(path)]):
        code, out, err = cli(*args)
        assert code == 2
        assert message in err
        assert "Traceback" not in err and out == ""
    assert not (tmp_path / "runs").exists()


def test_python_tag_runs_nothing(cli, tmp_path: Path):
    sentinel = tmp_path / "sentinel"
    path = write_spec(tmp_path, f"name: !!python/object/apply:os.system ['touch {sentinel}']\n")
    code, _, err = cli("train", str(path), "--out", str(tmp_path / "runs"))
    assert code == 2 and "is not allowed" in err
    assert not sentinel.exists() and not (tmp_path / "runs").exists()


def test_missing_and_unreadable_files(cli, tmp_path: Path):
    code, _, err = cli("train", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: no such file" in err
    code, _, err = cli("train", str(tmp_path))
    assert code == 2 and "is a folder" in err
    path = write_spec(tmp_path, GOOD)
    path.chmod(0)
    if os.geteuid() != 0:  # root reads any file; the binary case below still covers unreadable
        code, _, err = cli("check", str(path))
        assert code == 2 and "cannot read" in err
    path.chmod(0o644)
    path.write_bytes(b"\xff\xfe\x00binary")
    code, _, err = cli("check", str(path))
    assert code == 2 and "cannot read the file" in err


def test_bad_override_syntax(cli, tmp_path: Path):
    code, _, err = cli("check", str(write_spec(tmp_path, GOOD)), "train.epochs")
    assert code == 2 and "not KEY=VALUE" in err


def test_missing_data_exits_2(cli, tmp_path: Path):
    path = write_spec(tmp_path, GOOD + "data: {dataset: kmnist}\n")
    code, _, err = cli("train", str(path), "--out", str(tmp_path / "runs"))
    assert code == 2 and "data set 'kmnist' not found" in err and "dnntrick data fetch" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_corrupt_idx_exits_2(cli, tmp_path: Path):
    root = make_tiny_idx(tmp_path / "data", n_train=200, n_test=50, gz=False)
    images = root / FILES["test_images"]
    images.write_bytes(images.read_bytes()[:-1000])
    path = write_spec(tmp_path, GOOD)
    code, _, err = cli("train", str(path), *tiny_overrides(root), "--out", str(tmp_path / "runs"))
    assert code == 2 and f"{images}: truncated or corrupt IDX file" in err
    assert err.count("\n") == 1


def test_train_json_and_files(cli, tmp_path: Path, tiny_root: Path):
    path = write_spec(tmp_path, GOOD, "cli-run.yaml")
    code, out, err = cli(
        "train", str(path), *tiny_overrides(tiny_root, 2), "--json", "--out", str(tmp_path / "runs")
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["name"] == "cli-run" and summary["epochs_run"] == 2
    assert Path(summary["run_dir"], "summary.json").is_file()
    assert "test accuracy" in err  # the rich output went to stderr


def test_quiet_prints_one_line(cli, tmp_path: Path, tiny_root: Path):
    path = write_spec(tmp_path, GOOD, "q.yaml")
    code, out, err = cli(
        "train", str(path), *tiny_overrides(tiny_root), "--quiet", "--out", str(tmp_path / "runs")
    )
    assert code == 0 and err == ""
    assert out.startswith("q: test_accuracy=") and out.count("\n") == 1


def test_print_config_applies_overrides_and_trains_nothing(cli, tmp_path: Path):
    path = write_spec(tmp_path, GOOD)
    code, out, _ = cli(
        "train",
        str(path),
        "train.epochs=7",
        "--device",
        "cpu",
        "--print-config",
        "--out",
        str(tmp_path / "runs"),
    )
    assert code == 0 and "epochs: 7" in out and "device: cpu" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.integration
def test_check_and_help_do_not_import_torch(tmp_path: Path):
    path = write_spec(tmp_path, GOOD)
    probe = (
        "import sys; sys.argv=['dnntrick', *sys.argv[1:]]\n"
        "from dnntrick.cli import main\n"
        "try:\n    main()\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    import subprocess
    import sys

    for args in (["check", str(path)], ["--help"], ["train", "--help"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        assert "NO-TORCH" in done.stderr, (args, done.stderr)
    done = run_cli("check", str(path))
    assert done.returncode == 0 and "hidden:\n  - 16" in done.stdout


def test_real_entry_point_exit_code_and_no_traceback(tmp_path: Path):
    done = run_cli("train", str(write_spec(tmp_path, "model: {activation: 7}\n")))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


@pytest.mark.integration
def test_entry_point_skips_teardown_but_keeps_output_atexit_and_exit_code(
    tmp_path: Path, tiny_root: Path
):
    spec = write_spec(tmp_path, GOOD)
    done = run_cli("train", str(spec), *tiny_overrides(tiny_root), "--json", "--quiet",
                   "--out", str(tmp_path / "runs"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs_run"] == 1  # the whole JSON reached the pipe
    marker = tmp_path / "atexit-ran"
    probe = (
        "import atexit, pathlib, sys; sys.argv = ['dnntrick', 'check', sys.argv[1]]\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).touch)\n"
        "from dnntrick.cli import run\n"
        "run()\n"
        "print('run() returned')\n"
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2 and "missing.yaml" in done.stderr
    assert marker.exists() and "returned" not in done.stdout


def test_exit_codes_follow_the_interpreters_rules(capsys):
    from dnntrick.cli import exit_status

    assert (exit_status(None), exit_status(3), exit_status("bad")) == (0, 3, 1)
    assert capsys.readouterr().err == "bad\n"


def test_usage_errors_are_one_line(cli):
    code, _, err = cli("train")
    assert code == 2 and err.strip() == (
        "error: Missing argument 'SPEC' (or --resume RUN_DIR). (see `dnntrick train --help`)"
    )
    code, _, err = cli("train", "x.yaml", "--bogus")
    assert code == 2 and "No such option: --bogus" in err and err.count("\n") == 1
