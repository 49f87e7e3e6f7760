"""plan.json: what a comparison runs, written in its folder before its first run, so that
`compare --resume` can finish it (resume.py). It holds the options, the variants and every job's
resolved spec, and a SHA-256 fingerprint of them; `load_plan` refuses a plan that no longer
matches its fingerprint, `match_runs` a run directory whose spec is none of the plan's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnntrick.errors import DnntrickError, UsageError

if TYPE_CHECKING:
    from dnntrick.comparison.variants import Variant

PLAN = "plan.json"
FORMAT = 1
SIGNED = ("format", "options", "variants", "jobs")  # what the fingerprint covers


def fingerprint(document: dict[str, Any]) -> str:
    """SHA-256 of the plan's signed parts, as canonical JSON."""
    signed = {key: document.get(key) for key in SIGNED}
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def write_plan(
    folder: Path,
    variants: list[Variant],
    jobs: list[tuple[int, Variant, int, dict[str, Any]]],
    options: dict[str, Any],
) -> None:
    """plan.json: what this comparison runs, signed, before any run starts. `jobs`: (job id,
    its variant, seed, resolved spec as a plain dict)."""
    from dnntrick.training.rundir import write_json

    described = []
    for variant in variants:
        read = None if variant.specs or variant.error else [r.run_dir for r in variant.runs]
        described.append(
            {
                "label": variant.label,
                "source": variant.source,
                "overrides": variant.overrides,
                "params": variant.params,
                "error": variant.error,
                "exit_code": variant.exit_code,
                "read": read,  # run directories read as they are (not part of this comparison)
            }
        )
    index = {id(v): i for i, v in enumerate(variants)}
    document: dict[str, Any] = {
        "format": FORMAT,
        "options": options,
        "variants": described,
        "jobs": [
            {"id": job, "variant": index[id(variant)], "seed": seed, "spec": spec}
            for job, variant, seed, spec in jobs
        ],
    }
    document["fingerprint"] = fingerprint(document)
    write_json(folder / PLAN, document)


def load_plan(folder: Path) -> dict[str, Any]:
    """The folder's plan, checked against its fingerprint; a one-line UsageError otherwise."""
    where = f"--resume {folder}"
    if not folder.is_dir():
        raise UsageError(f"{where}: no such folder; give the folder a compare wrote its results to")
    path = folder / PLAN
    if not path.is_file():
        why = (
            "its comparison was made before compare could resume"
            if (folder / "comparison.json").is_file()
            else "not a comparison folder"
        )
        raise UsageError(
            f"{where}: {why} (no {PLAN}); give a folder that `dnntrick compare` made, "
            "e.g. runs/compare-<time>"
        )
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UsageError(f"{where}: {PLAN} cannot be read ({err}); it cannot be resumed") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UsageError(f"{where}: {PLAN} is not a comparison plan this dnntrick can read")
    try:
        signed = fingerprint(document)
    except (TypeError, ValueError):
        signed = ""
    if document.get("fingerprint") != signed:
        raise UsageError(
            f"{where}: {PLAN} does not match its fingerprint (it was edited): its specs are not "
            "the ones its runs were made from; start a new compare instead"
        )
    return document


def match_runs(folder: Path, specs: dict[int, dict[str, Any]]) -> dict[int, list[Path]]:
    """job id → its run directories in `folder` (oldest first), matched by spec.yaml. A run
    directory whose spec is no job's means the folder no longer matches its plan: refused."""
    from dnntrick.spec.config import load_spec

    by_spec = {_canonical(spec): job for job, spec in specs.items()}
    found: dict[int, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not (sub / "spec.yaml").is_file():
            continue
        try:
            key = _canonical(load_spec(sub / "spec.yaml").model_dump(mode="json"))
        except DnntrickError:
            key = ""
        if key not in by_spec:
            raise UsageError(
                f"--resume {folder}: {sub.name}/spec.yaml is none of the plan's specs (edited, "
                "or a run of another comparison): the folder's specs no longer match its runs"
            )
        found.setdefault(by_spec[key], []).append(sub)
    return found
