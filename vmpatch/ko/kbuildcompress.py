# SPDX-License-Identifier: GPL-2.0-or-later
"""Compress a module with kbuild's own commands, for byte-identity with ``make modules_install``.

In-process recompression (:func:`vmpatch.ko.compression.compress`) is
deterministic but not byte-identical to the command-line tools. A packager
who compares against a kbuild install asks for these instead
(``vmpatch reroot --compressor kbuild``). Keep in sync with mainline
``scripts/Makefile.modinst`` (6.12)::

    cmd_gzip = $(KGZIP) -n -f $<
    cmd_xz   = $(XZ) --check=crc32 --lzma2=dict=1MiB -f $<
    cmd_zstd = $(ZSTD) --rm -f -q $<

The programs are ``gzip``/``xz``/``zstd``, or ``$KGZIP``/``$XZ``/``$ZSTD``
(kbuild exports them; pigz is a common KGZIP). They run on a file, as kbuild
runs them: zstd records the content size only when it knows it, so a pipe
would give other bytes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from vmpatch.errors import ToolError
from vmpatch.ko.compression import Codec

__all__ = ["commands", "compress_with_kbuild"]

_ARGS = {
    Codec.GZIP: ("KGZIP", "gzip", ("-n", "-f")),
    Codec.XZ: ("XZ", "xz", ("--check=crc32", "--lzma2=dict=1MiB", "-f")),
    Codec.ZSTD: ("ZSTD", "zstd", ("--rm", "-f", "-q")),
}


def _argv(codec: Codec) -> list[str]:
    variable, default, args = _ARGS[codec]
    program = shlex.split(os.environ.get(variable) or default)
    return [*program, *args]


def commands() -> dict[str, list[str]]:
    """The command each codec would run with, for the report."""
    return {codec.label: _argv(codec) for codec in _ARGS}


def compress_with_kbuild(data: bytes, codec: Codec) -> bytes:
    """``data`` compressed by kbuild's command for ``codec``, run on a temporary file."""
    argv = _argv(codec)
    with tempfile.TemporaryDirectory(prefix="vmpatch-kbuild-") as scratch:
        plain = Path(scratch) / "module.ko"
        plain.write_bytes(data)
        try:
            proc = subprocess.run(
                [*argv, str(plain)], capture_output=True, text=True, errors="replace", check=False
            )
        except FileNotFoundError:
            raise ToolError(
                argv[0], "not found", hint=f"install it or set ${_ARGS[codec][0]}"
            ) from None
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
            raise ToolError(argv[0], f"failed: {first}")
        return (Path(scratch) / ("module.ko" + codec.suffix)).read_bytes()
