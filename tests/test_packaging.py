# SPDX-License-Identifier: GPL-2.0-or-later
"""What `pip install` puts on a system besides the package: the man page (issue 8, item 12).

The wheel is built from a copy of the sources with pip, as a user or a
distribution would, and then installed into a fresh virtual environment;
``man -w vmpatch`` with that environment's ``bin`` first on PATH must find
the page (man-db maps ``<venv>/bin`` to ``<venv>/share/man``), and the page
must be the committed ``docs/vmpatch.1``.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest
from clirun import python, tool
from conftest import ROOT, require_tool

from vmpatch import __version__

MANPAGE = ROOT / "docs" / "vmpatch.1"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built by pip from a clean copy (no build/ left behind)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("vmpatch", "docs"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    out = work / "dist"
    proc = python("-m", "pip", "wheel", "-q", "--no-deps", "-w", out, source)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("vmpatch-*.whl")
    return built


def test_wheel_carries_the_man_page(wheel: Path) -> None:
    """As a data file under share/man/man1: <prefix>/share/man/man1/vmpatch.1 once installed."""
    wanted = f"vmpatch-{__version__}.data/data/share/man/man1/vmpatch.1"
    with zipfile.ZipFile(wheel) as archive:
        assert wanted in archive.namelist(), archive.namelist()
        assert archive.read(wanted) == MANPAGE.read_bytes()


def test_man_finds_the_page_in_a_venv(wheel: Path, tmp_path: Path) -> None:
    man = require_tool("man", "man-db")
    venv = tmp_path / "venv"
    python("-m", "venv", "--without-pip", venv, check=True)
    # Not this checkout on PYTHONPATH: its editable install's vmpatch.egg-info would make
    # pip answer "already installed" and put nothing in the venv.
    python(
        "-m", "pip", "--python", venv / "bin" / "python",
        "install", "-q", "--no-deps", "--no-index", wheel,
        env={"PYTHONPATH": None}, check=True, timeout=300,
    )  # fmt: skip
    installed = venv / "share" / "man" / "man1" / "vmpatch.1"
    assert installed.read_bytes() == MANPAGE.read_bytes()
    env: dict[str, str | None] = {"MANPATH": None, "MANOPT": None}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])
    found = tool(man, "-w", "vmpatch", text=True, env=env, check=False)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).resolve() == installed.resolve()
    # Without the venv on PATH man-db does not look there: the PATH mapping is the evidence.
    env["PATH"] = "/usr/bin:/bin"
    elsewhere = tool(man, "-w", "vmpatch", text=True, env=env, check=False)
    assert str(venv) not in elsewhere.stdout
