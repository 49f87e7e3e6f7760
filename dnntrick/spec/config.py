"""YAML file + KEY=VALUE overrides → a validated Spec, or a SpecError listing every problem.

The YAML loader is PyYAML's SafeLoader (no tag builds a Python object) made stricter: duplicate
keys are errors and `1e-3` reads as a float (YAML 1.1 wants `1.0e-3`).
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dnntrick.errors import SpecError, UsageError, suggest
from dnntrick.spec.schema import Spec
from dnntrick.spec.yaml_limits import (
    MAX_BYTES,
    MAX_DEPTH,
    LimitedComposer,
    LimitError,
    limit_loader,
)


class StrictLoader(LimitedComposer, yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, non-scalar keys, non-plain tags, and documents
    nested too deep or expanding too many aliases (yaml_limits)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a key must be a plain name, not a list or mapping",
                    key_node.start_mark,
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[0-9][0-9_]*[eE][-+]?[0-9]+
                  |\.(?:inf|Inf|INF)|[-+]\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
limit_loader(StrictLoader)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text strictly; a syntax error, duplicate key or Python tag is a SpecError."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except LimitError as err:
        where = f"line {err.mark.line + 1}, column {err.mark.column + 1}: " if err.mark else ""
        raise SpecError(f"{where}{err.problem}", source) from None
    except yaml.reader.ReaderError as err:  # a control character, e.g. NUL
        raise SpecError(
            f"character {err.position + 1}: {err.reason} (code {err.character!r}); "
            "a spec is plain text",
            source,
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or str(err)
        if "could not determine a constructor" in problem:
            problem = (
                problem.replace("could not determine a constructor for the tag", "tag").strip()
                + " is not allowed: a spec holds plain values, never Python objects"
            )
        raise SpecError(f"{where}{problem}", source) from None
    except yaml.YAMLError as err:
        raise SpecError(f"not valid YAML: {' '.join(str(err).split())}", source) from None
    except ValueError as err:  # an integer of more than 4300 digits
        reason = str(err).split(":")[0]
        raise SpecError(
            f"a value cannot be read ({reason}); use a smaller number", source
        ) from None


def read_spec_file(path: Path) -> dict[str, Any]:
    """The raw mapping in a spec file, with `name` defaulting to the file's stem."""
    source = str(path)
    try:
        exists, folder, regular = path.exists(), path.is_dir(), path.is_file()
    except OSError as err:  # a name longer than the file system allows
        source = source if len(source) <= 80 else source[:80] + "…"
        raise SpecError(f"cannot look it up ({err.strerror}); check the path", source) from None
    if not exists:
        raise SpecError("no such file; give the path of a spec .yaml file", source)
    if folder:
        raise SpecError("is a folder; give the path of a spec .yaml file", source)
    if not regular:  # a FIFO or a device (/dev/zero) could be read forever
        raise SpecError("is not a regular file; give the path of a spec .yaml file", source)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise SpecError(
                f"the file is larger than {MAX_BYTES // 1024} KiB; a spec is a few kilobytes",
                source,
            )
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise SpecError(
            f"cannot read the file ({reason}); check its permissions and encoding", source
        ) from None
    data = parse_yaml(text, source)
    if data is None:
        raise SpecError(
            "the file is empty; a spec needs at least `train:` or `model:` settings "
            "(see experiments/ for examples)",
            source,
        )
    if not isinstance(data, dict):
        raise SpecError(
            f"a spec must be a mapping of keys to values (got {type(data).__name__})", source
        )
    data.setdefault("name", re.sub(r"[^A-Za-z0-9._-]", "_", path.stem) or "run")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted KEY=VALUE overrides (values parsed as YAML) to a copy of `data`."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if key.count(".") >= MAX_DEPTH:
            raise UsageError(f"override {key[:60]!r}…: nested more than {MAX_DEPTH} keys deep")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_0-9][\w]*)*", key):
            raise UsageError(
                f"override {item!r} is not KEY=VALUE with a dotted key, e.g. train.epochs=5"
            )
        value = parse_yaml(text, f"override {key}") if text.strip() else None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str):  # `activation: selu` -> {name: selu} so .alpha can be set
                child = {"name": child}
            elif not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_spec(path: Path | str, overrides: list[str] | None = None) -> Spec:
    """Read, override and validate a spec file. Raises SpecError with every problem found."""
    path = Path(path)
    data = apply_overrides(read_spec_file(path), overrides or [])
    return validate(data, str(path))


def validate(data: dict[str, Any], source: str) -> Spec:
    try:
        return Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError([format_error(e) for e in err.errors()], source) from None


def format_error(error: Any) -> str:
    """One pydantic error as `path.to.key: what is wrong (got X); did you mean Y?`."""
    loc = [str(p) for p in error["loc"]]
    kind = error["type"]
    path = ".".join(loc) or "(top level)"
    if kind == "extra_forbidden":
        fields = _fields_at(Spec, loc[:-1])
        hint = suggest(loc[-1], fields)
        return f"{path}: unknown key{hint or ''}" + (
            "" if hint else f" (known keys: {', '.join(fields)})" if fields else ""
        )
    message = error["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message.startswith("String should match pattern"):
        message = "must be letters, digits, '.', '_' or '-', starting with a letter or digit"
    message = message[0].lower() + message[1:] if message else message
    if not loc and re.match(r"[a-z_]+(\.[a-z_]+)*: ", message):  # a cross-field check names its key
        return message
    got = ""
    if kind not in ("missing", "value_error") and "input" in error:
        shown = repr(error["input"])  # a 1000-item list or a 4 kB string: its start
        got = f" (got {shown[:80] + '…' if len(shown) > 80 else shown})"
    return f"{path}: {message}{got}"


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (nested) model at `loc`, for 'did you mean' on unknown keys."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        field = fields.get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [field.alias or name for name, field in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML, in field order."""

    def tidy(node: Any, top: bool = False) -> Any:
        # argument mappings ({name: ..., alpha: null, ...}) hide their unset (default) arguments
        if isinstance(node, dict):
            named = "name" in node and not top
            return {k: tidy(v) for k, v in node.items() if not (named and v is None)}
        return node

    return yaml.safe_dump(
        tidy(spec.model_dump(mode="json", by_alias=True), top=True),
        sort_keys=False,
        default_flow_style=False,
        width=100,
    )
