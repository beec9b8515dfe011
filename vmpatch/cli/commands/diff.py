# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch diff``: two builds, the same root or not, and the modules that differ."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vmpatch.cli.app import Command, app
from vmpatch.cli.options import JsonOption, WorkersOption
from vmpatch.cli.output import emit_json, plain

if TYPE_CHECKING:
    from vmpatch.workflow.diff import DiffReport, DiffSide


def _side_option(which: str) -> object:
    return typer.Option(
        f"--modules-{which}",
        metavar="DIR",
        readable=False,
        help=f"When {which.upper()} is a kernel image: the tree of its modules.",
    )


@app.command(cls=Command)
def diff(
    a: Annotated[
        Path,
        typer.Argument(
            metavar="A",
            readable=False,
            help="A kbuild tree, a staged lib/modules/KVER, a modules.leaves, or a vmlinux.",
        ),
    ],
    b: Annotated[Path, typer.Argument(metavar="B", readable=False, help="The same, for B.")],
    modules_a: Annotated[Path | None, _side_option("a")] = None,
    modules_b: Annotated[Path | None, _side_option("b")] = None,
    compare_bytes: Annotated[
        bool,
        typer.Option(
            "--bytes", help="Also count compression and trailers: compare the files as stored."
        ),
    ] = False,
    workers: WorkersOption = None,
    json_: JsonOption = False,
) -> int:
    """Compare two builds: same root or not, then modules added, removed, moved and changed.

    Exit status as diffoscope's: 0 same, 1 different, 2 and above an error.
    """
    from vmpatch.workflow.diff import run_diff

    report = run_diff(
        a, b, modules_a=modules_a, modules_b=modules_b, compare_bytes=compare_bytes, workers=workers
    )
    if json_:
        emit_json("diff", report)
    else:
        plain(*human_lines(report))
    return report.exit_code


def _root_line(label: str, side: "DiffSide") -> str:
    root = "no root" if side.root is None else f"levels {side.root.levels} {side.root.digest.hex()}"
    count = "" if side.module_count is None else f", {side.module_count} modules"
    return f"{label}: {side.source} ({side.kind}{count}): {root}"


def human_lines(report: "DiffReport") -> list[str]:
    """The verdict first, then each side's root, then one line per module that differs."""
    counts = report.counts
    parts = [f"{n} {kind}" for kind, n in counts.items() if n]
    head = "same root" if report.same_root else "roots differ"
    if not report.modules_compared:
        verdict = f"{head} (modules not compared: pass --modules-a/--modules-b for an image)"
    elif report.changes:
        n = len(report.changes)
        differ = "1 module differs" if n == 1 else f"{n} modules differ"
        verdict = f"{head}: {differ}: " + ", ".join(parts)
    else:
        n = report.identical
        verdict = f"{head}; {n} module{'' if n == 1 else 's'} identical"
    lines = [verdict, _root_line("A", report.a), _root_line("B", report.b)]
    for c in report.changes:
        if c.change == "added":
            where = f"at {c.position_b} ({c.path_b})"
        elif c.change == "removed":
            where = f"was at {c.position_a} ({c.path_a})"
        elif c.position_a != c.position_b:
            where = f"position {c.position_a} -> {c.position_b}"
        else:
            where = f"at {c.position_a}"
        lines.append(f"{c.change:<10} {c.name} {where}")
    return lines
