# SPDX-License-Identifier: GPL-2.0-or-later
"""Roots no tree of the generator has, ``--force``, ``--workers`` bounds, and what
``patch`` says it did (issue 8, items 4 and 5).

The generator (scripts/modules-merkle-tree.c of the series) writes levels 0 only
with the all-zero hash of zero modules, and its ``log2_roundup`` of a uint32_t
module count never exceeds 32 (pos is a be32). A root outside that is refused
unless ``--force``, in one line naming the rule, exit 2, every file untouched.
Where bytes are checked, the section's offset comes from readelf, not vmpatch.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import typer.main
from clirun import vmpatch
from conftest import TESTDATA
from elfcorrupt import SECTION, readelf_facts

KBUILD = TESTDATA / "kbuild-x86_64"
DIGEST = bytes(range(1, 33))


def _image(tmp_path: Path) -> Path:
    image = tmp_path / "vmlinux"
    shutil.copyfile(KBUILD / "vmlinux", image)
    return image


def _section_bytes(image: Path) -> bytes:
    sec = readelf_facts(image).section(SECTION)
    return image.read_bytes()[sec.offset : sec.offset + sec.size]


def _refused(done: object, image: Path, before: bytes, *needles: str) -> None:
    assert done.returncode == 2, done.stderr  # type: ignore[attr-defined]
    lines = done.stderr.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in done.stderr  # type: ignore[attr-defined]
    assert image.read_bytes() == before, "a refused patch changed the image"


def test_levels_zero_with_a_hash_is_refused_then_forced(tmp_path: Path) -> None:
    image = _image(tmp_path)
    before = image.read_bytes()
    args = ["patch", "--root", DIGEST.hex(), "--levels", "0", str(image)]
    _refused(vmpatch(*args), image, before, "--root/--levels", "levels 0", "--force")
    done = vmpatch(*args, "--force")
    assert done.returncode == 0, done.stderr
    assert _section_bytes(image) == struct.pack("<I", 0) + DIGEST


def test_root_file_with_levels_zero_and_a_hash_is_refused(tmp_path: Path) -> None:
    image = _image(tmp_path)
    before = image.read_bytes()
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(struct.pack("<I", 0) + DIGEST)
    args = ["patch", "--root-file", str(root_file), str(image)]
    _refused(vmpatch(*args), image, before, str(root_file), "levels 0", "--force")
    assert vmpatch(*args, "--force").returncode == 0
    assert _section_bytes(image) == root_file.read_bytes()


def test_the_placeholder_and_the_generators_levels_need_no_force(tmp_path: Path) -> None:
    """The all-zero root (zero modules) and levels 1..32 are roots the generator makes."""
    image = _image(tmp_path)
    for levels, digest in ((0, bytes(32)), (1, DIGEST), (32, DIGEST)):
        done = vmpatch("patch", "--root", digest.hex(), "--levels", str(levels), str(image))
        assert done.returncode == 0, done.stderr
        assert _section_bytes(image) == struct.pack("<I", levels) + digest


@pytest.mark.parametrize("force", [False, True])
def test_levels_beyond_the_format_are_refused(tmp_path: Path, force: bool) -> None:
    """33 levels need more than 2**32 positions: not even --force writes that."""
    image = _image(tmp_path)
    before = image.read_bytes()
    extra = ["--force"] if force else []
    done = vmpatch("patch", "--root", DIGEST.hex(), "--levels", "33", *extra, str(image))
    _refused(done, image, before, "--levels", "32", "be32")
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(struct.pack("<I", 33) + DIGEST)
    done = vmpatch("patch", "--root-file", str(root_file), *extra, str(image))
    _refused(done, image, before, "32", "be32")


def test_human_output_and_json_agree_on_changed(tmp_path: Path) -> None:
    """First write: "patched" and changed true; the same root again: neither."""
    for attempt, changed in ((1, True), (2, False)):
        image = tmp_path / f"vmlinux{attempt}"
        shutil.copyfile(KBUILD / "vmlinux", image)
        if not changed:
            assert vmpatch("patch", "--root", DIGEST.hex(), "--levels", "3", image).returncode == 0
        before = _section_bytes(image)
        human = vmpatch("patch", "--root", DIGEST.hex(), "--levels", "3", image)
        assert human.returncode == 0, human.stderr
        assert (_section_bytes(image) != before) is changed  # readelf's view of what happened
        shutil.copyfile(KBUILD / "vmlinux", image)
        if not changed:
            assert vmpatch("patch", "--root", DIGEST.hex(), "--levels", "3", image).returncode == 0
        document = json.loads(
            vmpatch("patch", "--json", "--root", DIGEST.hex(), "--levels", "3", image).stdout
        )
        [entry] = document["images"]
        assert entry["changed"] is changed
        assert ("patched" in human.stdout) is changed, human.stdout
        assert ("already carries this root" in human.stdout) is not changed, human.stdout


def test_human_output_and_json_agree_for_copies(tmp_path: Path) -> None:
    """--output: "changed" is about the root the copy got, in both forms of the report."""
    image = _image(tmp_path)
    root = ["--root", DIGEST.hex(), "--levels", "3"]
    for changed in (True, False):
        human = vmpatch("patch", *root, "--output", tmp_path / "human", image)
        document = json.loads(
            vmpatch("patch", "--json", *root, "--output", tmp_path / "json", image).stdout
        )
        assert human.returncode == 0, human.stderr
        copy = tmp_path / "human"
        assert _section_bytes(copy) == struct.pack("<I", 3) + DIGEST
        assert (_section_bytes(image) != _section_bytes(copy)) is changed
        [entry] = document["images"]
        assert entry["changed"] is changed
        assert ("patched" in human.stdout) is changed, human.stdout
        assert ("already carries this root" in human.stdout) is not changed, human.stdout
        assert vmpatch("patch", *root, image).returncode == 0  # the source now has it too


def _commands_with_workers() -> list[list[str]]:
    from vmpatch.cli.app import app
    from vmpatch.cli.commands import register

    register()  # every command: the app registers only the one it runs

    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        if any("--workers" in getattr(p, "opts", ()) for p in getattr(command, "params", [])):
            found.append(path)

    walk(typer.main.get_command(app), [])
    return found


def test_every_workers_option_refuses_zero_and_negatives(tmp_path: Path) -> None:
    commands = _commands_with_workers()
    assert ["tree"] in commands and ["patch"] in commands, commands
    image = _image(tmp_path)
    before = image.read_bytes()
    for command in commands:
        for value in ("0", "-3"):
            args = [*command, f"--workers={value}"]
            if command == ["patch"]:
                args += ["--from-tree", str(KBUILD), "--no-proofs", str(image)]
            elif command == ["reroot"]:
                args += ["--dry-run", str(KBUILD)]
            elif command in (["ko", "append-tree"], ["verify"]):
                args += [str(KBUILD)] if command[0] == "ko" else ["--modules", str(KBUILD)]
            elif command == ["diff"]:
                args += [str(KBUILD), str(KBUILD)]
            else:
                args += ["--no-proofs", str(KBUILD)]
            done = vmpatch(*args)
            _refused(done, image, before, "--workers", value)
    done = vmpatch("tree", "--workers=1", "--no-proofs", "--json", str(KBUILD))
    assert done.returncode == 0, done.stderr
