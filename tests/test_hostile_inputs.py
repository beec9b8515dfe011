# SPDX-License-Identifier: GPL-2.0-or-later
"""Inputs no build produces still get a one-line answer, never a hang or a crash.

Each case comes from a review that fed vmpatch FIFOs, forged ELF header
fields and closed pipes: they hung forever, exited 70 ("bug") or exited 1
("mismatch"). The contract is exit 2 with one line naming the file, or 141
when stdout's reader went away.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from clirun import PIPE, spawn_vmpatch, vmpatch
from conftest import TESTDATA, require, require_tool
from elfcorrupt import readelf_facts, set_header_field, set_section_field

KBUILD = TESTDATA / "kbuild-x86_64"


def one_line(run_stderr: str, name: Path) -> str:
    lines = run_stderr.strip().splitlines()
    assert len(lines) == 1 and str(name) in lines[0] and "Traceback" not in run_stderr, lines
    return lines[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.ko"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "{fifo}"],
        ["patch", "--root-file", "{fifo}", str(TESTDATA / "x86_64" / "vmlinux")],
        ["verify", "--kernel", str(TESTDATA / "x86_64" / "vmlinux"), "{fifo}"],
        ["ko", "append", str(KBUILD / "lib" / "crc_toy.ko"), "{fifo}"],
        ["ko", "strip-proof", "{fifo}"],
    ],
    ids=["inspect", "patch-root-file", "verify", "ko-append-proof", "ko-strip-proof"],
)
def test_a_fifo_is_refused_not_waited_on(fifo: Path, args: list[str]) -> None:
    argv = [a.format(fifo=fifo) for a in args]
    proc = vmpatch(*argv, timeout=30)  # a hang is the bug
    assert proc.returncode == 2, proc
    assert "FIFO" in one_line(proc.stderr, fifo)


def test_a_fifo_as_modules_order(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "modules.order")
    run = vmpatch("tree", tmp_path)
    assert run.returncode == 2 and "FIFO" in one_line(run.stderr, tmp_path / "modules.order")


#: A real image of each ELF class and byte order (what readelf calls them).
FORMS = {
    "elf64-le": "x86_64",
    "elf32-le": "i386",
    "elf32-be": "powerpc",
    "elf64-be": "s390x",
}


def _forged(tmp_path: Path, arch: str, edit: str) -> Path:
    """A copy of a real image with one header field forged, at the offsets readelf reports."""
    require_tool("readelf", "binutils-multiarch")
    source = TESTDATA / arch / "vmlinux"
    require(source.is_file(), f"{source} missing: run scripts/make-testdata")
    facts = readelf_facts(source)
    path = tmp_path / f"{edit}.vmlinux"
    shutil.copyfile(source, path)
    if edit == "tiny-shentsize":
        set_header_field(facts, path, "e_shentsize", 1)
        shnum = len(facts.sections)
        set_header_field(facts, path, "e_shoff", path.stat().st_size - shnum)
    elif edit == "huge-section":
        set_section_field(
            facts, path, "sh_size", 24 << 40 if facts.elfclass == 64 else 0xFFFFFF00, name=".symtab"
        )
    return path


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("edit", ["tiny-shentsize", "huge-section"])
def test_forged_header_fields(tmp_path: Path, edit: str, form: str) -> None:
    """Untrusted sizes are bounded by the file before anything is read or allocated."""
    image = _forged(tmp_path, FORMS[form], edit)
    before = image.read_bytes()
    run = vmpatch("inspect", image, timeout=60)
    assert run.returncode == 2, run
    assert "malformed" in one_line(run.stderr, image)
    assert image.read_bytes() == before


@pytest.mark.parametrize("json", [True, False], ids=["json", "table"])
def test_closed_stdout_is_141_not_mismatch(json: bool) -> None:
    """A reader that closes early (``| head -c 1``) gets exit 141 and silence.

    The pipe holds one page (F_SETPIPE_SZ), less than the 8-15 KB the
    command prints, so the write after the close fails however fast the
    command is: with a 64 KB pipe it could print everything before the
    reader closed and rightly exit 0 (seen once in CI).
    """
    import fcntl

    images = sorted(str(p) for p in TESTDATA.glob("*/vmlinux*"))
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    argv = ["inspect", *(["--json"] if json else []), *images]
    with os.fdopen(read_end, "rb") as stdout:
        proc = spawn_vmpatch(*argv, stdout=write_end, stderr=PIPE)
        os.close(write_end)
        assert proc.stderr is not None
        assert len(stdout.read(1)) == 1
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert err == b""


def test_decompression_limit_must_be_positive() -> None:
    run = vmpatch("inspect", "--max-decompressed", "0", KBUILD / "lib" / "crc_toy.ko")
    assert run.returncode == 2 and "Traceback" not in run.stderr
