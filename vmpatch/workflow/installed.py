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


def installed_module(tree: str | os.PathLike[str], stem: str) -> Path:
    """``TREE/<stem>.ko`` with whichever compression suffix exists (exactly one).

    ``stem`` is the installed modules.order line without ``.ko``
    (``kernel/lib/crc7``).
    """
    base = Path(tree) / (stem + ".ko")
    found = [
        base.with_name(base.name + codec.suffix)
        for codec in Codec
        if base.with_name(base.name + codec.suffix).is_file()
    ]
    if not found:
        raise InputError(base, "installed module not found (also tried .gz, .xz, .zst)")
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        raise InputError(base, f"ambiguous installed module: {names} both exist")
    return found[0]


def installed_modules(tree: str | os.PathLike[str]) -> list[tuple[OrderEntry, Path]]:
    """Every entry of an install tree's modules.order, with the file it names."""
    tree = Path(tree)
    entries = read_modules_order(tree / "modules.order", Layout.INSTALLED)
    return [(entry, installed_module(tree, entry.stem)) for entry in entries]
