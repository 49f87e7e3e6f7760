"""The search space: `--search KEY=DIST` items parsed and checked against the spec before any run.

DIST is `loguniform:LOW:HIGH`, `uniform:LOW:HIGH`, `int:LOW:HIGH` or `choice:A,B,...` (values as
YAML). Each range's ends and each choice are applied to the spec and validated, so an unknown key
or a value the spec refuses is one line, exit 2, before anything runs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from dnntrick.comparison.variants import KEY_PATTERN, split_values
from dnntrick.errors import SpecError, UsageError, suggest

KINDS = ("loguniform", "uniform", "int", "choice")
EXAMPLE = "e.g. --search train.optimizer.lr=loguniform:1e-4:1e-1"


@dataclass(frozen=True)
class Dimension:
    """One searched key and its distribution."""

    key: str
    kind: str  # loguniform | uniform | int | choice
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    @property
    def text(self) -> str:
        """The DIST as given back, e.g. 'loguniform:0.0001:0.1'."""
        if self.kind == "choice":
            return "choice:" + ",".join(yaml_text(c) for c in self.choices)
        return f"{self.kind}:{self.low:g}:{self.high:g}"

    def suggest(self, trial: Any) -> Any:
        """The value of this key for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")

    def contains(self, value: Any) -> bool:
        """Whether `value` (e.g. the spec's own) lies in this space."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (self.kind != "int" or value == int(value))


def yaml_text(value: Any) -> str:
    """A value as override text that reads back the same (1e-05 → '1.0e-05': YAML 1.1 reads
    '1e-05' as a string)."""
    return str(yaml.safe_dump(value, default_flow_style=True)).removesuffix("\n...\n").strip()


def override(key: str, value: Any) -> str:
    """KEY=VALUE text for a searched value (what the trial's runs record as an override)."""
    return f"{key}={yaml_text(value)}"


def parse_search(items: list[str], option: str = "--search") -> list[Dimension]:
    """`KEY=DIST` items → dimensions, each key once; UsageError (one line) for any bad item."""
    space: list[Dimension] = []
    for item in items:
        dimension = _parse_one(item, option)
        if dimension.key in (d.key for d in space):
            raise UsageError(f"{option} {dimension.key} is given twice; search each key once")
        space.append(dimension)
    if not space:
        raise UsageError(f"give at least one {option} KEY=DIST, {EXAMPLE}")
    return space


def _parse_one(item: str, option: str) -> Dimension:
    key, sep, dist = item.partition("=")
    if not sep or not re.fullmatch(KEY_PATTERN, key):
        raise UsageError(f"{option} {item!r} is not KEY=DIST with a dotted key, {EXAMPLE}")
    kind, _, rest = dist.partition(":")
    if kind not in KINDS:
        raise UsageError(
            f"{option} {item!r}: unknown distribution {kind!r}{suggest(kind, KINDS)} "
            f"(one of {', '.join(KINDS)}), {EXAMPLE}"
        )
    if kind == "choice":
        texts = split_values(rest)
        if not rest or "" in texts:
            raise UsageError(f"{option} {item!r}: give the values as choice:A,B,...")
        choices = tuple(_yaml_value(t, item, option) for t in texts)
        if not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
            raise UsageError(
                f"{option} {item!r}: choices must be numbers, strings or true/false; set a "
                "sub-key instead (e.g. model.activation.alpha=choice:0.5,1.0)"
            )
        if len(set(map(repr, choices))) < len(choices):
            raise UsageError(f"{option} {item!r}: a choice is listed twice")
        return Dimension(key, kind, choices=choices)
    parts = rest.split(":")
    if len(parts) != 2:
        raise UsageError(f"{option} {item!r}: give {kind}:LOW:HIGH, {EXAMPLE}")
    low, high = (_number(p, kind, item, option) for p in parts)
    if not low < high:
        raise UsageError(f"{option} {item!r}: LOW {low:g} must be below HIGH {high:g}")
    if kind == "loguniform" and low <= 0:
        raise UsageError(
            f"{option} {item!r}: a log range needs LOW > 0 (got {low:g}); use uniform for 0"
        )
    return Dimension(key, kind, low, high)


def _number(text: str, kind: str, item: str, option: str) -> float:
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        what = "an integer" if kind == "int" else "a number"
        raise UsageError(f"{option} {item!r}: {text!r} is not {what}") from None
    if not math.isfinite(value):
        raise UsageError(f"{option} {item!r}: {text!r} is not a finite number")
    return float(value)


def _yaml_value(text: str, item: str, option: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise UsageError(f"{option} {item!r}: {text!r} is not a YAML value") from None


def check_space(
    data: dict[str, Any], space: list[Dimension], source: str, option: str = "--search"
) -> None:
    """Validate the spec `data` with each range's ends and each choice; UsageError naming the
    first value the spec refuses (an unknown key is refused at any value)."""
    from dnntrick.spec.config import apply_overrides, validate

    for dim in space:
        ends = [int(dim.low), int(dim.high)] if dim.kind == "int" else [dim.low, dim.high]
        for value in dim.choices or tuple(ends):
            try:
                validate(apply_overrides(data, [override(dim.key, value)]), source)
            except SpecError as err:
                problem = err.problems[0].splitlines()[0]
                raise UsageError(
                    f"{option} {dim.key}={dim.text}: the spec refuses {yaml_text(value)} "
                    f"({problem})"
                ) from None


def spec_values(data: dict[str, Any], space: list[Dimension]) -> dict[str, Any] | None:
    """The spec's own value of each searched key when all lie in the space (the default point,
    run as trial 0 so the best is measured against it), else None."""
    from dnntrick.comparison.variants import flatten, spec_params
    from dnntrick.spec.config import validate

    params = {**flatten(data), **spec_params(validate(data, "spec"))}
    values = {d.key: params.get(d.key) for d in space}
    return values if all(d.contains(values[d.key]) for d in space) else None
