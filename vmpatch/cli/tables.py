# SPDX-License-Identifier: GPL-2.0-or-later
"""Human tables that never lose a value, whatever the terminal's width.

A user copies hashes, paths and ``.modinfo`` values out of vmpatch's tables,
so no cell may be cut (rich's ``…``) or broken inside a word where a shorter
break exists. Every table of the command line goes through this module:

* :func:`fields` prints ``label  value`` rows (``inspect``): the label column
  never shrinks; a value too long for its column is folded onto the following
  lines (at spaces, else after a ``/``, ``:`` or ``,``, else anywhere), so it
  reads back whole when the folded lines are joined. When the terminal leaves
  too little room beside the labels, each value goes under its label instead.
* :func:`records` prints one row per file (``verify``, ``ko ...``): a grid
  when every value fits whole at its natural width (only free-text columns
  may wrap, at spaces), else one stacked ``label  value`` block per file,
  headed by its path.

Lines are laid out here, not by rich, and printed without rich's wrapping
(``soft_wrap``): the layout is a pure function of the width (``COLUMNS`` when
not a terminal, rich's rule), so the golden tests can pin it byte for byte.
Styling is rich's, so ``NO_COLOR`` and non-TTY output stay plain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmpatch.cli.output import plain, show

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = ["Cell", "Column", "fields", "fold", "records"]

#: Where a long word may break, best first: after a path separator, then after
#: list and key-id punctuation. A hash has none of these and folds anywhere.
_BREAK_AFTER = ("/", ":", ",")

#: The narrowest value column worth laying out beside its labels.
_MIN_VALUE_WIDTH = 24

#: A cell: plain text, or text with a rich style (a verdict's colour).
Cell = str | tuple[str, str]


def _fold_word(word: str, width: int) -> list[str]:
    """``word`` in pieces of at most ``width``, broken after the best separator."""
    pieces: list[str] = []
    while len(word) > width:
        cut = 0
        for mark in _BREAK_AFTER:
            cut = word.rfind(mark, 0, width) + 1
            if cut > 0:
                break
        if cut <= 0:
            cut = width
        pieces.append(word[:cut])
        word = word[cut:]
    pieces.append(word)
    return pieces


def fold(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``width`` characters, no character lost.

    Words are kept whole where they fit; a word longer than a line is folded
    (:func:`_fold_word`), so the pieces joined give the word back.
    """
    width = max(width, 1)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        words = paragraph.split(" ")
        line = words[0]
        if len(line) > width:
            *whole, line = _fold_word(line, width)
            lines.extend(whole)
        for word in words[1:]:
            if len(line) + 1 + len(word) <= width:
                line = f"{line} {word}"
                continue
            lines.append(line)
            *whole, line = _fold_word(word, width)
            lines.extend(whole)
        lines.append(line)
    return lines


def _console() -> Console:
    from vmpatch.cli.output import stdout

    return stdout()


def _cell_text(cell: Cell) -> tuple[str, str]:
    return (cell, "") if isinstance(cell, str) else cell


#: A laid-out line: its (text, rich style) parts. Text objects are made only when
#: the console styles its output (:func:`_print`).
Line = tuple[tuple[str, str], ...]


def _line(*parts: tuple[str, str]) -> Line:
    return parts


def _rich_line(parts: Line) -> Text:
    from rich.text import Text

    line = Text(no_wrap=True, end="\n")
    for text, style in parts:
        line.append(text, style=style or None)
    return line


def _field_lines(
    rows: Sequence[tuple[str, Cell]], width: int, indent: int, label_style: str
) -> list[Line]:
    """The lines of a ``label  value`` block ``width`` columns wide."""
    if not rows:
        return []
    label_width = max(len(label) for label, _ in rows)
    value_width = width - indent - label_width - 2
    stacked = value_width < _MIN_VALUE_WIDTH
    out: list[Line] = []
    for label, cell in rows:
        value, style = _cell_text(cell)
        if stacked:
            out.append(_line((" " * indent, ""), (label, label_style)))
            pad = " " * (indent + 2)
            out.extend(
                _line((pad, ""), (piece, style)) for piece in fold(value, width - indent - 2)
            )
            continue
        first, *rest = fold(value, value_width)
        head = (label.ljust(label_width) + "  ") if first else label
        out.append(_line((" " * indent, ""), (head, label_style), (first, style)))
        pad = " " * (indent + label_width + 2)
        out.extend(_line((pad, ""), (piece, style)) for piece in rest)
    return out


