# SPDX-License-Identifier: GPL-2.0-or-later
"""Options shared by several commands, declared once so they read alike everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

from vmpatch.sizes import format_size, parse_size

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED",
    "JsonOption",
    "MaxDecompressedOption",
    "NoWaitOption",
    "WorkersOption",
]

#: vmpatch.ko.compression.DEFAULT_MAX_DECOMPRESSED, repeated so the CLI does not import
#: the codecs to build its help (tests/test_cli_contract.py checks they agree).
DEFAULT_MAX_DECOMPRESSED = 256 * 1024 * 1024

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]

#: Every writing command locks what it writes (vmpatch.fs.lock); this refuses (exit 3)
#: instead of waiting when another vmpatch process holds the lock.
NoWaitOption = Annotated[
    bool,
    typer.Option("--no-wait", help="Refuse (exit 3) instead of waiting for another vmpatch run."),
]


def _size(text: str | int) -> int:
    """``--max-decompressed`` takes sizes as users write them (:mod:`vmpatch.sizes`)."""
    if isinstance(text, int):  # the default, already a number
        return text
    try:
        return parse_size(text)
    except ValueError as err:  # typer would print the value alone, without the reason
        raise typer.BadParameter(str(err)) from None


MaxDecompressedOption = Annotated[
    int,
    typer.Option(
        "--max-decompressed",
        metavar="SIZE",
        parser=_size,
        show_default=False,
        help="Refuse compressed modules larger than this when decompressed: bytes, "
        f"or with K, M, G (64M, 1G). Default {format_size(DEFAULT_MAX_DECOMPRESSED)}.",
    ),
]

#: min=1: click refuses 0 and negatives as a usage error (exit 2) before any work, where
#: they used to reach ThreadPoolExecutor (a crash, exit 70) or mean "all CPUs" silently.
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        metavar="N",
        min=1,
        help="Hashing threads, at least 1 (default: one per CPU).",
    ),
]
