"""Damaged and foreign folders, read by every reader without a traceback: `dnntrick runs`,
`dnntrick show`, `dnntrick compare RUN_DIR…` / `compare FOLDER`, `dnntrick.load_run` and
`dnntrick.compare`. One real run directory is trained once (tiny data, 2 epochs); each case
damages a copy. A damaged or foreign folder is one line (`skipped DIR: WHY` for runs and
compare, `error: DIR: WHY` and exit 2 for show), the rest is read; compare exits 2 only when
nothing is left, and says which variant is the baseline and why."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import dnntrick
from dnntrick.errors import DnntrickError, UsageError
from dnntrick.folders import ROW_KEYS, SUMMARY_KEYS
from tests.conftest import tiny_overrides, write_spec

SPEC = """\
name: good
seed: 11
device: cpu
model: {hidden: [16], activation: elu}
train: {epochs: 2, batch_size: 50, optimizer: {name: adam, lr: 0.003}}
"""
GOOD = "good-20260101-120000"


def run_main(*args: str) -> int:
    """The CLI in process, outside a test (a fixture's set-up): its exit code."""
    from dnntrick.cli import main

    try:
        main(list(args))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 0
    return 0


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory, tiny_root: Path) -> Path:
    """A folder with a finished run (GOOD), a real lr-find folder and a real comparison folder."""
    home = tmp_path_factory.mktemp("made")
    spec = write_spec(home, SPEC, "good.yaml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DNNTRICK_CACHE", str(home / "cache"))
        env.setenv("DNNTRICK_NO_DOWNLOAD", "1")
        code = run_main("train", str(spec), *tiny_overrides(tiny_root, 2), "--out", str(home), "-q")
        assert code == 0
        (run,) = home.glob("good-*")
        run.rename(home / GOOD)
        lr = ["lr-find", str(spec), *tiny_overrides(tiny_root), "--steps", "20", "--out", str(home)]
        assert run_main(*lr) == 0
        assert run_main("compare", str(home / GOOD), "--out", str(home)) == 0
    return home


# ---------------------------------------------------------------- the damages


def edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = json.loads((run / name).read_text())
        change(data)
        (run / name).write_text(json.dumps(data))

    return damage


def set_key(key: str, value: object) -> Callable[[Path], None]:
    return edit_json("summary.json", lambda d: d.__setitem__(key, value))


def drop_key(key: str) -> Callable[[Path], None]:
    return edit_json("summary.json", lambda d: d.pop(key))


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)

    return damage


