"""Property: whatever a spec or an override says, `dnntrick check` answers within 1 s with exit 0
or 2 and never a traceback; a few such specs also go through `train` on the tiny data set.

The specs come from the spec schema itself: every field of every pydantic model under Spec, with
values at and beyond its bounds (from the field's constraints), of the wrong type, NaN/inf,
huge integers, booleans, NUL bytes, and random dotted keys and raw YAML text.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from dnntrick.spec.schema import Spec
from dnntrick.tricks.activations import ACTIVATIONS
from dnntrick.tricks.initializers import INITIALIZERS
from dnntrick.tricks.optimizers import OPTIMIZERS
from dnntrick.tricks.schedules import SCHEDULES

NAMES = {
    "activation": sorted(ACTIVATIONS),
    "init": sorted(INITIALIZERS),
    "optimizer": sorted(OPTIMIZERS),
    "schedule": sorted(SCHEDULES),
}
MAX_INT = 2**32 - 1  # spec.MAX_INT: the largest count or seed
NASTY_FLOATS = [0.0, -0.0, -1.0, 1e-320, 5e-324, 1e-300, 1e300, 1.7e308, "inf", "-inf", "nan"]
NASTY_INTS = [0, -1, 1, 2, MAX_INT, MAX_INT + 1, 2**63, 2**64, -(2**63) - 1, 10**30]
NASTY_TEXT = ["", "\x00", "a\x00b", "../../x", "/etc", "x" * 5000, "é", " ", "~", "null", "*"]


def fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, list[Any]]]:
    """(dotted path, annotation, constraints) of every leaf field under `model`."""
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        inner = [a for a in _flatten(info.annotation) if isinstance(a, type)]
        sub = [a for a in inner if issubclass(a, BaseModel)]
        if sub:
            out.append((path, sub[0], []))  # the section itself (null, a name, a mapping)
            out += fields(sub[0], path + ".")
        else:
            out.append((path, info.annotation, list(info.metadata)))
    return out


def _flatten(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [annotation] if not args else [a for arg in args for a in _flatten(arg)]


FIELDS = fields(Spec)


def bound_values(constraints: list[Any], annotation: Any) -> list[Any]:
    """Values at and just beyond each bound of a field (and of its list items)."""
    found: list[Any] = []
    for arg in [*constraints, *_flatten(annotation)]:
        for kind in (at.Gt, at.Ge, at.Lt, at.Le):
            if isinstance(arg, kind):
                bound = getattr(arg, kind.__name__.lower())
                found += [bound, bound - 1, bound + 1, bound - 1e-9, bound + 1e-9]
        if isinstance(arg, at.MaxLen):
            found += [[1] * arg.max_length, [1] * (arg.max_length + 1)]
    return found


def value_for(path: str, annotation: Any, constraints: list[Any]) -> st.SearchStrategy[Any]:
    """Plausible, boundary and wrong values for one field."""
    leaf = path.rsplit(".", 1)[-1]
    choices: list[Any] = [None, True, False, *NASTY_INTS, *NASTY_FLOATS, *NASTY_TEXT[:4], [], {}]
    choices += bound_values(constraints, annotation)
    choices += [
        a for arg in _flatten(annotation) for a in typing.get_args(arg) if isinstance(a, str)
    ]
    choices += [a for a in _flatten(annotation) if isinstance(a, str)]  # Literal choices
    section = leaf if leaf in NAMES else path.split(".")[-2] if "." in path else ""
    if leaf == "name" and section in NAMES:
        choices += NAMES[section] + [NAMES[section][0] + "x"]
    elif leaf in NAMES:
        choices += NAMES[leaf]
    return st.one_of(
        plausible(path, annotation, constraints),
        plausible(path, annotation, constraints),
        st.sampled_from(choices),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(min_value=-5, max_value=2**40), max_size=5),
        st.text(max_size=20),
        st.dictionaries(
            st.sampled_from(["name", "rate", "lr", "x", "momentum"]), st.integers(-2, 2)
        ),
    )


def plausible(path: str, annotation: Any, constraints: list[Any]) -> st.SearchStrategy[Any]:
    """A value of the field's own type within its bounds (so that many specs are valid)."""
    kinds = [a for a in _flatten(annotation) if isinstance(a, type)]
    literals = [a for a in _flatten(annotation) if isinstance(a, str)]
    bounds = {
        type(c).__name__.lower(): getattr(c, type(c).__name__.lower())
        for c in [*constraints, *_flatten(annotation)]
        if isinstance(c, at.Gt | at.Ge | at.Lt | at.Le)
    }
    lo = bounds.get("ge", bounds.get("gt", 0))
    hi = bounds.get("le", bounds.get("lt", lo + 100))
    leaf = path.rsplit(".", 1)[-1]
    if literals:
        return st.sampled_from(literals)
    if leaf == "name" and path.split(".")[-2:-1] and path.split(".")[-2] in NAMES:
        return st.sampled_from(NAMES[path.split(".")[-2]])
    if any(isinstance(k, type) and issubclass(k, BaseModel) for k in kinds):
        return st.none()
    if list in [typing.get_origin(a) for a in [annotation, *typing.get_args(annotation)]]:
        return st.lists(st.integers(1, 64), max_size=3)
    if bool in kinds:
        return st.booleans()
    if int in kinds:
        return st.integers(int(lo) + ("gt" in bounds), int(lo) + 50)
    if float in kinds:
        return st.floats(lo, hi, exclude_min="gt" in bounds, exclude_max="lt" in bounds)
    return st.sampled_from(["edge", "run-1", "a.b"])


