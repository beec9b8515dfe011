# SPDX-License-Identifier: GPL-2.0-or-later
"""Parse ``modules.order``: the list, and the order, that positions come from.

A module's position in the tree is its line number in this file, so the file
is read strictly: anything kbuild would never write (CRLF line ends, stray
whitespace, empty lines, duplicates, paths escaping the tree) is an error
naming the line, never silently "fixed" into a different tree.

Two layouts exist. In a build tree each line is ``path/to/mod.o`` and the
module is ``path/to/mod`` + suffix (``.ko``, or ``.ko.stripped`` when kbuild
strips at build time). An installed tree (``lib/modules/KVER/modules.order``)
lists ``kernel/path/to/mod.ko`` in the same order (docs/format.md section 6); it is
recognised and reported as not supported yet, so the reader already knows
the difference when support arrives.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure, UnsupportedLayout
from vmpatch.fs.atomic import open_input

__all__ = ["OrderEntry", "read_modules_order"]


@dataclass(frozen=True)
class OrderEntry:
    """One line of modules.order: its position and the module it names."""

    index: int  # 0-based position in the tree (pos in the proof)
    line_no: int  # 1-based, for messages
    name: str  # the line as written, e.g. "lib/crc7.o"
    stem: str  # the path without ".o", e.g. "lib/crc7"


#: A line kbuild writes: path components that start with no dot, no whitespace,
#: ending in ".o". Such a line is already normalised; anything else gets the
#: detailed checks below (which name the problem) or is normalised there.
_PLAIN_LINE = re.compile(r"(?:[^\s./][^\s/]*/)*[^\s./][^\s/]*\.o")


def _check_line(order_file: Path, line_no: int, raw: str) -> str:
    if _PLAIN_LINE.fullmatch(raw):
        return raw

    def bad(reason: str) -> InputError:
        return InputError(order_file, f"line {line_no}: {reason}")

    if "\r" in raw:
        raise bad("carriage return (CRLF line ends?)")
    if not raw:
        raise bad("empty line")
    if raw != raw.strip() or any(c.isspace() for c in raw):
        raise bad(f"whitespace in {raw!r}")
    if raw.startswith("/"):
        raise bad(f"absolute path {raw!r} escapes the tree")
    normal = posixpath.normpath(raw)
    if normal == ".." or normal.startswith("../") or ".." in raw.split("/"):
        raise bad(f"{raw!r} escapes the tree")
    if raw.startswith("kernel/") and raw.endswith(".ko"):
        raise UnsupportedLayout(
            order_file,
            f"line {line_no}: {raw!r} is the installed layout (kernel/...ko); "
            "installed trees are not supported yet, use the build tree",
            hint="to re-root an installed tree, use `vmpatch reroot`",
        )
    if not raw.endswith(".o"):
        raise bad(f"{raw!r} does not end in .o")
    return normal


def read_modules_order(order_file: str | os.PathLike[str]) -> list[OrderEntry]:
    """Every entry of a build tree's modules.order, validated; [] for an empty file."""
    order_file = Path(order_file)
    try:
        with open_input(order_file) as stream:
            data = stream.read()
    except OSError as err:  # missing: the input's fault (exit 2); unreadable: the system's
        failure = SystemFailure.from_oserror(order_file, err, "read")
        if isinstance(err, FileNotFoundError):
            failure.hint = "is this a kernel build tree?"
        raise failure from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = data[: err.start].count(b"\n") + 1
        raise InputError(order_file, f"line {line_no}: not valid UTF-8") from err
    if not text:
        return []
    if not text.endswith("\n"):
        text += "\n"  # a missing final newline is harmless
    entries: list[OrderEntry] = []
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(text.split("\n")[:-1], start=1):
        normal = _check_line(order_file, line_no, raw)
        if normal in seen:
            raise InputError(order_file, f"line {line_no}: {raw!r} repeats line {seen[normal]}")
        seen[normal] = line_no
        entries.append(OrderEntry(len(entries), line_no, raw, normal[: -len(".o")]))
    return entries
