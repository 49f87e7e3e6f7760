"""examples/quickstart.ipynb runs top to bottom (nbclient, a real kernel, the real Fashion-MNIST)
and shows what it says it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def text_of(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output and "text/plain" in output["data"]:
            parts.append(output["data"]["text/plain"])
    return "".join(parts)


@pytest.mark.slow
def test_quickstart_runs_and_shows_its_results(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path / "examples"
    work.mkdir()
    (tmp_path / "experiments").symlink_to(REPO / "experiments")  # the notebook's ../experiments
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("DNNTRICK_DATA", str(fashion_root))
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: c for c in code}
    assert all(o.get("output_type") != "error" for c in code for o in c.get("outputs", []))
    run_repr = text_of(
        by_source['run = dnntrick.train("../experiments/selu.yaml", overrides=SMALL, out=OUT)']
    )
    accuracy = float(re.search(r"test_accuracy=(0\.\d+)", run_repr).group(1))
    assert accuracy > 0.7  # 5,000 images, 2 epochs of SELU
    evaluated = text_of(by_source["from dnntrick.data.datasets import load_arrays"])
    shown = re.search(r"evaluate: accuracy (\S+) \(the summary says (\S+)\)", evaluated)
    assert shown and shown.group(1) == shown.group(2) == f"{accuracy:.4f}"
    figures = [c for c in code if c.source.strip() in ("run.plot()", "comparison.plot()")]
    assert len(figures) == 2
    assert all(any("image/png" in o.get("data", {}) for o in c.outputs) for c in figures)
    assert "True" in text_of(by_source["again = dnntrick.load_run(run.run_dir)"])
    assert "vanishing" in text_of(
        by_source['diagnosed = dnntrick.diagnose("../experiments/vanishing.yaml")']
    )
    compared = text_of(by_source["comparison = dnntrick.compare("])
    assert "'elu'" in compared and "'selu'" in compared
    assert text_of(code[-1]).strip() == "True"  # the frozen layer is bitwise the source's
    made = sorted(p.name.split("-")[0] for p in (work / "runs" / "notebook").iterdir())
    tuned = text_of(by_source["tuned = dnntrick.tune("])
    assert "'train.optimizer.lr'" in tuned and tuned.strip().endswith(", 3)")  # three trials
    assert made == ["compare", "selu", "selu", "tune"]  # run, comparison, reuse, the study