def _title_lines(title: str, width: int) -> list[Line]:
    return [_line((piece, "bold")) for piece in fold(title, width)]


def _print(lines: Sequence[Line]) -> None:
    """Print laid-out lines: as plain text when the console would not style them.

    Without a colour system (not a terminal, rich's rule) rich writes exactly
    the parts' text; building a rich Text per line for it was 3.5 s of the
    main thread in ``ko append-tree --dest`` over Debian's 4230 modules
    (cProfile: 25,000 lines), time the workers' GIL then waited for.
    """
    if _console().color_system is None:
        plain(*("".join(text for text, _ in parts) for parts in lines))
        return
    from rich.console import Group

    show(Group(*map(_rich_line, lines)))


def fields(title: str, rows: Sequence[tuple[str, Cell]]) -> None:
    """Print ``title`` and its ``label  value`` rows (``inspect``'s form)."""
    width = _console().width
    _print([*_title_lines(title, width), *_field_lines(rows, width, 1, "bold")])


@dataclass(frozen=True)
class Column:
    """A column of :func:`records`. ``free`` text (a reason) may wrap at spaces in a grid;
    every other column is a value a user may copy and stays on one line."""

    header: str
    free: bool = False


#: The narrowest a free-text column of a grid may get (unless all of it is narrower):
#: below this a reason reads one word a line, and the stacked form reads better.
_MIN_FREE_WIDTH = 24


def _free_width(column: Column, cells: Sequence[str]) -> int:
    """The width a free-text column needs: its longest word, and room to read."""
    texts = [column.header, *cells]
    natural = max(map(len, texts))
    longest_word = max((len(w) for text in texts for w in text.split()), default=1)
    return min(natural, max(longest_word, _MIN_FREE_WIDTH))


def _grid_fits(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int) -> bool:
    """Whether a bordered grid fits ``width`` with every non-free cell whole on one line."""
    needed = 3 * len(columns) + 1  # rich's box: a border and two padding columns each, one edge
    for index, column in enumerate(columns):
        cells = [_cell_text(row[index])[0] for row in rows]
        if column.free:
            needed += _free_width(column, cells)
        else:
            needed += max([len(column.header), *map(len, cells)])
    return needed <= width


def _grid(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> None:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for index, column in enumerate(columns):
        if column.free:
            cells = [_cell_text(row[index])[0] for row in rows]
            table.add_column(column.header, overflow="fold", min_width=_free_width(column, cells))
        else:
            table.add_column(column.header, no_wrap=True)
    for row in rows:
        table.add_row(*(Text(text, style=style) for text, style in map(_cell_text, row)))
    heading = _title_lines(title, _console().width) if title else []
    show(Group(*map(_rich_line, heading), table))


def records(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> None:
    """One row per file; the first column names it (a path).

    A grid when it fits whole; otherwise each row becomes a block headed by its
    first cell, with the other columns as ``label  value`` lines beneath it.
    """
    width = _console().width
    if _grid_fits(columns, rows, width):
        _grid(title, columns, rows)
        return
    lines: list[Line] = list(_title_lines(title, width)) if title else []
    for number, row in enumerate(rows):
        if number or title:
            lines.append(_line())
        head, head_style = _cell_text(row[0])
        lines.extend(_line((piece, head_style or "bold")) for piece in fold(head, width))
        pairs = [(column.header, row[index]) for index, column in enumerate(columns) if index]
        lines.extend(_field_lines(pairs, width, 2, ""))
    _print(lines)
