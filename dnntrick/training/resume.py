"""What a `--resume` must pass before anything in the run directory is touched: the folder is a
run's, unfinished (or --force), its newest checkpoint loads, and the spec is the checkpoint's,
or differs only where --force may change it (never the optimizer: its state would not carry
over). Both specs are compared as this version of dnntrick resolves them, so a field added
since the checkpoint was written, at its default, is no change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnntrick.errors import UsageError
from dnntrick.training.checkpoint import Loaded, load_latest


def spec_diff(old_yaml: str, new_yaml: str) -> list[str]:
    """Dotted keys whose values differ between two resolved specs, as `key: old → new`."""
    import yaml

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                out.update(flat(value, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: node}

    old, new = flat(yaml.safe_load(old_yaml)), flat(yaml.safe_load(new_yaml))
    missing = object()
    return [
        f"{key}: {old.get(key, '(unset)')} → {new.get(key, '(unset)')}"
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]


def resolved(spec_yaml: str) -> str:
    """`spec_yaml` as this version resolves it (new fields at their defaults); as it is when it
    no longer validates (a spec of another version: spec_diff then names what differs)."""
    import yaml

    from dnntrick.spec.config import dump_spec
    from dnntrick.spec.schema import Spec

    try:
        return dump_spec(Spec.model_validate(yaml.safe_load(spec_yaml)))
    except Exception:  # pydantic's ValidationError, a YAML error: keep the text to compare
        return spec_yaml


def open_resume(run_dir: Path, spec_yaml: str, force: bool) -> Loaded:
    """The checkpoint to continue `run_dir` from, after checking that the spec is unchanged
    (a changed spec is refused with the differing keys unless `force`)."""
    if not (run_dir / "spec.yaml").is_file():
        raise UsageError(f"--resume {run_dir}: not a run directory (no spec.yaml)")
    if (run_dir / "summary.json").exists() and not force:
        raise UsageError(
            f"--resume {run_dir}: the run already finished (summary.json exists); "
            "to train it further, raise train.epochs and pass --force"
        )
    loaded = load_latest(run_dir)
    loaded.state["spec"] = resolved(loaded.state["spec"])  # in memory: the file stays as it is
    changes = spec_diff(loaded.state["spec"], spec_yaml)
    if changes and not force:
        raise UsageError(
            f"--resume {run_dir}: the spec differs from the checkpoint's ({'; '.join(changes)}); "
            "resume with the same spec, or pass --force to continue with the changes"
        )
    for change in changes:  # --force too: Adam's moments are no SGD momentum
        if change.startswith("train.optimizer.name: "):
            old, new = change.removeprefix("train.optimizer.name: ").split(" → ")
            raise UsageError(
                f"--resume {run_dir}: the checkpoint's optimizer is {old}, the spec's is {new};"
                " an optimizer's state cannot carry over to another: resume with "
                f"train.optimizer.name={old}, or start a new run"
            )
    return loaded
