# SPDX-License-Identifier: GPL-2.0-or-later
"""A kernel's configuration: ``.config``, ``/boot/config-*`` or ``include/config/auto.conf``.

What the kernel does with a module depends on options no image records in a
form vmpatch can read: whether it decompresses modules itself and which codec
(MODULE_DECOMPRESS, MODULE_COMPRESS_GZIP/XZ/ZSTD, kernel/module/Kconfig),
whether it signs and enforces (MODULE_SIG, MODULE_SIG_FORCE), whether it has
MODULE_HASHES, and which BCJ filters its xz decoder has (CONFIG_XZ_DEC_*,
lib/xz/Kconfig). All three files share Kconfig's syntax
(scripts/kconfig/confdata.c): ``CONFIG_NAME=value`` and, in ``.config``,
``# CONFIG_NAME is not set``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure
from vmpatch.frozen import frozen
from vmpatch.fs.atomic import open_input

__all__ = ["KernelConfig", "find_config", "read_config"]

_ASSIGN = re.compile(r"(CONFIG_[A-Za-z0-9_]+)=(.*)")
_UNSET = re.compile(r"# (CONFIG_[A-Za-z0-9_]+) is not set")

#: kernel/module/Kconfig "Module compression type": the choice MODULE_DECOMPRESS follows.
_CODECS = {
    "CONFIG_MODULE_COMPRESS_GZIP": "gzip",
    "CONFIG_MODULE_COMPRESS_XZ": "xz",
    "CONFIG_MODULE_COMPRESS_ZSTD": "zstd",
}


@frozen
class KernelConfig:
    """The options one config file sets; an option it does not set is absent."""

    path: Path
    values: Mapping[str, str]

    def enabled(self, option: str) -> bool:
        """``=y`` or ``=m``."""
        return self.values.get(option) in ("y", "m")

    @property
    def module_decompress(self) -> str:
        """The codec the kernel decompresses modules of, or ``""`` without MODULE_DECOMPRESS.

        kernel/module/decompress.c compiles exactly one decoder, chosen by
        CONFIG_MODULE_COMPRESS_{GZIP,XZ,ZSTD}.
        """
        if not self.enabled("CONFIG_MODULE_DECOMPRESS"):
            return ""
        for option, codec in _CODECS.items():
            if self.enabled(option):
                return codec
        raise InputError(
            self.path,
            "sets MODULE_DECOMPRESS without a MODULE_COMPRESS_GZIP/XZ/ZSTD codec",
        )


def find_config(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or for a build tree its ``.config`` or ``include/config/auto.conf``."""
    where = Path(path)
    if where.is_dir():
        for name in (".config", "include/config/auto.conf"):
            if (where / name).is_file():
                return where / name
        raise InputError(where, "a directory without .config or include/config/auto.conf")
    return where


def read_config(path: str | os.PathLike[str]) -> KernelConfig:
    """Parse a kernel config; a line that is neither an option nor a comment is an error."""
    where = find_config(path)
    try:
        with open_input(where) as fh:
            text = fh.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
        raise InputError(where, f"cannot read kernel config: {err.strerror}") from None
    except OSError as err:
        raise SystemFailure.from_oserror(where, err, "read kernel config") from None
    values: dict[str, str] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _ASSIGN.fullmatch(line)
        if match:
            value = match.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            values[match.group(1)] = value
        elif _UNSET.fullmatch(line):
            continue
        elif not line.startswith("#"):
            raise InputError(where, f"line {line_no}: not a kernel config line: {line[:60]!r}")
    if not values:
        raise InputError(where, "sets no CONFIG_ option: not a kernel config")
    return KernelConfig(where, values)
