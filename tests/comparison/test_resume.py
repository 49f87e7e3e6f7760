"""A stopped compare: SIGINT/SIGTERM (once, or twice: at once) with the process executor, in
process and as Ray tasks stop every run, leave no process behind, write what finished and say
how to continue; `compare --resume` then gives the uninterrupted comparison run by run (test
accuracy, weights, metrics rows), and refuses a folder whose specs no longer match its runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dnntrick.comparison import executor
from dnntrick.comparison.plan import PLAN, fingerprint, load_plan
from dnntrick.comparison.resume import rebuild
from tests.comparison.test_stop import alive
from tests.conftest import REPO, assert_same_run, signal_at, write_spec

SPEC = """\
name: tiny
seed: 5
model: {hidden: [16], activation: relu}
train: {epochs: 2, batch_size: 50, optimizer: {name: sgd, lr: 0.05}}
"""
# two short runs, then two long ones (40 epochs of 10 steps): the stop lands in the long ones
GRID = ["--vary", "train.epochs=2,40", "--seeds", "2"]


def compare_args(spec: Path, root: Path, *extra: str) -> list[str]:
    return ["compare", str(spec), f"data.root={root}", "data.val_size=100", *GRID, *extra]


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def document(folder: Path) -> dict:
    return json.loads((folder / "comparison.json").read_text())


def runs_of(folder: Path) -> dict[tuple[str, int], dict]:
    return {(v["label"], r["seed"]): r for v in document(folder)["variants"] for r in v["runs"]}


def cut_point(out: Path) -> bool:
    """Both short runs finished and a long one has a checkpoint: stop now."""
    folders = list(out.glob("compare-*/*/"))
    done = [f for f in folders if (f / "summary.json").exists()]
    cut = [f for f in folders if not (f / "summary.json").exists() and any(f.glob("*/*.pt"))]
    return len(done) >= 2 and bool(cut)


def wait_for(condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the compare never reached the cut point"
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: psutil may not be installed)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [c for c, p in parents.items() if p in frontier]
        found += children
        frontier = children
    return found


def survivors(pids: list[int], wait: float = 3.0) -> list[str]:
    """The command lines of `pids` still running after `wait` s (exiting takes a moment)."""
    deadline = time.monotonic() + wait
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ") for p in pids if alive(p)]


def resume_command(err: str, code: int) -> list[str]:
    """The last line names the signal and how to continue: one line, no traceback."""
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    name = {130: "SIGINT", 143: "SIGTERM"}[code]
    found = re.fullmatch(
        rf"error: interrupted \({name}\): (\d) of 4 runs finished; continue with: (.+)", last
    )
    assert found, last
    return shlex.split(found.group(2))


def assert_stopped_and_still(folder: Path, code: int) -> None:
    """comparison.json marks the missing runs; nothing writes into the folder any more."""
    doc = document(folder)
    assert doc["complete"] is False and doc["interrupted"] == {130: "SIGINT", 143: "SIGTERM"}[code]
    status = {(r["variant"], r["seed"]): r["status"] for v in doc["variants"] for r in v["runs"]}
    assert status[("epochs=2", 5)] == status[("epochs=2", 6)] == "ok"
    assert "interrupted" in status.values()
    assert doc["missing_runs"] == sum(s in ("interrupted", "not run") for s in status.values())
    before = tree_hashes(folder)
    time.sleep(1.0)  # a run still going (an orphaned worker, a Ray task) would write metrics
    assert tree_hashes(folder) == before


REFERENCES: dict[int, Path] = {}  # threads per run → the uninterrupted comparison's folder


def reference(cli, tmp_path_factory, monkeypatch, spec: Path, root: Path, threads: int) -> Path:
    """The same comparison, uninterrupted, in this process with the same threads per run."""
    if threads not in REFERENCES:
        out = tmp_path_factory.mktemp("reference")
        with monkeypatch.context() as patch:
            patch.setattr(executor, "cpu_count", lambda: threads)
            code, _, err = cli(*compare_args(spec, root, "--jobs", "1", "--out", str(out)))
        assert code == 0, err
        (REFERENCES[threads],) = out.glob("compare-*")
    return REFERENCES[threads]


def assert_resumed_equals(cli, folder: Path, ref: Path, command: list[str], *extra: str) -> None:
    assert command[:2] == ["dnntrick", "compare"] and Path(command[-1]) == folder
    code, out, err = cli(*command[1:], *extra)
    assert code == 0, err
    cont = re.search(r"resume .*: (\d) of 4 runs finished, (\d) to continue from their", out)
    assert cont and int(cont.group(2)) >= 1, out  # a cut run went on from its checkpoint
    assert document(folder)["complete"] is True
    mine, theirs = runs_of(folder), runs_of(ref)
    assert mine.keys() == theirs.keys() and len(mine) == 4
    for key, run in mine.items():
        assert run["status"] == "ok" and run["test_accuracy"] == theirs[key]["test_accuracy"]
        assert_same_run(Path(run["run_dir"]), Path(theirs[key]["run_dir"]))  # weights, rows


def start(args: list[str], out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, "-m", "dnntrick", *args, "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killpg is a terminal's Ctrl-C
    )


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_workers_and_resume_gives_the_uninterrupted_runs(
    cli, tmp_path: Path, tiny_root: Path, tmp_path_factory, monkeypatch
):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "runs"
    compare = start(compare_args(spec, tiny_root, "--jobs", "2"), out)
    wait_for(lambda: cut_point(out))
    workers = descendants(compare.pid)
    assert len(workers) >= 2  # the pool's workers (and multiprocessing's resource tracker)
    compare.send_signal(signal.SIGTERM)  # `kill PID`: the compare alone gets it
    _, err = compare.communicate(timeout=120)
    assert compare.returncode == 143, err
    assert survivors(workers) == []
    (folder,) = out.glob("compare-*")
    assert_stopped_and_still(folder, 143)
    threads = load_plan(folder)["options"]["threads"]
    ref = reference(cli, tmp_path_factory, monkeypatch, spec, tiny_root, threads)
    # --jobs 1: here, not in new workers (cheaper); the plan keeps the threads per run
    assert_resumed_equals(cli, folder, ref, resume_command(err, 143), "--jobs", "1")


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_twice_stops_at_once_and_leaves_a_resumable_folder(tmp_path: Path, tiny_root):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "runs"
    compare = start(compare_args(spec, tiny_root, "--jobs", "2"), out)
    wait_for(lambda: cut_point(out))
    workers = descendants(compare.pid)
    os.killpg(compare.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    time.sleep(0.05)
    sent = time.monotonic()
    os.killpg(compare.pid, signal.SIGINT)
    _, err = compare.communicate(timeout=120)
    assert compare.returncode == 130, err
    assert time.monotonic() - sent < 10  # at once: no run trained on to its end
    assert "SIGINT again: stopping at once" in err
    assert survivors(workers) == []
    (folder,) = out.glob("compare-*")
    resume_command(err, 130)
    assert_stopped_and_still(folder, 130)
    _, work, line = rebuild(folder, load_plan(folder))  # resumable: nothing refused
    assert work and line.endswith("to run")


@pytest.mark.integration
def test_ray_tasks_stop_on_sigterm_and_resume_gives_the_uninterrupted_runs(
    ray_local, cli, tmp_path: Path, tiny_root: Path, tmp_path_factory, monkeypatch
):
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "runs"

    def stop_when_cut() -> None:
        wait_for(lambda: cut_point(out))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_cut, daemon=True).start()
    code, _, err = cli(*compare_args(spec, tiny_root, "--executor", "ray", "--out", str(out)))
    assert code == 143, err
    (folder,) = out.glob("compare-*")
    assert_stopped_and_still(folder, 143)  # no Ray task still writes
    ref = reference(cli, tmp_path_factory, monkeypatch, spec, tiny_root, 1)
    command = resume_command(err, 143)
    assert_resumed_equals(cli, folder, ref, command)
    assert load_plan(folder)["options"]["executor"] == "ray"


@pytest.mark.integration
def test_in_process_sigint_stops_after_the_run_and_resume_continues_it(
    cli, tmp_path: Path, tiny_root: Path, monkeypatch
):
    spec = write_spec(tmp_path, SPEC)
    args = ["compare", str(spec), f"data.root={tiny_root}", "data.val_size=100", "--seeds", "3"]
    args += ["train.epochs=1", "--jobs", "1"]
    code, _, err = cli(*args, "--out", str(tmp_path / "ref"))
    assert code == 0, err
    (ref,) = (tmp_path / "ref").glob("compare-*")
    signal_at(monkeypatch, 15, training=True)  # in run 2 (10 steps each), at its step 5
    code, _, err = cli(*args, "--out", str(tmp_path / "cut"))
    assert code == 130, err
    (folder,) = (tmp_path / "cut").glob("compare-*")
    assert [r["status"] for r in runs_of(folder).values()] == ["ok", "interrupted", "not run"]
    code, out, err = cli("compare", "--resume", str(folder))
    assert code == 0, err
    assert "1 of 3 runs finished, 1 to continue from their checkpoint, 1 to run" in out
    for key, run in runs_of(folder).items():
        assert_same_run(Path(run["run_dir"]), Path(runs_of(ref)[key]["run_dir"]))


# ---------------------------------------------------------------- what --resume refuses


@pytest.fixture(scope="module")
def complete(tmp_path_factory, tiny_root: Path) -> Path:
    """A finished two-run comparison (made in this process, through the library)."""
    from dnntrick.comparison.session import run_comparison

    folder = tmp_path_factory.mktemp("complete")
    spec = write_spec(folder, SPEC)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DNNTRICK_CACHE", str(folder / "cache"))
        result = run_comparison(
            [str(spec), f"data.root={tiny_root}", "data.val_size=100", "train.epochs=1"],
            seeds=2,
            jobs=1,
            out=folder / "runs",
        )
    assert result.exit_code == 0
    return result.folder


def edit_plan(folder: Path, sign: bool) -> None:
    plan = json.loads((folder / PLAN).read_text())
    plan["jobs"][0]["spec"]["train"]["optimizer"]["lr"] = 0.5
    if sign:  # a forger who knows the recipe: the runs still give it away
        plan["fingerprint"] = fingerprint(plan)
    (folder / PLAN).write_text(json.dumps(plan))


def edit_run_spec(folder: Path) -> None:
    run_spec = next(folder.glob("*/spec.yaml"))
    run_spec.write_text(run_spec.read_text().replace("lr: 0.05", "lr: 0.5"))


TAMPERING = {
    "plan edited": (lambda f: edit_plan(f, sign=False), "does not match its fingerprint"),
    "plan re-signed": (lambda f: edit_plan(f, sign=True), "is none of the plan's specs"),
    "run spec edited": (edit_run_spec, "the folder's specs no longer match its runs"),
    "plan damaged": (lambda f: (f / PLAN).write_text("{not json"), "plan.json cannot be read"),
    "plan deleted": (lambda f: (f / PLAN).unlink(), "made before compare could resume"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_resume_refuses_a_folder_whose_specs_no_longer_match(
    cli, tmp_path: Path, complete: Path, case: str
):
    folder = tmp_path / "copy"
    shutil.copytree(complete, folder)
    tamper, message = TAMPERING[case]
    tamper(folder)
    before = tree_hashes(folder)
    code, _, err = cli("compare", "--resume", str(folder))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: --resume ")
    assert tree_hashes(folder) == before  # refused before anything was touched


def test_resume_of_a_complete_comparison_says_so_and_runs_nothing(cli, complete: Path):
    before = tree_hashes(complete)
    code, out, err = cli("compare", "--resume", str(complete))
    assert code == 0, err
    assert f"{complete}: the comparison is complete, all 2 runs finished; nothing to run" in out
    assert tree_hashes(complete) == before


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("run dir", "not a comparison folder (no plan.json)"),
        ("nowhere", "no such folder"),
        ("with a spec", "--resume runs the comparison's own specs; drop SPEC"),
    ],
)
def test_resume_refuses_what_is_not_a_comparison_in_one_line(
    cli, complete: Path, what: str, message: str
):
    run_dir = next(p for p in complete.iterdir() if p.is_dir())
    args = {
        "run dir": [str(run_dir)],
        "nowhere": [str(complete / "nowhere")],
        "with a spec": [str(complete), str(run_dir / "spec.yaml")],
    }[what]
    code, _, err = cli("compare", "--resume", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
