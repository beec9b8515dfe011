# SPDX-License-Identifier: GPL-2.0-or-later
"""The code stays ruff-clean and type-checks: style is tested like behaviour.

Runs the same checks a reviewer would, so a change that breaks them fails
the suite instead of waiting for someone to notice.
"""

from __future__ import annotations

import pytest
from clirun import Run, python
from conftest import ROOT, require

SOURCES = [
    "vmpatch",
    "tests",
    "scripts/make-testdata",
    "scripts/make-testdata-installed",
    "scripts/make-manpage",
    "scripts/bench",
    "scripts/fuzz",
]


def _run(*args: str) -> Run:
    return python("-m", *args, cwd=ROOT)


def _available(module: str) -> bool:
    return _run(module, "--version").returncode == 0


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", *SOURCES), ("ruff", "format", "--check", *SOURCES)],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff(command: tuple[str, ...]) -> None:
    require(_available("ruff"), "ruff is not installed (pip install -e '.[test]')")
    result = _run(*command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    require(_available("mypy"), "mypy is not installed (pip install -e '.[test]')")
    result = _run("mypy", "vmpatch")
    assert result.returncode == 0, result.stdout + result.stderr
