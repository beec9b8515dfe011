# SPDX-License-Identifier: GPL-2.0-or-later
"""Where the CLI writes: data on stdout, diagnostics on stderr.

Human output goes through rich, which already honours ``NO_COLOR`` and drops
styling when the stream is not a terminal; ``--json`` output is one stable
document (sorted keys) written with the standard library, never through rich,
so nothing can wrap or colour it.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

from vmpatch import FORMAT_VERSION

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["emit_json", "error_line", "plain", "stderr", "stdout", "warn"]


@cache
def stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@cache
def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(document: Any) -> None:
    """Print one JSON document; objects get the supported format version."""
    if isinstance(document, dict):
        document = {"format_version": FORMAT_VERSION, **document}
    elif isinstance(document, list):
        document = [
            {"format_version": FORMAT_VERSION, **d} if isinstance(d, dict) else d for d in document
        ]
    json.dump(document, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    sys.stdout.flush()


def plain(*lines: str) -> None:
    """Unstyled result lines on stdout.

    Rich would print exactly these bytes; going around it saves its import
    and console set-up (~30 ms of a `vmpatch tree` run, scripts/bench-tree)
    for commands whose whole human output is a few plain lines.
    """
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    stderr().print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)


def error_line(message: str, hint: str | None = None) -> None:
    """The one line of a failed run; a hint, when there is one, ends the same line."""
    from rich.markup import escape

    tail = f" [dim](hint: {escape(hint)})[/]" if hint else ""
    stderr().print(f"[bold red]error:[/] {escape(message)}{tail}", soft_wrap=True)
