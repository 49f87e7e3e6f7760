"""Every `dnntrick …` command that README.md and docs/*.md show in a ```sh block still works:
the spec files it names exist, `dnntrick check SPEC OVERRIDES` accepts them (compare: each spec
with each override and each --vary value), and `dnntrick <command> --help` lists every option it
uses. Nothing trains: this is the fast lane's check of the docs."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from dnntrick import cli as dnntrick_cli

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PREFIXES = ("dnntrick ", ".venv/bin/dnntrick ")
CHECKED = {"train", "transfer", "pretrain", "diagnose", "lr-find", "check"}  # SPEC [KEY=VALUE]
OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")


@dataclass(frozen=True)
class Shown:
    page: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def shown_commands() -> list[Shown]:
    """The command lines of every ```sh block (continuation lines joined)."""
    found = []
    for page in PAGES:
        in_sh, pending, start = False, "", 0
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                in_sh = line.strip() == "```sh"
                continue
            if not in_sh:
                continue
            if pending:
                pending += " " + line.strip()
            elif line.startswith(PREFIXES):
                pending, start = line.strip(), number
            if pending and not pending.endswith("\\"):
                found.append(Shown(page.relative_to(REPO).as_posix(), start, pending))
                pending = ""
            elif pending:
                pending = pending[:-1].rstrip()
    return found


COMMANDS = shown_commands()


def click_command(words: list[str]) -> tuple[list[str], Any]:
    """The (sub)command path that `words` start with, and its (typer's) click command."""
    dnntrick_cli._register()
    command: Any = typer.main.get_command(dnntrick_cli.app)
    path = []
    while words and words[0] in getattr(command, "commands", {}):
        path.append(words.pop(0))
        command = command.commands[path[-1]]
    assert path, f"not a dnntrick command: {words}"
    return path, command


def split(
    words: list[str], command: Any, where: object = ""
) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(positional words, [(option, value or None)]) as click would read them."""
    options = {
        name: param
        for param in command.params
        if param.param_type_name == "option"
        for name in param.opts
    }
    positional: list[str] = []
    given: list[tuple[str, str | None]] = []
    while words:
        word = words.pop(0)
        if word.startswith("-") and not re.fullmatch(r"-\d.*", word):
            name, eq, value = word.partition("=")
            param = options.get(name)
            assert param is not None, f"{where}: unknown option {name}"
            flag = param.is_flag or param.count
            given.append((name, None if flag else value if eq else words.pop(0)))
        else:
            positional.append(word)
    return positional, given


def top_level_split(values: str) -> list[str]:
    """--vary's values: split at commas outside [...] and {...}."""
    parts, depth, current = [], 0, ""
    for char in values:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def test_the_docs_show_commands() -> None:
    pages = {shown.page for shown in COMMANDS}
    assert "README.md" in pages and len(COMMANDS) >= 15, [str(c) for c in COMMANDS]
    for needed in ("train", "compare", "transfer", "pretrain", "diagnose", "lr-find", "check"):
        assert any(f"dnntrick {needed} " in shown.text for shown in COMMANDS), needed


@pytest.mark.parametrize("shown", COMMANDS, ids=str)
def test_shown_command_is_valid(shown: Shown, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("COLUMNS", "200")
    words = shlex.split(shown.text, comments=True)[1:]
    path, command = click_command(words)
    positional, given = split(words, command, shown)

    code, out, err = cli(*path, "--help")
    assert code == 0, err
    for option, _ in given:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", out), (
            f"{shown}: `dnntrick {' '.join(path)} --help` does not list {option}"
        )

    specs = [w for w in positional if w.endswith((".yaml", ".yml"))]
    overrides = [w for w in positional if OVERRIDE.match(w) and w not in specs]
    others = [w for w in positional if w not in specs and w not in overrides]
    for spec in specs:
        assert (REPO / spec).is_file(), f"{shown}: {spec} does not exist"

    name = path[0]
    if name in CHECKED and not specs and any(o == "--resume" for o, _ in given):
        return  # `train --resume RUN_DIR`: the run's own spec, not in the repository
    if name in CHECKED:
        assert len(specs) == 1 and not others, f"{shown}: expected one SPEC and overrides"
        code, _, err = cli("check", specs[0], *overrides)
        assert code == 0, f"{shown}: dnntrick check says {err.strip()}"
    elif name == "compare":
        varied = [
            [f"{key}={value}" for value in top_level_split(values)]
            for key, _, values in ((v or "").partition("=") for o, v in given if o == "--vary")
        ]
        extras = [[], *([one] for values in varied for one in values)]
        for spec in specs:
            for extra in extras:
                args = [spec, *overrides, *extra]
                code, _, err = cli("check", *args)
                assert code == 0, f"{shown}: dnntrick check {' '.join(args)}: {err.strip()}"
