# SPDX-License-Identifier: GPL-2.0-or-later
"""Parse ``modules.order``: the list, and the order, that positions come from.

A module's position in the tree is its line number in this file, so the file
is read strictly: anything kbuild would never write (CRLF line ends, stray
whitespace, empty lines, duplicates, paths escaping the tree) is an error
naming the line, never silently "fixed" into a different tree.

Two layouts exist. In a build tree each line is ``path/to/mod.o`` and the
module is ``path/to/mod`` + suffix (``.ko``, or ``.ko.stripped`` when kbuild
strips at build time). An installed tree (``lib/modules/KVER/modules.order``)
lists ``kernel/path/to/mod.ko`` in the same order (docs/format.md section 6;
mainline ``scripts/Makefile.modinst`` maps one to the other), and the module
file is that path plus whichever compression suffix it was installed with.
The layout is told from the lines themselves; a file mixing both is refused.
"""

from __future__ import annotations

import os
import posixpath
import re
from enum import StrEnum
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure, UnsupportedLayout
from vmpatch.frozen import frozen
from vmpatch.fs.atomic import open_input

__all__ = ["Layout", "OrderEntry", "detect_layout", "layout_of", "read_modules_order"]


class Layout(StrEnum):
    """Which tree a modules.order belongs to."""

    KBUILD = "kbuild"  # lines "path/to/mod.o"; modules "path/to/mod.ko[.stripped]"
    INSTALLED = "installed"  # lines "kernel/path/to/mod.ko"; modules "<line>[.gz|.xz|.zst]"


@frozen
class OrderEntry:
    """One line of modules.order: its position and the module it names."""

    index: int  # 0-based position in the tree (pos in the proof)
    line_no: int  # 1-based, for messages
    name: str  # the line as written, e.g. "lib/crc7.o"
    stem: str  # the path without ".o" (or ".ko"), e.g. "lib/crc7" or "kernel/lib/crc7"


#: A line kbuild writes: path components that start with no dot, no whitespace,
#: ending in ".o". Such a line is already normalised; anything else gets the
#: detailed checks below (which name the problem) or is normalised there.
_PLAIN_LINE = {
    # No NUL in a path component: no file has one (open() would raise ValueError).
    Layout.KBUILD: re.compile(r"(?:[^\s./\0][^\s/\0]*/)*[^\s./\0][^\s/\0]*\.o"),
    # mainline scripts/Makefile.modinst: "kernel/" + the .o path with ".ko"
    Layout.INSTALLED: re.compile(r"kernel/(?:[^\s./\0][^\s/\0]*/)*[^\s./\0][^\s/\0]*\.ko"),
}
#: A whole file of such lines, checked in one pass of the regex engine: the
#: line-by-line loop was 17-25 ms of Debian's 4230 lines, most of planning
#: ``vmpatch tree`` (then each line needs no check of its own).
_PLAIN_FILE = {
    layout: re.compile(f"(?:{pattern.pattern}\n)*") for layout, pattern in _PLAIN_LINE.items()
}
_ENDING = {Layout.KBUILD: ".o", Layout.INSTALLED: ".ko"}
_EXAMPLE = {Layout.KBUILD: "path/to/mod.o", Layout.INSTALLED: "kernel/path/to/mod.ko"}
_HINT = {
    Layout.KBUILD: "for an installed tree use vmpatch reroot or vmpatch verify --modules",
    Layout.INSTALLED: "for a build tree use vmpatch tree",
}


def detect_layout(first_line: str) -> Layout:
    """The layout a modules.order line is written in (kbuild's ``.o`` unless it is ``.ko``)."""
    installed = first_line.startswith("kernel/") and first_line.endswith(".ko")
    return Layout.INSTALLED if installed else Layout.KBUILD


def _check_line(order_file: Path, line_no: int, raw: str, layout: Layout, detected: bool) -> str:
    if _PLAIN_LINE[layout].fullmatch(raw):
        return raw

    def bad(reason: str) -> InputError:
        return InputError(order_file, f"line {line_no}: {reason}")

    if "\r" in raw:
        raise bad("carriage return (CRLF line ends?)")
    if not raw:
        raise bad("empty line")
    if "\0" in raw:  # no path holds one: open() would fail with ValueError, not an errno
        raise bad(f"NUL byte in {raw!r}")
    if raw != raw.strip() or any(c.isspace() for c in raw):
        raise bad(f"whitespace in {raw!r}")
    if raw.startswith("/"):
        raise bad(f"absolute path {raw!r} escapes the tree")
    normal = posixpath.normpath(raw)
    if normal == ".." or normal.startswith("../") or ".." in raw.split("/"):
        raise bad(f"{raw!r} escapes the tree")
    other = Layout.KBUILD if layout is Layout.INSTALLED else Layout.INSTALLED
    if _PLAIN_LINE[other].fullmatch(raw):
        why = (
            f"but line 1 is {layout.value}: a mix of both is no tree"
            if detected
            else f"and this command needs a {layout.value} tree"
        )
        raise UnsupportedLayout(
            order_file,
            f"line {line_no}: {raw!r} is the {other.value} layout ({_EXAMPLE[other]}), {why}",
            hint=_HINT[layout],
        )
    if not raw.endswith(_ENDING[layout]):
        raise bad(f"{raw!r} does not end in {_ENDING[layout]}")
    return normal


def read_modules_order(
    order_file: str | os.PathLike[str], layout: Layout | None = Layout.KBUILD
) -> list[OrderEntry]:
    """Every entry of a modules.order, validated; [] for an empty file.

    ``layout`` is the layout the caller needs (a build tree's by default);
    ``None`` takes whichever the first line is written in (see
    :func:`detect_layout`).
    """
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
    lines = text.split("\n")[:-1]
    chosen = layout if layout is not None else detect_layout(lines[0])
    ending = len(_ENDING[chosen])
    if _PLAIN_FILE[chosen].fullmatch(text) and len(set(lines)) == len(lines):
        return [OrderEntry(i, i + 1, raw, raw[:-ending]) for i, raw in enumerate(lines)]
    entries: list[OrderEntry] = []
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(lines, start=1):
        normal = _check_line(order_file, line_no, raw, chosen, layout is None)
        if normal in seen:
            raise InputError(order_file, f"line {line_no}: {raw!r} repeats line {seen[normal]}")
        seen[normal] = line_no
        entries.append(OrderEntry(len(entries), line_no, raw, normal[:-ending]))
    return entries


def layout_of(directory: Path, forced: Layout | None) -> Layout:
    """The layout of the tree ``directory`` (``forced`` if given), from its modules.order's
    first line. Here rather than in the re-root workflow: ``verify``, ``diff`` and
    ``explain`` ask it too, and importing that workflow was 15 ms of their start."""
    if forced is not None:
        return forced
    order = directory / "modules.order"
    try:
        with open_input(order) as stream:
            first = stream.readline().decode("utf-8", "replace").rstrip("\n")
    except FileNotFoundError:
        raise InputError(order, "no such file: DIR must be a kbuild or install tree") from None
    except OSError as err:
        raise SystemFailure.from_oserror(order, err, "read") from err
    return detect_layout(first)