def as_yaml(value: Any) -> str:
    """An override's value as YAML text: JSON is YAML, and the specials by their YAML names."""
    if isinstance(value, float) or value in ("inf", "-inf", "nan"):
        text = str(value)
        return {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}.get(text, repr(value))
    return json.dumps(value)


@st.composite
def overrides(draw: st.DrawFn) -> list[str]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["field", "field", "field", "raw", "key"]))
        if kind == "field":
            path, annotation, constraints = draw(st.sampled_from(FIELDS))
            out.append(f"{path}={as_yaml(draw(value_for(path, annotation, constraints)))}")
        elif kind == "raw":  # any text as the value: YAML syntax errors, tags, anchors
            path = draw(st.sampled_from(FIELDS))[0]
            out.append(f"{path}={draw(st.text(max_size=30))}")
        else:  # a random dotted key
            parts = draw(
                st.lists(
                    st.sampled_from(["train", "model", "x", "a1", "_", "data"]),
                    min_size=1,
                    max_size=4,
                )
            )
            out.append(f"{'.'.join(parts)}={draw(st.integers(-3, 3))}")
    return out


def run_cli(*args: str) -> tuple[int, str, str, float]:
    from dnntrick.cli import main

    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


def assert_answered(code: int, err: str, allowed: tuple[int, ...]) -> None:
    event(f"exit {code}")
    assert code in allowed, err
    assert "Traceback" not in err, err
    if code != 0:
        assert err.startswith("error: "), err  # one line, or "N problems" and one per line


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("property") / "spec.yaml"
    path.write_text("name: prop\ntrain: {epochs: 1}\n")
    assert run_cli("check", str(path))[0] == 0  # the first call imports the CLI: not timed
    return path


@pytest.mark.slow
@settings(
    max_examples=200,
    deadline=None,  # the 1 s bound is asserted below, on the command alone
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(overrides())
def test_check_answers_every_spec_within_a_second(base: Path, overrides: list[str]):
    code, _, err, seconds = run_cli("check", str(base), *overrides)
    assert_answered(code, err, (0, 2))
    assert seconds < 1.0, f"{seconds:.2f} s for {overrides}"


def spec_text() -> st.SearchStrategy[str]:
    """A whole spec file: some fields set from the schema, as YAML text."""
    return st.lists(
        st.sampled_from([f for f in FIELDS if "." not in f[0] or f[0].count(".") == 1]),
        min_size=1,
        max_size=4,
        unique_by=lambda f: f[0],
    ).flatmap(
        lambda chosen: st.tuples(*(value_for(*f) for f in chosen)).map(
            lambda values: _nest({f[0]: v for f, v in zip(chosen, values, strict=True)})
        )
    )


def _nest(flat: dict[str, Any]) -> str:
    import yaml

    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[leaf] = value
    return yaml.safe_dump(tree)


@pytest.mark.slow
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec_text())
def test_check_answers_every_spec_file_within_a_second(base: Path, tmp_path: Path, spec_text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text)
    code, _, err, seconds = run_cli("check", str(path))
    assert_answered(code, err, (0, 2))
    assert seconds < 1.0, f"{seconds:.2f} s for {spec_text!r}"


# train: fields whose values cannot make a tiny run long (no sizes, counts of samples or epochs)
CHEAP = [
    f
    for f in FIELDS
    if f[0].split(".")[0] in ("train", "model", "seed", "device")
    and not any(
        word in f[0]
        for word in ("hidden", "epochs", "mc_dropout", "diagnostics", "batch_size", "samples")
    )
]


@pytest.mark.slow
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.sampled_from(CHEAP), min_size=1, max_size=3).flatmap(
        lambda chosen: st.tuples(
            *(st.one_of(plausible(*f), plausible(*f), value_for(*f)) for f in chosen)
        ).map(lambda values: [f"{f[0]}={as_yaml(v)}" for f, v in zip(chosen, values, strict=True)])
    )
)
def test_train_answers_a_sample_of_specs(base: Path, tiny_root: Path, tmp_path: Path, overrides):
    small = [
        f"data.root={tiny_root}",
        "data.val_size=50",
        "data.train_limit=64",
        "model.hidden=[16]",
    ]
    code, _, err, seconds = run_cli(
        "train", str(base), *small, *overrides, "--quiet", "--out", str(tmp_path / "runs")
    )
    assert_answered(code, err, (0, 2, 3))  # 3: a legal but absurd lr diverged
    assert seconds < 60
