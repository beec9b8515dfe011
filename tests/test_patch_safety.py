# SPDX-License-Identifier: GPL-2.0-or-later
"""patch never lets one write of a call clobber another file of the same call.

Found in review: `patch --output B --output C A B` once replaced the aarch64
image B with a copy of A, then patched B's copy at an offset valid only for
B, exiting 0. Names are compared as files (device and inode), not strings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from clirun import vmpatch
from conftest import TESTDATA

ROOT_HEX = "cd" * 32


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "A", tmp_path / "B"
    shutil.copy(TESTDATA / "x86_64" / "vmlinux", a)
    shutil.copy(TESTDATA / "aarch64" / "vmlinux", b)
    return a, b


def snapshot(*paths: Path) -> list[bytes | None]:
    return [p.read_bytes() if p.exists() else None for p in paths]


def refused(args: list[object], *watched: Path, reason: str) -> None:
    before = snapshot(*watched)
    run = vmpatch("patch", "--root", ROOT_HEX, "--levels", "2", *args)  # type: ignore[arg-type]
    assert run.returncode == 2, run
    assert reason in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert snapshot(*watched) == before


def test_output_that_is_another_input(images: tuple[Path, Path]) -> None:
    a, b = images
    c = a.parent / "C"
    refused(["--output", b, "--output", c, a, b], a, b, c, reason="would overwrite")


def test_output_that_is_another_input_by_another_name(images: tuple[Path, Path]) -> None:
    a, b = images
    alias = a.parent / "B.link"
    alias.symlink_to(b)
    refused(["--output", alias, "--output", a.parent / "C", a, b], a, b, reason="would overwrite")


def test_two_outputs_with_one_name(images: tuple[Path, Path]) -> None:
    a, b = images
    out = a.parent / "out"
    refused(["--output", out, "--output", out, a, b], a, b, out, reason="would overwrite")


def test_the_same_image_twice(images: tuple[Path, Path]) -> None:
    a, _ = images
    refused([a, a], a, reason="named twice")


def test_output_naming_the_image_itself_patches_in_place(images: tuple[Path, Path]) -> None:
    a, _ = images
    run = vmpatch("patch", "--root", ROOT_HEX, "--levels", "2", "--output", a, a, "--json")
    assert run.returncode == 0, run.stderr
    (image,) = run.json()["images"]
    assert image["changed"] is True and ROOT_HEX in a.read_bytes().hex()
    assert image["new"] == {"levels": 2, "root": ROOT_HEX}


@pytest.mark.parametrize("where", ["missing-dir", "is-a-dir"])
def test_unusable_output_is_bad_input(images: tuple[Path, Path], where: str) -> None:
    a, _ = images
    out = a.parent / "nowhere" / "x" if where == "missing-dir" else a.parent
    refused(
        ["--output", out, a], a, reason="does not exist" if where == "missing-dir" else "directory"
    )
