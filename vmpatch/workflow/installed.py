# SPDX-License-Identifier: GPL-2.0-or-later
"""Installed trees (``lib/modules/KVER``): which file each modules.order entry names.

mainline ``scripts/Makefile.modinst`` installs ``kernel/<path>.ko`` and then,
with CONFIG_MODULE_COMPRESS_*, replaces it by ``.ko.gz``, ``.ko.xz`` or
``.ko.zst`` (docs/format.md section 6). An entry therefore names exactly one
of those four files; none, or two at once, is an error (the kernel's loader
would pick one by its own rules, and the tree would hash the other).
"""

from __future__ import annotations

import os
from pathlib import Path

from vmpatch.errors import InputError
from vmpatch.ko.compression import Codec
from vmpatch.records.modorder import Layout, OrderEntry, read_modules_order

__all__ = ["installed_module", "installed_modules"]


def installed_module(
    tree: str | os.PathLike[str], stem: str, *, listings: dict[str, frozenset[str]] | None = None
) -> Path:
    """``TREE/<stem>.ko`` with whichever compression suffix exists (exactly one).

    ``stem`` is the installed modules.order line without ``.ko``
    (``kernel/lib/crc7``). ``listings`` caches each directory's regular
    files across calls: asking for four suffixes one stat at a time was
    17,700 stat calls and 1.2 s of CPU in ``verify`` of Debian's 4230
    modules (cProfile, scripts/bench).
    """
    base = f"{os.fspath(tree)}/{stem}.ko"
    directory, _, name = base.rpartition("/")
    listings = {} if listings is None else listings
    files = listings.get(directory)
    if files is None:
        files = listings[directory] = _regular_files(directory)
    present = [name + c.suffix for c in Codec if name + c.suffix in files]
    if not present:
        raise InputError(base, "installed module not found (also tried .gz, .xz, .zst)")
    if len(present) > 1:
        raise InputError(base, f"ambiguous installed module: {' and '.join(present)} both exist")
    return Path(directory, present[0])


def _regular_files(directory: str) -> frozenset[str]:
    """Names in ``directory`` that are regular files, links to one included (as is_file says)."""
    try:
        with os.scandir(directory) as entries:
            return frozenset(entry.name for entry in entries if entry.is_file())
    except OSError:  # no such directory, or not searchable: no module is there
        return frozenset()


def installed_modules(tree: str | os.PathLike[str]) -> list[tuple[OrderEntry, Path]]:
    """Every entry of an install tree's modules.order, with the file it names."""
    tree = Path(tree)
    entries = read_modules_order(tree / "modules.order", Layout.INSTALLED)
    listings: dict[str, frozenset[str]] = {}
    return [(entry, installed_module(tree, entry.stem, listings=listings)) for entry in entries]
