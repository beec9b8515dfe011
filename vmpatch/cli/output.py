# SPDX-License-Identifier: GPL-2.0-or-later
"""Where the CLI writes: data on stdout, diagnostics on stderr.

Human output goes through rich, which already honours ``NO_COLOR`` and drops
styling when the stream is not a terminal; ``--json`` output is one stable
document (sorted keys) written with the standard library, never through rich,
so nothing can wrap or colour it.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from vmpatch.errors import OutputClosed

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "OutputClosed",
    "emit_json",
    "error_line",
    "file_errors",
    "plain",
    "show",
    "stderr",
    "stdout",
    "warn",
]


@cache
def stdout() -> Console:
    from rich.console import Console

    class _Stdout(Console):
        def on_broken_pipe(self) -> None:
            # rich >= 13.4 calls this on EPIPE and would exit 1 ("mismatch" here);
            # hand the error to _guarded, which stops with EXIT_OUTPUT_CLOSED (141).
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "stdout closed by its reader")

    return _Stdout(highlight=False, soft_wrap=True)


@cache
def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def _guarded() -> Iterator[None]:
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError as err:
        # Point stdout at /dev/null so the interpreter's last flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise OutputClosed from err


def emit_json(command: str, result: Any) -> None:
    """Print ``result`` as the one JSON document of ``command`` (vmpatch.cli.jsonout)."""
    import json  # here: 3 ms of every start otherwise (python -X importtime)

    from vmpatch.cli.jsonout import document as json_document

    document = json_document(command, result)
    with _guarded():
        json.dump(document, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")


def show(renderable: Any) -> None:
    """Print a rich renderable (a table, marked-up text) on stdout."""
    with _guarded():
        stdout().print(renderable)


def plain(*lines: str) -> None:
    """Unstyled result lines on stdout.

    Rich would print exactly these bytes; going around it saves its import
    and console set-up (~30 ms of a `vmpatch tree` run, measured with the
    former scripts/bench-tree, now scripts/bench) for commands whose whole
    human output is a few plain lines.
    """
    with _guarded():
        sys.stdout.write("".join(f"{line}\n" for line in lines))


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    stderr().print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)


def file_errors(entries: Any) -> None:
    """The ``error: FILE: reason`` line of each file a command could not read (and went on)."""
    from vmpatch.cli.app import debugging
    from vmpatch.workflow.results import FileError

    for entry in entries:
        if isinstance(entry, FileError):
            if debugging() and entry.exception is not None:
                import traceback

                traceback.print_exception(entry.exception, file=sys.stderr)
            error_line(entry.error.message, entry.error.hint)


def error_line(message: str, hint: str | None = None) -> None:
    """The one line of a failed run; a hint, when there is one, ends the same line."""
    from rich.markup import escape

    tail = f" [dim](hint: {escape(hint)})[/]" if hint else ""
    stderr().print(f"[bold red]error:[/] {escape(message)}{tail}", soft_wrap=True)
