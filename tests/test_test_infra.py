# SPDX-License-Identifier: GPL-2.0-or-later
"""The test suite's own rules: every child process goes through ``tests/clirun.py``.

clirun states in one place the environment a child sees (this checkout on
``PYTHONPATH``, no terminal variables, ``LC_ALL=C`` for external tools, root
dropped to ``nobody`` on request). A test file that starts a process another
way silently sees a different environment, so this walks every test module's
syntax tree and fails on any other way to start one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

TESTS = ROOT / "tests"

#: The one module allowed to start processes.
RUNNER = "clirun.py"

#: Modules whose import or use starts processes outside clirun. Not
#: ``multiprocessing``: its pool workers run library calls of this checkout
#: concurrently (test_kotool's racing appends), not a program whose environment
#: could differ.
PROCESS_MODULES = frozenset({"subprocess", "pty", "asyncio.subprocess"})

#: ``os`` functions that start or replace a process (a hand-rolled fork too:
#: dropping privileges is clirun's ``unprivileged=True``).
OS_STARTERS = frozenset(
    {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp"}
    | {f"spawn{tail}" for tail in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")}
    | {f"exec{tail}" for tail in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")}
)


def _starts_processes(name: str) -> bool:
    """``name`` (``subprocess``, ``subprocess.run``, ``os.fork``) starts processes."""
    head, _, attr = name.partition(".")
    if head == "os":
        return attr in OS_STARTERS
    return name in PROCESS_MODULES or head in PROCESS_MODULES


def process_starts(source: str, filename: str = "<test>") -> list[str]:
    """Each place in ``source`` that imports a process module or names an ``os`` starter."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names = [f"{node.value.id}.{node.attr}"] if node.value.id == "os" else []
        else:
            continue
        found += [f"{filename}:{node.lineno}: {n}" for n in names if _starts_processes(n)]
    return found


def test_the_check_sees_each_way_to_start_a_process() -> None:
    """The checker itself can fail: each spelling below is caught, clirun's calls are not."""
    for spelling in (
        "import subprocess",
        "import subprocess as sp",
        "from subprocess import run",
        "import asyncio.subprocess",
        "import os\nos.system('true')",
        "import os\nos.fork()",
        "import os\nos.execvp('true', ['true'])",
        "from os import posix_spawn",
        "import pty",
    ):
        assert process_starts(spelling), spelling
    assert process_starts("from clirun import tool\ntool('true')\nimport os\nos.getpid()") == []


@pytest.mark.parametrize(
    "path",
    sorted(p for p in TESTS.glob("*.py") if p.name != RUNNER),
    ids=lambda p: p.name,
)
def test_no_test_module_starts_processes_itself(path: Path) -> None:
    assert process_starts(path.read_text(), path.name) == [], (
        f"{path.name}: start processes through tests/{RUNNER} (vmpatch, hook, python, tool, "
        "spawn...), so that every child sees the environment stated there"
    )
