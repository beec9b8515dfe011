# SPDX-License-Identifier: GPL-2.0-or-later
"""The package's layers, held by walking real imports (ARCHITECTURE.md, "Layers").

Two rules a docstring cannot keep by itself:

* ``vmpatch.hook`` and every module of ``records/``, ``ko/`` and ``fs/`` import
  nothing but the standard library (and those layers) at import time: the
  install hook runs about 5000 times a kernel and must not pay for pyelftools,
  rich, typer or zstandard;
* nothing below ``cli/`` imports ``cli/``: the library never prints or exits.

Each module is imported in a fresh interpreter, and ``sys.modules`` afterwards
is the evidence, so an import hidden behind another module is caught too.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from clirun import python

PACKAGE = Path(__file__).resolve().parent.parent / "vmpatch"

#: Layers whose modules must load with the standard library alone.
LEAN_LAYERS = ("records", "ko", "fs")


def _modules(package_dir: Path) -> list[str]:
    names = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _loaded_after_import(module: str) -> list[str]:
    """Top-level names of every module a fresh interpreter holds after ``import module``."""
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n"
    )
    out = python("-c", code, check=True).stdout
    return list(json.loads(out))


def _third_party(names: list[str]) -> list[str]:
    return [n for n in names if n not in sys.stdlib_module_names and n != "vmpatch"]


LEAN_MODULES = ["vmpatch.hook", "vmpatch.streams", "vmpatch.frozen"] + [
    name for layer in LEAN_LAYERS for name in _modules(PACKAGE / layer)
]


def test_the_lean_layers_exist() -> None:
    """The walk below must have something to walk (a renamed layer would pass it empty)."""
    for layer in LEAN_LAYERS:
        assert len(_modules(PACKAGE / layer)) >= 2, layer


@pytest.mark.parametrize("module", LEAN_MODULES)
def test_lean_modules_import_only_the_standard_library(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert "vmpatch" in loaded  # the import really happened in the child
    assert _third_party(loaded) == [], f"{module} pulls in {_third_party(loaded)}"


def test_the_walk_sees_a_third_party_import() -> None:
    """The check can fail: the CLI layer does load typer."""
    assert "typer" in _third_party(_loaded_after_import("vmpatch.cli.app"))


def _imports_of(path: Path) -> set[str]:
    """Every vmpatch module a source file names in an import, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("vmpatch")}


#: ``python -m vmpatch`` is an entry point, like the CLI it starts.
ENTRY_POINTS = {PACKAGE / "__main__.py"}
LIBRARY_FILES = [
    path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "cli" not in path.relative_to(PACKAGE).parts and path not in ENTRY_POINTS
]


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_library_never_imports_the_cli(path: Path) -> None:
    offending = sorted(n for n in _imports_of(path) if n.startswith("vmpatch.cli"))
    assert offending == [], f"{path.relative_to(PACKAGE)} imports {offending}"


def test_the_cli_check_can_fail() -> None:
    """The AST walk does see CLI imports where they are (in the CLI itself)."""
    assert any(
        name.startswith("vmpatch.cli")
        for name in _imports_of(PACKAGE / "cli" / "commands" / "ko.py")
    )
