"""Limits on what a spec's YAML may cost to read: size, nesting depth, alias expansion, tags.

A spec is a few kilobytes of plain mappings, lists and scalars, at most four or five levels deep.
PyYAML's composer recurses once per level (10^5 nested `[` end in a RecursionError) and its aliases
share one node that every later step (pydantic, deepcopy, error messages) walks once per use
(nine levels of nine aliases are 9^9 values: a "billion laughs"). LimitedComposer counts both
while composing, before anything is built, so a hostile file costs milliseconds, never memory.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 256 * 1024  # the largest shipped spec is ~1.3 kB
MAX_DEPTH = 32  # a spec nests 4 levels (train.schedule.boundaries[0])
MAX_NODES = 20_000  # values after alias expansion (model.hidden: 1000 layers is 1000 nodes)
# tags a spec may hold: plain scalars, lists and mappings (no bytes, sets, dates, pairs)
PLAIN_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "seq", "map")
}


class LimitError(yaml.YAMLError):
    """The document goes past one of the limits; `mark` says where."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem, self.mark = problem, mark


class LimitedComposer(yaml.composer.Composer):
    """A Composer that refuses documents nested deeper than MAX_DEPTH or whose aliases expand to
    more than MAX_NODES values. Mixed into the loader before SafeLoader's own composer."""

    def compose_document(self) -> Any:
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[attr-defined]  # the Parser, mixed in beside
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:  # `&a [*a]`: the anchor is still being composed
                raise LimitError(
                    f"alias *{event.anchor} refers to a value that contains it; "
                    "a spec cannot be recursive",
                    event.start_mark,
                )
            return self._count(size, event.start_mark, node)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise LimitError(
                f"nested more than {MAX_DEPTH} levels deep; a spec needs about 4", event.start_mark
            )
        before = self._nodes
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._nodes += 1
        self._sizes[id(node)] = self._nodes - before  # itself and everything inside
        return self._count(0, event.start_mark, node)

    def _count(self, extra: int, mark: Any, node: Any) -> Any:
        self._nodes += extra
        if self._nodes > MAX_NODES:
            raise LimitError(
                f"more than {MAX_NODES:,} values (aliases counted once per use); "
                "a spec holds a few dozen",
                mark,
            )
        return node


def refuse_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """Constructor for SafeLoader's non-plain tags (!!binary, !!set, !!timestamp, !!omap,
    !!pairs): a spec holds strings, numbers, booleans, lists and mappings only."""
    raise yaml.constructor.ConstructorError(
        None,
        None,
        f"tag {node.tag!r} is not allowed: a spec holds plain strings, numbers, booleans, lists "
        "and mappings",
        node.start_mark,
    )


def limit_loader(loader: type[yaml.SafeLoader]) -> None:
    """Refuse every non-plain tag in `loader`; a bare date (`name: 2024-01-31`) is a string."""
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag in PLAIN_TAGS]
        for first, resolvers in loader.yaml_implicit_resolvers.items()
    }
    for tag in list(loader.yaml_constructors):
        if tag is not None and tag not in PLAIN_TAGS:
            loader.add_constructor(tag, refuse_tag)
