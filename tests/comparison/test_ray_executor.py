"""`compare --executor ray` on a real local Ray instance (2 CPUs, started once per session): the
same numbers and run directories as the process executor, data from the object store, a dying
worker retried once then reported, remote run directories shipped back, and the missing-Ray error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from dnntrick.comparison.executor import Job, Outcome, run_job
from dnntrick.comparison.ray_executor import RayExecutor, task_resources
from dnntrick.spec.schema import Spec
from tests.conftest import tiny_overrides, write_spec

SPEC = """\
name: tiny
seed: 5
model: {hidden: [16], activation: relu}
train: {epochs: 2, batch_size: 50, optimizer: {name: sgd, lr: 0.05}}
"""


def _job(i: int, root: Path | str, out: Path, seed: int = 5, dataset: str = "mnist") -> Job:
    """A one-epoch job on the tiny set at `root`, named as a data set absent on this machine."""
    spec = Spec.model_validate(
        {
            "name": f"tiny{i}",
            "seed": seed,
            "data": {"dataset": dataset, "root": str(root), "val_size": 100},
            "model": {"hidden": [16]},
            "train": {"epochs": 1, "batch_size": 50},
        }
    )
    return Job(i, spec.model_dump(mode="json"), str(out))


def _accuracies(folder: Path) -> dict[tuple[str, int], float]:
    (compare_dir,) = folder.glob("compare-*")
    doc = json.loads((compare_dir / "comparison.json").read_text())
    return {(v["label"], r["seed"]): r["test_accuracy"] for v in doc["variants"] for r in v["runs"]}


@pytest.mark.integration
def test_ray_compare_gives_the_process_executors_numbers_and_run_dirs(
    ray_local, cli, tmp_path: Path, tiny_root: Path
):
    spec = write_spec(tmp_path, SPEC)
    args = [
        "compare", str(spec), *tiny_overrides(tiny_root, epochs=2),
        "--vary", "model.activation=relu,tanh", "--seeds", "2",
    ]  # fmt: skip
    code, out, err = cli(*args, "--executor", "ray", "--out", str(tmp_path / "ray"))
    assert code == 0, err
    assert "as Ray tasks on local Ray, 2 CPUs" in out
    for label in ("relu", "tanh"):  # live progress: one line per run as it ends
        for seed in (5, 6):
            assert f"{label} seed {seed}: ok, test acc" in out
    code, _, err = cli(*args, "--jobs", "2", "--out", str(tmp_path / "process"))
    assert code == 0, err
    on_ray, in_processes = _accuracies(tmp_path / "ray"), _accuracies(tmp_path / "process")
    assert len(on_ray) == 4 and on_ray == in_processes  # same seeds, same numbers, exactly
    assert len(set(on_ray.values())) > 1  # and the numbers do differ between runs
    (compare_dir,) = (tmp_path / "ray").glob("compare-*")
    run_dirs = sorted(p for p in compare_dir.iterdir() if p.is_dir())
    assert len(run_dirs) == 4
    for run_dir in run_dirs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["run_dir"] == str(run_dir) and summary["epochs_run"] == 2
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
        assert (run_dir / "model.safetensors").stat().st_size > 0


@pytest.mark.integration
def test_data_comes_from_the_object_store_not_the_workers_disk(
    ray_local, tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch
):
    import dnntrick.data.datasets

    real = dnntrick.data.datasets.load_arrays
    nowhere = tmp_path / "not-on-the-workers"  # exists for no process; the driver is patched

    def driver_only(name: str, root: str | None) -> dict[str, np.ndarray]:
        assert root == str(nowhere)
        return real(name, str(tiny_root))

    monkeypatch.setattr(dnntrick.data.datasets, "load_arrays", driver_only)
    jobs = [_job(0, nowhere, tmp_path / "runs"), _job(1, nowhere, tmp_path / "runs", seed=6)]
    outcomes = RayExecutor().run(jobs, lambda event: None)
    assert [o.status for o in sorted(outcomes, key=lambda o: o.id)] == ["ok", "ok"], outcomes
    assert all(o.summary and o.summary["test_accuracy"] > 0.2 for o in outcomes)
    # without the object store the workers read the folder themselves, and fail
    monkeypatch.setattr(dnntrick.data.datasets, "load_arrays", real)
    (failed,) = RayExecutor().run([_job(2, nowhere, tmp_path / "runs")], lambda event: None)
    assert failed.status == "error" and "not found" in (failed.error or "")


def die_in_some_jobs(job: Job, send, arrays) -> Outcome:
    """Job 0's worker dies on its first try, job 1's on every try; job 2 trains normally."""
    attempts = Path(job.out) / f"attempts-{job.id}"
    with attempts.open("a") as handle:
        handle.write("x")
    if job.id == 1 or (job.id == 0 and attempts.read_text() == "x"):
        os._exit(1)  # a crash, not an exception: what OOM killers and segfaults look like
    return run_job(job, send, arrays)


@pytest.mark.integration
def test_a_dead_worker_is_retried_once_then_reported_and_the_others_go_on(
    ray_local, tmp_path: Path, tiny_root: Path
):
    # pytest imports this file under a name the workers can't import: send the function itself
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[die_in_some_jobs.__module__])
    out = tmp_path / "runs"
    out.mkdir()
    jobs = [_job(i, tiny_root, out) for i in range(3)]
    events: list[tuple] = []
    outcomes = {o.id: o for o in RayExecutor(work=die_in_some_jobs).run(jobs, events.append)}
    attempts = {i: len((out / f"attempts-{i}").read_text()) for i in range(3)}
    assert attempts == {0: 2, 1: 2, 2: 1}
    assert outcomes[0].status == "ok" and outcomes[2].status == "ok"
    assert outcomes[1].status == "error" and outcomes[1].exit_code == 1
    assert "its Ray worker died (tried twice)" in (outcomes[1].error or "")
    ends = {e[1]: e[2]["status"] for e in events if e[0] == "end"}
    assert ends == {0: "ok", 1: "error", 2: "ok"}  # the live table hears of the dead one too


@pytest.mark.integration
def test_runs_on_other_nodes_ship_their_run_directory_back(
    ray_local, tmp_path: Path, tiny_root: Path
):
    out = tmp_path / "runs"
    (outcome,) = RayExecutor(ship_runs=True).run([_job(0, tiny_root, out)], lambda e: None)
    assert outcome.status == "ok" and outcome.summary is not None
    (run_dir,) = out.iterdir()
    assert run_dir.name.startswith("tiny0-") and outcome.summary["run_dir"] == str(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_dir"] == str(run_dir)
    assert summary["test_accuracy"] == outcome.summary["test_accuracy"]
    assert {p.name for p in run_dir.iterdir()} >= {
        "spec.yaml",
        "metrics.jsonl",
        "summary.json",
        "model.safetensors",
    }


def test_resources_per_run():
    assert task_resources("cpu", 4) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources("auto", 0) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources("auto", 2) == {"num_cpus": 1, "num_gpus": 0.25}
    assert task_resources("cuda:1", 0)["num_gpus"] == 0.25


def test_without_ray_installed_it_says_how_to_install_it(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = write_spec(tmp_path, SPEC)
    code, _, err = cli("compare", str(spec), "--executor", "ray", "--out", str(tmp_path / "r"))
    assert code == 2 and "Traceback" not in err
    assert err.strip() == (
        "error: --executor ray needs Ray, which is not installed: pip install 'dnntrick[ray]'"
    )
    assert not (tmp_path / "r").exists()


def test_address_needs_the_ray_executor(cli, tmp_path: Path):
    spec = write_spec(tmp_path, SPEC)
    code, _, err = cli("compare", str(spec), "--address", "auto", "--out", str(tmp_path / "r"))
    assert code == 2 and "--address ADDR names a Ray cluster; add --executor ray" in err
    code, _, err = cli(
        "compare", str(spec), "--executor", "ray", "--address", "auto", "--jobs", "2",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 2 and "--jobs sets a local Ray instance's CPUs" in err
    assert not (tmp_path / "r").exists()
