# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared fixtures: paths to the committed test data and tool requirements.

A test that needs an external program (a cross toolchain, llvm-strip, xz)
calls :func:`require_tool`. On a developer's machine without it the test is
skipped with the reason printed; with ``CI=true`` a missing tool fails the
test instead, so CI can never go green by skipping what matters.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "testdata"
SCRIPTS = ROOT / "scripts"

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip (or under CI=true, fail) the calling test unless ``condition``."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true forbids skipping: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, package: str | None = None) -> str:
    """Return the path of program ``name`` or skip/fail the test."""
    path = shutil.which(name)
    hint = f" (apt-get install {package})" if package else ""
    require(path is not None, f"{name} is not installed{hint}")
    assert path is not None
    return path


@pytest.fixture
def testdata() -> Path:
    return TESTDATA
