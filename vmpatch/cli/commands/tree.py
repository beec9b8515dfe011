# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch tree``: hash the modules of a build tree, write their proofs and the root."""

from pathlib import Path
from typing import Annotated, Literal

import typer

from vmpatch.cli.app import Command, app
from vmpatch.cli.options import JsonOption, NoWaitOption, WorkersOption
from vmpatch.cli.output import emit_json, plain, warn
from vmpatch.errors import UsageError


@app.command(cls=Command)
def tree(
    build_dir: Annotated[
        Path, typer.Argument(metavar="[BUILD_DIR]", readable=False, help="Kernel build tree.")
    ] = Path("."),
    order: Annotated[
        Path | None,
        typer.Option(
            readable=False, help="modules.order to read (default BUILD_DIR/modules.order)."
        ),
    ] = None,
    suffix: Annotated[
        str | None,
        typer.Option(help="Module suffix (default .ko, or .ko.stripped when kbuild strips)."),
    ] = None,
    root_out: Annotated[
        Path | None, typer.Option(readable=False, help="Write the 36-byte section content here.")
    ] = None,
    c_out: Annotated[
        Path | None, typer.Option(readable=False, help="Write a C definition of the root here.")
    ] = None,
    kernel: Annotated[
        Path | None, typer.Option(readable=False, help="vmlinux whose byte order --root-out uses.")
    ] = None,
    byteorder: Annotated[
        str | None, typer.Option(help="little or big, when there is no vmlinux to ask.")
    ] = None,
    no_proofs: Annotated[bool, typer.Option("--no-proofs", help="Write no .merkle files.")] = False,
    workers: WorkersOption = None,
    no_wait: NoWaitOption = False,
    json_: JsonOption = False,
) -> int:
    """Hash every module of modules.order, build the tree, write the proofs and the root."""
    from vmpatch.cli.progress import progress_bar
    from vmpatch.workflow.tree import run_tree

    if byteorder not in (None, "little", "big"):
        raise UsageError(None, f"--byteorder must be little or big, not {byteorder!r}")
    order_arg: Literal["little", "big"] | None = byteorder  # type: ignore[assignment]
    result = run_tree(
        build_dir,
        order_file=order,
        suffix=suffix,
        proofs=not no_proofs,
        root_out=root_out,
        c_out=c_out,
        kernel=kernel,
        byteorder=order_arg,
        workers=workers,
        progress=progress_bar,
        wait=not no_wait,
        waiting=warn,
    )
    if json_:
        emit_json("tree", result)
    else:
        plain(
            f"modules {result.module_count}",
            f"levels  {result.levels}",
            f"root    {result.root_hex}",
        )
    return 0
