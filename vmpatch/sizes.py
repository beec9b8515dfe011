# SPDX-License-Identifier: GPL-2.0-or-later
"""Byte sizes as users write them on a command line: ``4096``, ``1k``, ``256M``, ``1G``.

One parser for every entry point (the ``vmpatch`` CLI's ``--max-decompressed``
and the hook's), standard library only because the lean hook imports it.
Suffixes are binary, as the limits they set are documented (256 MiB is
``256M``): K, M, G and T, in either case, optionally followed by ``iB``. A
``KB``/``MB`` spelling is refused rather than guessed, since tools disagree
on whether it means 1000 or 1024.
"""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+)\s*(?:([kKmMgGtT])(iB)?)?")


def parse_size(text: str) -> int:
    """The positive number of bytes ``text`` names; ValueError saying why not."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a size: write bytes (4096) or a number with K, M, G or T (256M)"
        )
    value = int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if value < 1:
        raise ValueError(f"{text!r}: the size must be at least 1 byte")
    return value


def format_size(value: int) -> str:
    """The shortest exact spelling :func:`parse_size` reads back: ``256M`` for 256 MiB."""
    for suffix in ("T", "G", "M", "K"):
        unit = _UNITS[suffix.lower()]
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
