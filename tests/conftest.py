# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared fixtures: paths to the committed test data and tool requirements.

A test that needs an external program (a cross toolchain, llvm-strip, xz)
calls :func:`require_tool`. On a developer's machine without it the test is
skipped with the reason printed; with ``CI=true`` a missing tool fails the
test instead, so CI can never go green by skipping what matters.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest
from clirun import tool

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


def built_modules(tree: Path) -> list[Path]:
    """The ``.ko`` files a build tree's modules.order names, in its order."""
    return [tree / (line[:-2] + ".ko") for line in (tree / "modules.order").read_text().split()]


@pytest.fixture
def proved(tmp_path: Path) -> Path:
    """The miniature kbuild tree, rooted and proved the way kbuild does it (`cat`)."""
    from clirun import vmpatch

    tree = tmp_path / "linux"
    shutil.copytree(TESTDATA / "kbuild-x86_64", tree)
    assert vmpatch("patch", "--from-tree", tree, tree / "vmlinux").returncode == 0
    for line in (tree / "modules.order").read_text().splitlines():
        stem = tree / line[:-2]
        ko = stem.with_suffix(".ko")
        ko.write_bytes(ko.read_bytes() + stem.with_suffix(".merkle").read_bytes())
    return tree


@functools.cache
def tool_version(name: str) -> str | None:
    """The first line of ``NAME --version`` under ``LC_ALL=C``, or None when absent."""
    path = shutil.which(name)
    if path is None:
        return None
    done = tool(path, "--version", text=True, check=False)
    return (done.stdout.splitlines() or [f"{name}: no --version output"])[0]


def pytest_report_header() -> list[str]:
    """Name the oracles' versions: readelf's answers are evidence, so say whose they are."""
    return [f"oracle readelf: {tool_version('readelf') or 'NOT INSTALLED'} (run under LC_ALL=C)"]


@pytest.fixture(scope="session")
def readelf() -> str:
    """``readelf``'s path, for tests that judge by it: absent, the test fails (never skips)."""
    path = shutil.which("readelf")
    if path is None:
        pytest.fail("readelf is the oracle and is not installed (apt-get install binutils)")
    version = tool_version("readelf")
    assert version and "GNU readelf" in version, f"{path} is not GNU readelf: {version}"
    return path


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The item count of every call of vmpatch.fs.forkmap.fork_map (really called):
    evidence that a test took the forked path, or did not."""
    from typing import Any

    from vmpatch.fs import forkmap

    calls: list[int] = []
    real = forkmap.fork_map

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(forkmap, "fork_map", counting)
    return calls
