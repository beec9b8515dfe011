# SPDX-License-Identifier: GPL-2.0-or-later
"""Inputs no build produces still get a one-line answer, never a hang or a crash.

Each case comes from a review that fed vmpatch FIFOs, forged ELF header
fields and closed pipes: they hung forever, exited 70 ("bug") or exited 1
("mismatch"). The contract is exit 2 with one line naming the file, or 141
when stdout's reader went away.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import vmpatch
from conftest import ROOT, TESTDATA, require_tool

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
    proc = subprocess.run(
        [sys.executable, "-m", "vmpatch", *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,  # a hang is the bug
        check=False,
    )
    assert proc.returncode == 2, proc
    assert "FIFO" in one_line(proc.stderr, fifo)


def test_a_fifo_as_modules_order(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "modules.order")
    run = vmpatch("tree", tmp_path)
    assert run.returncode == 2 and "FIFO" in one_line(run.stderr, tmp_path / "modules.order")


def _forged(tmp_path: Path, edit: str) -> Path:
    """A copy of the x86_64 image with one header field forged (offsets from readelf)."""
    data = bytearray((TESTDATA / "x86_64" / "vmlinux").read_bytes())
    (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
    (e_shnum,) = struct.unpack_from("<H", data, 0x3C)
    if edit == "tiny-shentsize":
        struct.pack_into("<H", data, 0x3A, 1)
        struct.pack_into("<Q", data, 0x28, len(data) - e_shnum)
    elif edit == "huge-section":
        out = subprocess.run(
            [require_tool("readelf", "binutils"), "-S", "-W", str(TESTDATA / "x86_64" / "vmlinux")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        index = next(
            int(line.split("]")[0].split("[")[1])
            for line in out.splitlines()
            if " .symtab " in line
        )
        struct.pack_into("<Q", data, e_shoff + 64 * index + 32, 24 << 40)  # sh_size
    path = tmp_path / f"{edit}.vmlinux"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("edit", ["tiny-shentsize", "huge-section"])
def test_forged_header_fields(tmp_path: Path, edit: str) -> None:
    """Untrusted sizes are bounded by the file before anything is read or allocated."""
    image = _forged(tmp_path, edit)
    run = vmpatch("inspect", image)
    assert run.returncode == 2, run
    assert "malformed" in one_line(run.stderr, image)


@pytest.mark.parametrize("json", [True, False], ids=["json", "table"])
def test_closed_stdout_is_141_not_mismatch(json: bool) -> None:
    images = sorted(str(p) for p in TESTDATA.glob("*/vmlinux*"))
    argv = [sys.executable, "-m", "vmpatch", "inspect", *(["--json"] if json else []), *images]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)  # like `| head -c 1`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert err == b""


def test_decompression_limit_must_be_positive() -> None:
    run = vmpatch("inspect", "--max-decompressed", "0", KBUILD / "lib" / "crc_toy.ko")
    assert run.returncode == 2 and "Traceback" not in run.stderr