def remove(*names: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        for name in names:
            (run / name).unlink()

    return damage


def rows_edit(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / "metrics.jsonl"
        path.write_text("".join(line + "\n" for line in change(path.read_text().splitlines())))

    return damage


def drop_row_key(key: str) -> Callable[[Path], None]:
    def change(lines: list[str]) -> list[str]:
        row = json.loads(lines[0])
        del row[key]
        return [json.dumps(row), *lines[1:]]

    return rows_edit(change)


def stop(status: str, cut_last_row: bool = False) -> Callable[[Path], None]:
    """An unfinished run: no summary.json, no weights; stopped.json as `train` writes it."""

    def damage(run: Path) -> None:
        remove("summary.json", "model.safetensors")(run)
        message = f"{status} (SIGINT); checkpoint saved" if status else ""
        if status:
            (run / "stopped.json").write_text(json.dumps({"status": status, "message": message}))
        if cut_last_row:
            text = (run / "metrics.jsonl").read_text()
            (run / "metrics.jsonl").write_text(text[: len(text) - 40])

    return damage


def make_folder(run: Path) -> None:
    shutil.rmtree(run)
    run.mkdir()


def make_file(run: Path) -> None:
    shutil.rmtree(run)
    run.write_text("not a folder\n")


def make_loop(run: Path) -> None:
    shutil.rmtree(run)
    run.symlink_to(run.name)


def make_broken_link(run: Path) -> None:
    shutil.rmtree(run)
    run.symlink_to(run.parent / "nowhere")


def spec_folder(run: Path) -> None:
    (run / "spec.yaml").unlink()
    (run / "spec.yaml").mkdir()


def with_notes(run: Path) -> None:
    shutil.rmtree(run)
    run.mkdir()
    (run / "notes.txt").write_text("hello")


def set_spec_seed(run: Path, seed: int) -> None:
    path = run / "spec.yaml"
    path.write_text(path.read_text().replace("seed: 11", f"seed: {seed}"))


@dataclass
class Damage:
    id: str
    make: Callable[[Path], None]
    why: str  # what every reader says (the start of its one line)
    status: str | None = None  # None: damaged or foreign; else the status `runs` lists
    compare: str | None = ""  # compare's reason when not `why`; None: compared (diverged)
    name: str = "copy-20260102-120000"  # the damaged folder's name


def diverged(run: Path) -> None:
    stop("diverged")(run)
    set_spec_seed(run, 12)  # another seed of the same variant: compared with GOOD's


CUT = rows_edit(lambda lines: [*lines[:-1], lines[-1][:25]])
SEED_AGAIN = f"seed 11 of good again (.../{GOOD} is compared)"
DAMAGES = [
    # summary.json
    Damage(
        "summary missing",
        remove("summary.json"),
        "not finished (no summary.json): still running, or `dnntrick train --resume",
        "failed or running",
    ),
    Damage("summary empty", write("summary.json", ""), "summary.json is empty"),
    Damage(
        "summary not JSON",
        write("summary.json", '{"name": '),
        "summary.json is not JSON (Expecting value: line 1 column 10 (char 9))",
    ),
    Damage(
        "summary a list",
        write("summary.json", "[1, 2]"),
        "summary.json holds list [1, 2], not an object",
    ),
    Damage(
        "summary a folder",
        lambda r: (r / "summary.json").unlink() or (r / "summary.json").mkdir(),
        "summary.json is a folder, not a file",
    ),
    Damage(
        "summary a FIFO",
        lambda r: (r / "summary.json").unlink() or os.mkfifo(r / "summary.json"),
        "summary.json is not a regular file",
    ),
    Damage(
        "summary not UTF-8",
        write("summary.json", b'{"name": "\xff"}'),
        "summary.json is not UTF-8 text (byte 10 is 0xff)",
    ),
    *(
        Damage(f"summary without {key}", drop_key(key), f"summary.json has no {key!r}")
        for key in SUMMARY_KEYS
    ),
    Damage(
        "accuracy a string",
        set_key("test_accuracy", "0.9"),
        'summary.json: test_accuracy is "0.9", not a number from 0 to 1',
    ),
    Damage(
        "accuracy null",
        set_key("test_accuracy", None),
        "summary.json: test_accuracy is null, not a number from 0 to 1",
    ),
    Damage(
        "accuracy 1.5",
        set_key("test_accuracy", 1.5),
        "summary.json: test_accuracy is 1.5, not a number from 0 to 1",
    ),
    Damage(
        "accuracy NaN",
        set_key("test_accuracy", float("nan")),
        "",
        "finished",
        "summary.json: test_accuracy is NaN (no test split): nothing to compare",
    ),
    Damage(
        "seed a string", set_key("seed", "abc"), 'summary.json: seed is "abc", not a whole number'
    ),
    Damage(
        "epochs_run a bool",
        set_key("epochs_run", True),
        "summary.json: epochs_run is true, not a whole number",
    ),
    Damage("name a number", set_key("name", 5), "summary.json: name is 5, not a string"),
    Damage(
        "loss a list", set_key("test_loss", [1]), "summary.json: test_loss is [1], not a number"
    ),
    # metrics.jsonl
    Damage("metrics missing", remove("metrics.jsonl"), "no metrics.jsonl"),
    Damage(
        "metrics empty",
        write("metrics.jsonl", ""),
        "metrics.jsonl has 0 rows, summary.json says 2 epochs ran",
    ),
    Damage("metrics cut", CUT, "metrics.jsonl line 2 is cut off or not JSON"),
    Damage(
        "metrics row a list",
        rows_edit(lambda lines: [lines[0], "[1, 2]"]),
        "metrics.jsonl line 2 holds list [1, 2], not an object",
    ),
    Damage(
        "metrics row again",
        rows_edit(lambda lines: [*lines, lines[-1]]),
        "metrics.jsonl line 3 is epoch 2, not 3",
    ),
    Damage(
        "metrics not UTF-8",
        write("metrics.jsonl", b"\xfe\n"),
        "metrics.jsonl is not UTF-8 text (byte 0 is 0xfe)",
    ),
    *(
        Damage(f"row without {key}", drop_row_key(key), f"metrics.jsonl line 1 has no {key!r}")
        for key in ROW_KEYS
    ),
    Damage(
        "row loss a string",
        rows_edit(
            lambda ls: [ls[0].replace('"train_loss": ', '"train_loss": "x", "t": '), *ls[1:]]
        ),
        'metrics.jsonl line 1: train_loss is "x", not a number',
    ),
    # spec.yaml
    Damage("spec missing", remove("spec.yaml"), "not a run directory (no spec.yaml)"),
    Damage("spec not YAML", write("spec.yaml", "model: [16\n"), "spec.yaml: "),
    Damage(
        "spec a list",
        write("spec.yaml", "- 1\n- 2\n"),
        "spec.yaml: a spec must be a mapping of keys to values (got list)",
    ),
    Damage(
        "spec not UTF-8", write("spec.yaml", b"name: \xff\n"), "spec.yaml: cannot read the file ("
    ),
    Damage("spec a folder", spec_folder, "spec.yaml is a folder, not a file"),
    # weights, unfinished and stopped runs
    Damage(
        "weights missing",
        remove("model.safetensors"),
        "no model.safetensors: the trained weights are missing",
        "finished",
        SEED_AGAIN,
    ),
    Damage(
        "interrupted",
        stop("interrupted"),
        "interrupted, not finished; `dnntrick train --resume",
        "interrupted",
    ),
    Damage(
        "interrupted, row cut",
        stop("interrupted", cut_last_row=True),
        "interrupted, not finished",
        "interrupted",
    ),
    Damage("diverged", diverged, "diverged (stopped.json), no summary.json", "diverged", None),
    Damage(
        "killed",
        lambda r: stop("")(r) or shutil.rmtree(r / "checkpoints"),
        "not finished (no summary.json): still running, or it failed",
        "failed or running",
    ),
    # not run directories
    Damage("empty folder", make_folder, "an empty folder, not a run directory"),
    Damage("a notes folder", with_notes, "not a run directory (no spec.yaml)"),
    Damage("symlink loop", make_loop, "a symlink loop"),
    Damage(
        "name not UTF-8",
        lambda r: None,
        "its path has bytes that are not UTF-8 (copy\\xff); rename it",
        name=os.fsdecode(b"copy\xff"),
    ),
]


def shown(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@pytest.fixture(params=DAMAGES, ids=[d.id for d in DAMAGES])
def damaged(request: pytest.FixtureRequest, made: Path, tmp_path: Path) -> tuple[Damage, Path]:
    """runs/ with GOOD and the damaged copy; (the damage, the copy's path)."""
    damage: Damage = request.param
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(made / GOOD, runs / GOOD)
    copy = runs / damage.name
    shutil.copytree(made / GOOD, copy)
    damage.make(copy)
    return damage, copy


def first(lines: str, start: str) -> str:
    """The one line of `lines` that starts with `start`, without it."""
    (line,) = [line for line in lines.splitlines() if line.startswith(start)]
    return line[len(start) :]


def test_runs_show_and_load_run_say_what_is_wrong_in_one_line(cli, damaged: tuple[Damage, Path]):
    damage, copy = damaged
    code, out, err = cli("runs", str(copy.parent), "--json")
    listed = {Path(r["run_dir"]).name: r["status"] for r in json.loads(out)}
    assert code == 0
    code, out, show_err = cli("show", str(copy))
    if damage.status is None:  # skipped with its reason; show refuses: exit 2, one line
        assert listed == {GOOD: "finished"}
        assert err.count("\n") == 1 and first(err, f"skipped {shown(copy)}: ").startswith(
            damage.why
        )
        assert (code, out, show_err.count("\n")) == (2, "", 1)
        assert first(show_err, f"error: {shown(copy)}: ").startswith(damage.why)
    else:  # listed with its status, shown
        assert listed == {GOOD: "finished", copy.name: damage.status} and err == ""
        assert code == 0 and show_err == "" and f"status             {damage.status}" in out
    # the Python API: load_run refuses in one line (a run with a NaN test accuracy loads)
    if damage.status == "finished" and damage.why == "":
        assert dnntrick.load_run(copy).summary["seed"] == 11
        return
    with pytest.raises(UsageError) as refused:
        dnntrick.load_run(copy)
    message = str(refused.value)
    assert message.startswith(f"{shown(copy)}: not a finished run directory ({damage.why}")
    assert "\n" not in message


def test_compare_skips_it_in_one_line_and_compares_the_rest(
    cli, damaged: tuple[Damage, Path], tmp_path: Path
):
    damage, copy = damaged
    good = copy.parent / GOOD
    code, out, err = cli("compare", str(good), str(copy), "--out", str(tmp_path / "c"))
    (folder,) = (tmp_path / "c").glob("compare-*")
    document = json.loads((folder / "comparison.json").read_text())
    reason = f"the first input, {good}; --baseline LABEL picks another"
    assert f"baseline: good ({reason})" in out and document["baseline_reason"] == reason
    if damage.compare is None:  # a diverged run is a result: its variant diverged 1/2
        assert code == 1 and document["skipped"] == []
        assert [v["status"] for v in document["variants"]] == ["diverged 1/2"]
        assert err == "error: good seed 12: diverged: the loss became NaN or infinite\n"
        return
    why = (damage.compare or damage.why).replace(".../", f"{copy.parent}/")
    assert code == 0, err
    assert first(out, f"skipped {shown(copy)}: ").startswith(why)
    [skipped] = document["skipped"]
    assert skipped["folder"] == shown(copy) and skipped["why"].startswith(why)
    [variant] = document["variants"]
    assert variant["label"] == "good" and variant["stats"]["n"] == 1
    assert [Path(r["run_dir"]).name for r in variant["runs"]] == [GOOD]
    # nothing but the damaged folder: exit 2, the same line, nothing written
    code, out, err = cli("compare", str(copy), "--out", str(tmp_path / "d"))
    if damage.compare == SEED_AGAIN:  # alone, the run without its weights is compared
        assert code == 0 and "skipped" not in out
        return
    line = first(out, f"skipped {shown(copy)}: ")
    assert code == 2 and line.startswith(why) and not (tmp_path / "d").exists()
    assert err == f"error: nothing left to compare: 1 skipped, e.g. {shown(copy)}: {line}\n"


# ---------------------------------------------------------------- a folder of many runs


@pytest.fixture
def zoo(made: Path, tmp_path: Path) -> Path:
    """runs/ as a user's: two variants, an interrupted run, an lr-find folder, a comparison
    folder, a symlink loop, a folder named in bytes that are not UTF-8, a file, a hidden folder."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(made / GOOD, runs / GOOD)
    other = runs / "another-20260103-120000"
    shutil.copytree(made / GOOD, other)
    spec = other / "spec.yaml"
    spec.write_text(spec.read_text().replace("name: good", "name: another").replace("elu", "relu"))
    stop("interrupted")(Path(shutil.copytree(made / GOOD, runs / "stopped-20260104-120000")))
    for found in (*made.glob("good-lr-find-*"), *made.glob("compare-*")):
        shutil.copytree(found, runs / found.name)
    shutil.copytree(made / GOOD, runs / os.fsdecode(b"copy\xff"))
    (runs / "loop").symlink_to("loop")
    (runs / "README.txt").write_text("my runs\n")
    (runs / ".trash").mkdir()
    return runs


def skipped_lines(text: str, runs: Path) -> dict[str, str]:
    return {
        line.split(": ", 1)[0].removeprefix(f"skipped {runs}/"): line.split(": ", 1)[1]
        for line in text.splitlines()
        if line.startswith("skipped ")
    }


FOREIGN = {
    "copy\\xff": "its path has bytes that are not UTF-8 (copy\\xff); rename it",
    "loop": "a symlink loop",
}


def test_compare_of_a_folder_of_runs_skips_what_it_cannot_compare(cli, zoo: Path, made: Path):
    (lr_find,) = (p.name for p in made.glob("good-lr-find-*"))
    (comparison,) = (p.name for p in made.glob("compare-*"))
    code, out, err = cli("compare", str(zoo), "--out", str(zoo.parent / "c"))
    assert code == 0, err
    resume = f"`dnntrick train --resume {zoo}/stopped-20260104-120000` continues it"
    assert skipped_lines(out, zoo) == {
        **FOREIGN,
        comparison: "a comparison folder, not a run directory (`dnntrick compare` reads its runs)",
        lr_find: "an lr-find folder (lr_find.csv), not a training run",
        "stopped-20260104-120000": f"interrupted, not finished; {resume}",
    }
    reason = (
        f"the first input, {zoo}, holds 2 variants: the variant of the first run directory by "
        "name; --baseline LABEL picks another"
    )
    assert f"baseline: another ({reason})" in out
    (folder,) = (zoo.parent / "c").glob("compare-*")
    document = json.loads((folder / "comparison.json").read_text())
    assert [v["label"] for v in document["variants"]] == ["another", "good"]
    assert document["baseline"] == "another" and document["baseline_reason"] == reason
    assert len(document["skipped"]) == 5
    assert document["variants"][1]["differs"] == {"model.activation.name": "elu"}

    code, out, _ = cli("compare", str(zoo), "--baseline", "good", "--out", str(zoo.parent / "d"))
    assert code == 0 and "baseline: good (--baseline good)" in out


def test_runs_lists_the_runs_and_says_what_it_skipped(cli, zoo: Path, made: Path):
    (lr_find,) = (p.name for p in made.glob("good-lr-find-*"))
    (comparison,) = (p.name for p in made.glob("compare-*"))
    code, out, err = cli("runs", str(zoo))
    assert code == 0
    assert skipped_lines(err, zoo) == {
        **FOREIGN,
        comparison: "a comparison folder, not a run directory (`dnntrick compare` reads its runs)",
        lr_find: "an lr-find folder (lr_find.csv), not a training run",
    }
    names = [Path(line.split()[-1]).name for line in out.splitlines()[1:-1]]
    assert names == ["stopped-20260104-120000", "another-20260103-120000", GOOD]
    assert out.splitlines()[-1] == f"3 run directories in {zoo}; 4 skipped (above)"


def test_a_comparison_folder_with_a_damaged_comparison_json_is_read_by_spec_names(
    cli, made: Path, tmp_path: Path
):
    folder = tmp_path / "compare-20260101-120000"
    shutil.copytree(made / GOOD, folder / GOOD)
    (folder / "comparison.json").write_text('{"variants": [{"label": 3, "runs": "x"}]')
    code, out, err = cli("compare", str(folder), "--out", str(tmp_path / "c"))
    assert code == 0, err
    assert f"baseline: good (the first input, {folder}, holds 1 variant; --baseline" in out
    code, out, err = cli("runs", str(folder))
    assert (code, err) == (0, "") and out.splitlines()[-1] == f"1 run directory in {folder}"


def test_a_file_where_a_run_directory_is_expected(cli, tmp_path: Path):
    path = tmp_path / "run-20260101-120000"
    path.write_text("{}\n")
    code, out, err = cli("show", str(path))
    assert (code, out, err) == (2, "", f"error: {path}: a file, not a run directory\n")
    with pytest.raises(UsageError, match=r"^.*: not a finished run directory \(a file, not a run"):
        dnntrick.load_run(path)
    code, _, err = cli("runs", str(path))
    assert code == 2 and err.startswith(f"error: {path}: is a file, not a folder")
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    code, _, err = cli("runs", str(loop))
    assert code == 2 and err.startswith(f"error: {loop}: a symlink loop (give the folder")
    code, out, err = cli("compare", str(loop), "--out", str(tmp_path / "c"))
    assert code == 2 and f"skipped {loop}: a symlink loop" in out and "nothing left" in err


def test_a_spec_of_another_version_is_read_and_refused_by_load_run(cli, made: Path, tmp_path: Path):
    run = Path(shutil.copytree(made / GOOD, tmp_path / "runs" / GOOD))
    (run / "spec.yaml").write_text((run / "spec.yaml").read_text() + "retired_key: 1\n")
    code, out, _ = cli("show", str(run))
    assert code == 0 and re.search(r"\n  retired_key +1  \(default —\)\n", out)
    code, out, _ = cli("compare", str(run), "--out", str(tmp_path / "c"))
    assert code == 0 and "skipped" not in out
    with pytest.raises(DnntrickError, match="retired_key") as refused:
        dnntrick.load_run(run)
    assert "\n" not in str(refused.value) and refused.value.exit_code == 2


def test_the_api_compare_keeps_the_skipped_folders(made: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = dnntrick.compare(made / GOOD, empty, out=tmp_path / "c", quiet=True)
    assert result.comparison.document["skipped"] == [
        {"folder": str(empty), "why": "an empty folder, not a run directory"}
    ]
    assert [row["label"] for row in result.table] == ["good"]
    with pytest.raises(UsageError, match=r"^nothing left to compare: 1 skipped, e.g. .*empty: an"):
        dnntrick.compare(empty, out=tmp_path / "d", quiet=True)


def test_the_baseline_of_a_vary_grid_is_its_first_point(tmp_path: Path):
    from dnntrick.comparison.variants import baseline_reason, expand_specs, parse_vary

    spec = write_spec(tmp_path, SPEC)
    grid = parse_vary(["model.activation=relu,elu"])
    variants = expand_specs([str(spec)], [], grid, seeds=1)
    assert baseline_reason(variants, variants[0], None) == (
        f"the first input, {spec}, holds 2 variants: the first point of the --vary grid; "
        "--baseline LABEL picks another"
    )
    assert baseline_reason(variants, variants[1], "activation=elu") == "--baseline activation=elu"
