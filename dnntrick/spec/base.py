"""The base of every spec section: `StrictModel` (unknown keys, `.nan`, a `true` for a number,
huge integers, NUL bytes and endless strings are refused in every field) and the checks the
sections share. No torch import (`dnntrick check` and `--help` stay fast).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from dnntrick.errors import suggest

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_INT = 2**32 - 1  # every count and the seed (numpy's and torch's RNGs all take it)
MAX_TEXT = 4096  # characters of any string (a path, a regex); PATH_MAX on Linux
MAX_LAYERS = 1000


def unknown(kind: str, name: str, choices: Any) -> ValueError:
    """The error for a name that is not in its registry, with a "did you mean"."""
    return ValueError(
        f"unknown {kind} {name!r}{suggest(name, choices)} (choices: {', '.join(sorted(choices))})"
    )


class StrictModel(BaseModel):
    # allow_inf_nan=False: `.nan` and `.inf` are refused in every float field
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_value(cls, value: Any, info: ValidationInfo) -> Any:
        """What pydantic's lax mode would let through: `true` for a number (it reads as 1;
        0 and 1 for a boolean stay accepted: they are unambiguous),
        integers too large for the RNGs and counts, NUL bytes and endless strings."""
        field = cls.model_fields[info.field_name or ""]
        for item in value if isinstance(value, list) else [value]:
            _check_plain(item, field.annotation)
        return value


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(arg) for arg in typing.get_args(annotation))


def _check_plain(value: Any, annotation: Any) -> None:
    if isinstance(value, bool):
        if not _admits_bool(annotation):
            raise ValueError(f"expected a number, not {str(value).lower()}")
    elif isinstance(value, int) and abs(value) > MAX_INT:
        shown = value if abs(value) < 10**20 else f"a {len(str(abs(value)))}-digit number"
        raise ValueError(f"{shown} is too large (at most {MAX_INT})")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        if len(value) > MAX_TEXT:
            raise ValueError(f"is {len(value):,} characters long (at most {MAX_TEXT:,})")


def name_to_mapping(value: Any) -> Any:
    """Let `activation: selu` stand for `activation: {name: selu}` (same for init, optimizer)."""
    return {"name": value} if isinstance(value, str) else value


def check_args(kind: str, name: str, spec: BaseModel, fields: set[str], accepted: set[str]) -> None:
    """Refuse the arguments that registry entry `name` does not take."""
    given = {f for f in fields if getattr(spec, f) is not None}
    if extra := sorted(given - accepted):
        takes = ", ".join(sorted(accepted)) or "no arguments"
        raise ValueError(f"{kind} {name!r} does not take {', '.join(extra)} (it takes: {takes})")
