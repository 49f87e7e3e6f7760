"""The layout's rules: no import cycles between dnntrick's modules or between its packages (every
import counts: module-level, inside functions and under TYPE_CHECKING), the registries import
nothing of the spec that imports them, and the CLI stays a thin layer.

`python -m tests.test_layout` prints the package graph and the cycles (none)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "dnntrick"
REGISTRIES = ("activations", "initializers", "optimizers", "schedules")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (seen by the type checker alone)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            found |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return found


def import_graph(runtime: bool = False) -> dict[str, set[str]]:
    """dnntrick module -> the dnntrick modules it imports anywhere in the file (runtime=True:
    leaving out the imports under TYPE_CHECKING)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = type_only(tree) if runtime else set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def package_of(module: str) -> str:
    """dnntrick.training.step -> dnntrick.training; dnntrick.errors stays itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        edges = packages.setdefault(package_of(module), set())
        edges |= {package_of(t) for t in imported} - {package_of(module), "dnntrick"}
    return packages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_no_package_imports_itself_back_at_run_time():
    """Folders stack: cli → runner → reuse, diagnosis, comparison → training → tricks, data →
    spec. (Annotations of tricks/ and data/ may name spec types: under TYPE_CHECKING only.)"""
    assert cycles(package_graph(import_graph(runtime=True))) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("registry", REGISTRIES)
def test_registries_do_not_import_the_spec(registry: str):
    """The spec imports the registries to validate names; they must not import it back, not
    even for annotations."""
    assert import_graph()[f"dnntrick.tricks.{registry}"] <= {"dnntrick.errors"}


def test_commands_are_thin():
    """Each CLI module parses and calls the library: at most 160 lines (compare's ~100 are its
    option declarations)."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "cli").glob("*.py")}
    assert max(sizes.values()) <= 160, sizes


if __name__ == "__main__":
    packages = package_graph(import_graph(runtime=True))
    for package, imported in sorted(packages.items()):
        print(f"{package:<22} -> {', '.join(sorted(imported)) or '-'}")
    print("module cycles (every import):", cycles(import_graph()) or "none")
    print("package cycles (run time):", cycles(packages) or "none")
