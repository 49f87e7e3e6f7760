"""docs/spec.md is generated from the spec's pydantic models: it must match `render()`."""

from __future__ import annotations

import subprocess
import sys

from pydantic import BaseModel

from dnntrick.spec import schema
from dnntrick.spec.reference import DOCS_SPEC, main, render, write


def test_docs_spec_is_up_to_date() -> None:
    assert DOCS_SPEC.is_file(), "docs/spec.md is missing: run `make docs`"
    assert DOCS_SPEC.read_text(encoding="utf-8") == render(), (
        "docs/spec.md differs from the spec's field descriptions: run `make docs`"
    )


def test_every_field_of_every_section_is_listed() -> None:
    text = render()
    cases: list[tuple[str, type[BaseModel]]] = [
        ("data", schema.DataSpec),
        ("data.augment", schema.AugmentSpec),
        ("model.dropout", schema.DropoutSpec),
        ("train", schema.TrainSpec),
        ("train.schedule", schema.ScheduleSpec),
        ("transfer", schema.TransferSpec),
        ("pretrain", schema.PretrainSpec),
    ]
    for path, model in cases:
        section = text.split(f"## `{path}`\n", 1)[1].split("\n## ", 1)[0]
        for name, info in model.model_fields.items():
            assert f"| `{info.alias or name}` |" in section, (path, name)
    assert "| `from` | str or null | `null` |" in text  # the alias, not the attribute name
    assert "| `val_from` | `first` \\| `last` | `last` |" in text  # Literal choices, escaped
    assert "| `hidden` | list of int > 0 | `[300, 100]` |" in text  # a default_factory
    assert "| `rate` | float ≥ 0, < 1 | *required* |" in text
    assert "| `cosine` | `warmup` (0), `min_lr` (0.0), `unit` (step) |" in text  # a registry


def test_write_is_atomic_and_cli_prints(tmp_path, capsys) -> None:
    target = tmp_path / "docs" / "spec.md"
    write(target)
    assert target.read_text(encoding="utf-8") == render()
    assert [p.name for p in target.parent.iterdir()] == ["spec.md"]  # no temp file left
    assert main([]) == 0 and capsys.readouterr().out == render()
    assert main(["--bogus"]) == 2


def test_rendering_imports_no_torch() -> None:
    code = "import sys, dnntrick.spec.reference as r; r.render(); print('torch' in sys.modules)"
    root = DOCS_SPEC.parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
