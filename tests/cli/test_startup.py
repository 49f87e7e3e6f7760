"""Start-up: a command imports its own module only (dnntrick/cli COMMANDS); `--help` still
lists every command in order; a mistyped command still gets its suggestion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dnntrick.cli import COMMANDS
from tests.conftest import REPO, run_cli, write_spec

PROBE = """
import sys
from dnntrick.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.startswith("dnntrick.cli."))
heavy = sorted(m for m in ("torch", "rich", "numpy") if m in sys.modules)
print("MODULES", " ".join(loaded), "|", " ".join(heavy), file=sys.stderr)
"""


def loaded_modules(*args: str) -> tuple[list[str], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO, check=False
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES"))
    cli, heavy = line.removeprefix("MODULES").split("|")
    return cli.split(), heavy.split()


@pytest.mark.integration
def test_check_imports_its_own_command_only(tmp_path: Path):
    path = write_spec(tmp_path, "model: {hidden: [16]}\n")
    cli, heavy = loaded_modules("check", str(path))
    assert cli == ["dnntrick.cli.check", "dnntrick.cli.common"]
    assert heavy == []  # no torch, no rich, no numpy
    cli, _ = loaded_modules("--help")
    assert len(cli) == len(COMMANDS) + 1  # every command's module and common.py


@pytest.mark.integration
def test_help_lists_every_command_in_order_and_typos_get_a_suggestion():
    done = run_cli("--help")
    assert done.returncode == 0
    listed = [
        line.split()[1]
        for line in done.stdout.splitlines()
        if line.startswith("│ ") and line.split()[1] in COMMANDS
    ]
    assert listed == list(COMMANDS)
    done = run_cli("chek")
    assert done.returncode == 2
    assert "No such command 'chek'. Did you mean 'check'?" in done.stderr
