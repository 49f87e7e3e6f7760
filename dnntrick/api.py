"""dnntrick as a library (a notebook, a script): the CLI's commands as functions that return
objects. The same spec and seed give the same run directory and the same numbers as the CLI.

    run = dnntrick.train("experiments/selu.yaml", overrides=["train.epochs=5"])
    run.summary["test_accuracy"], run.plot(), run.predict(x)
    dnntrick.load_run(run.run_dir)
    dnntrick.compare("experiments/elu.yaml", "experiments/selu.yaml", seeds=3).table
    dnntrick.diagnose("experiments/vanishing.yaml").verdict
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure

    from dnntrick.comparison.session import Comparison
    from dnntrick.diagnosis.diagnose import Diagnosed
    from dnntrick.spec.schema import Spec


def resolve_spec(
    spec: Any, overrides: Sequence[str] | None = None, dotted: Mapping[str, Any] | None = None
) -> tuple[Spec, str | None, list[str]]:
    """(the validated spec, its file or None, the overrides as KEY=VALUE strings) from a path, a
    dict or a Spec, with `overrides` ("train.epochs=5") and `dotted` ({"train.epochs": 5})."""
    from dnntrick.spec.config import apply_overrides, read_spec_file, validate
    from dnntrick.spec.schema import Spec

    # a JSON value is a YAML value: dotted Python values go through the same parser
    given = [*(overrides or []), *(f"{k}={json.dumps(v)}" for k, v in (dotted or {}).items())]
    if isinstance(spec, str | Path):
        source: str | None = str(spec)
        data = read_spec_file(Path(spec))
    elif isinstance(spec, Spec):
        source, data = None, spec.model_dump(mode="json", by_alias=True)
    elif isinstance(spec, Mapping):
        source, data = None, dict(spec)
    else:
        raise UsageError(f"spec: give a path, a dict or a Spec (got {type(spec).__name__})")
    return validate(apply_overrides(data, given), source or "spec"), source, given


def _inline(fig: Figure) -> Figure:
    """Under IPython (Jupyter), register the PNG display of figures, as %matplotlib inline
    does: the returned Figure then shows inline without pyplot or a magic."""
    import sys

    if "IPython" in sys.modules:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats

        shell = get_ipython()
        if shell is not None:
            select_figure_formats(shell, {"png"})
    return fig


def _reporter(quiet: bool) -> Any:
    from dnntrick.training.report import ConsoleReporter, Reporter

    return Reporter() if quiet else ConsoleReporter()


@dataclass
class Run:
    """A finished run: its numbers, its trained model, and its run directory."""

    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    model: torch.nn.Module
    spec: Spec
    divisor: float = 255.0  # how raw inputs become the model's: x / divisor, then standardized
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    def __repr__(self) -> str:
        accuracy = self.summary.get("test_accuracy")
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "—"
        return f"Run({self.spec.name!r}, test_accuracy={shown}, run_dir='{self.run_dir}')"

    def to_pandas(self) -> Any:
        """The per-epoch history as a pandas DataFrame (pip install 'dnntrick[pandas]')."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("Run.to_pandas needs pandas: pip install 'dnntrick[pandas]'") from None
        rows = [{k: v for k, v in row.items() if k != "diagnostics"} for row in self.history]
        return pd.DataFrame(rows).set_index("epoch")

    def plot(self) -> Figure:
        """Loss and accuracy by epoch (training and validation); Jupyter shows it inline."""
        from dnntrick.comparison.plots import curves_figure

        title = f"{self.spec.name}: learning curves"
        return _inline(curves_figure(self.history, title, self.summary))

    def inputs(self, x: Any) -> torch.Tensor:
        """Raw inputs [N, ...] (as the training data came: e.g. uint8 pixels) → the model's
        inputs [N, features] on its device, preprocessed as in training."""
        import numpy as np
        import torch

        device = next(self.model.parameters()).device
        xt = torch.from_numpy(np.array(x, dtype=np.float32)).reshape(len(x), -1).to(device)
        expected = self.model.hidden1.in_features  # type: ignore[union-attr]
        if xt.shape[1] != expected:
            raise UsageError(
                f"inputs: {xt.shape[1]} features per row, the model takes {expected}; give "
                "rows shaped like the training data"
            )
        xt = xt / self.divisor if self.divisor != 1.0 else xt
        if self.mean is not None and self.std is not None:
            xt = (xt - self.mean.to(device)) / self.std.to(device)
        return xt

    def predict_proba(self, x: Any, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities [N, classes] for raw inputs x."""
        import torch

        from dnntrick.training.model import eval_mode

        xt = self.inputs(x)
        with torch.inference_mode(), eval_mode(self.model):
            parts = [
                torch.softmax(self.model(xt[s : s + batch_size]).float(), dim=1)
                for s in range(0, len(xt), batch_size)
            ]
        return torch.cat(parts).cpu().numpy()

    def predict(self, x: Any) -> np.ndarray:
        """Predicted class indices [N] for raw inputs x."""
        return self.predict_proba(x).argmax(axis=1)

    def evaluate(self, x: Any, y: Any) -> dict[str, float]:
        """{"loss", "accuracy"} of the model on raw inputs x and integer labels y."""
        import numpy as np
        import torch

        from dnntrick.training.loop import evaluate

        labels = torch.from_numpy(np.array(y, dtype=np.int64))  # a copy: y may be read-only
        if len(labels) != len(x):
            raise UsageError(f"evaluate: {len(x)} inputs but {len(labels)} labels")
        xt = self.inputs(x)
        loss, accuracy = evaluate(self.model, xt, labels.to(xt.device), 4096)
        return {"loss": loss, "accuracy": accuracy}


def _preprocessing(run_dir: Path) -> dict[str, Any]:
    """The run's preprocessing.safetensors as Run fields (absent: pixels /255, no standardize)."""
    from safetensors import SafetensorError, safe_open

    from dnntrick.training.rundir import PREPROCESSING

    path = run_dir / PREPROCESSING
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            divisor = float((f.metadata() or {}).get("divisor", 255.0))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise UsageError(f"{path}: not a readable preprocessing file ({err})") from None
    if set(tensors) not in (set(), {"mean", "std"}):
        raise UsageError(f"{path}: expected tensors mean and std, found {sorted(tensors)}")
    return {"divisor": divisor, "mean": tensors.get("mean"), "std": tensors.get("std")}


def train(
    spec: Any,
    overrides: Sequence[str] | None = None,
    *,
    data: Any = None,
    out: str | Path = "runs",
    device: str | None = None,
    quiet: bool = False,
    **dotted: Any,
) -> Run:
    """Train `spec` (a path, a dict or a Spec) and write its run directory under `out`.

    `overrides`: ["train.epochs=5"]; keyword overrides with dotted keys:
    `train(spec, **{"train.epochs": 5})`. `data`: your own arrays, (x_train, y_train) or a dict
    with x_train, y_train and optionally x_test, y_test (see docs/data.md). quiet=True prints
    nothing; else the live progress shows in the terminal or the notebook."""
    from dnntrick.data.own import IN_MEMORY, arrays_from_python
    from dnntrick.runner import run_spec

    if device is not None:
        dotted = {**dotted, "device": device}
    arrays = None
    if data is not None:  # the user's arrays stand in for the spec's data set
        arrays = arrays_from_python(data)
        dotted = {"data.dataset": "arrays", "data.root": None, "data.path": IN_MEMORY, **dotted}
    resolved, source, given = resolve_spec(spec, overrides, dotted)
    result = run_spec(
        resolved,
        out=out,
        reporter=_reporter(quiet),
        source=source,
        overrides=given,
        arrays=arrays,
    )
    return Run(
        result.run_dir,
        result.summary,
        result.history,
        result.model,
        resolved,
        **_preprocessing(result.run_dir),
    )


def load_run(run_dir: str | Path, device: str = "cpu") -> Run:
    """Reopen a finished run directory: its spec, summary, history and trained model (weights
    read through safetensors only)."""
    from dnntrick.folders import display, read_folder, unfinished
    from dnntrick.spec.config import load_spec
    from dnntrick.training.checkpoint import read_weights
    from dnntrick.training.model import build_model

    path = Path(run_dir)
    found = read_folder(path)  # damaged or unfinished: one line that says what is wrong
    summary = found.summary
    problem = found.problem or (unfinished(found) if summary is None else None)
    if problem is None and not (path / "model.safetensors").is_file():
        problem = "no model.safetensors: the trained weights are missing"
    if problem is not None or summary is None:
        raise UsageError(f"{display(path)}: not a finished run directory ({problem})")
    spec = load_spec(path / "spec.yaml")
    weights = read_weights(path / "model.safetensors")
    try:
        in_features = weights["hidden1.weight"].shape[1]
        n_classes = weights["outputs.weight"].shape[0]
        model = build_model(spec.model, in_features, n_classes)
        model.load_state_dict(weights)
    except (KeyError, RuntimeError) as err:
        raise UsageError(
            f"{path / 'model.safetensors'}: does not fit the run's spec ({err})"
        ) from None
    return Run(path, summary, found.history, model.to(device), spec, **_preprocessing(path))


@dataclass
class ComparisonResult:
    """A finished comparison: `table` (one dict per variant), `runs` (one per run), `plot()`."""

    comparison: Comparison

    @property
    def folder(self) -> Path:
        return self.comparison.folder

    @property
    def table(self) -> list[dict[str, Any]]:
        return list(self.comparison.document["variants"])

    @property
    def runs(self) -> list[dict[str, Any]]:
        return [
            {"variant": v.label, "seed": r.seed, "status": r.status, **(r.summary or {})}
            for v in self.comparison.variants
            for r in v.runs
        ]

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError:
            raise UsageError(
                "ComparisonResult.to_pandas needs pandas: pip install 'dnntrick[pandas]'"
            ) from None
        return pd.DataFrame(self.table)

    def plot(self) -> Figure:
        from dnntrick.comparison.plots import comparison_figure

        variants = self.comparison.variants
        seeds = max((len(v.runs) for v in variants), default=0)
        return _inline(comparison_figure(variants, f"{len(variants)} variants × {seeds} seeds"))


def compare(
    *inputs: str | Path,
    seeds: int = 3,
    vary: Sequence[str] | None = None,
    overrides: Sequence[str] | None = None,
    jobs: int | None = None,
    baseline: str | None = None,
    target: float | None = None,
    out: str | Path = "runs",
    device: str | None = None,
    quiet: bool = False,
) -> ComparisonResult:
    """Run the specs (× seeds × the `vary` grid) and/or read run directories, then judge each
    variant against the baseline (the first, or `baseline`) by the paired 95% interval."""
    from rich.console import Console

    from dnntrick.comparison.session import run_comparison

    console = Console(stderr=True, highlight=False, quiet=quiet)
    result = run_comparison(
        [*(str(i) for i in inputs), *(overrides or [])],
        seeds=seeds,
        vary=list(vary or []),
        jobs=jobs,
        target=target,
        baseline=baseline,
        out=out,
        device=device,
        console=console,
    )
    return ComparisonResult(result)


def diagnose(
    spec: Any, overrides: Sequence[str] | None = None, *, batch_size: int = 512, **dotted: Any
) -> Diagnosed:
    """Probe `spec`'s freshly built model with one batch: per-layer statistics (`.probe.layers`)
    and the verdict (`.diagnosis.verdict`, its findings with cause and remedy)."""
    from dnntrick.diagnosis.diagnose import diagnose_spec

    resolved, _, _ = resolve_spec(spec, overrides, dotted)
    return diagnose_spec(resolved, batch_size)
