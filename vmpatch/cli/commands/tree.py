# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch tree`` and ``vmpatch verify``: the Merkle side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from vmpatch.cli.app import Command, app
from vmpatch.cli.options import (
    DEFAULT_MAX_DECOMPRESSED,
    JsonOption,
    MaxDecompressedOption,
    NoWaitOption,
    WorkersOption,
)
from vmpatch.cli.output import emit_json, file_errors, plain, show, warn
from vmpatch.errors import UsageError

if TYPE_CHECKING:
    from vmpatch.workflow.verify import VerifyReport


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


@app.command(cls=Command)
def verify(
    modules: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[MODULE...]",
            readable=False,
            help="Module files (.ko, .ko.gz, .ko.xz, .ko.zst).",
        ),
    ] = None,
    kernel: Annotated[
        Path, typer.Option(readable=False, help="The vmlinux whose root decides.")
    ] = ...,  # type: ignore[assignment]
    modules_dir: Annotated[
        Path | None,
        typer.Option("--modules", readable=False, help="Take the modules from DIR/modules.order."),
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="With --modules: module suffix.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            readable=False,
            help="The kernel's config (.config, /boot/config-*, or a build tree): decides "
            "in-kernel decompression, its codec and MODULE_SIG_FORCE.",
        ),
    ] = None,
    load_path: Annotated[
        Literal["in-kernel", "userspace"] | None,
        typer.Option(
            help="How compressed modules are loaded: in-kernel (finit_module with "
            "MODULE_INIT_COMPRESSED_FILE) or userspace (kmod decompresses). "
            "Default: as kmod chooses from the config."
        ),
    ] = None,
    max_decompressed: MaxDecompressedOption = DEFAULT_MAX_DECOMPRESSED,
    failures: Annotated[
        bool, typer.Option("--failures", help="List only the modules that do not load.")
    ] = False,
    summary: Annotated[
        bool, typer.Option("--summary", help="Print one line of counts instead of the table.")
    ] = False,
    json_: JsonOption = False,
) -> int:
    """Tell, for each module, whether the kernel will load it, and why not."""
    from vmpatch.cli.progress import progress_bar
    from vmpatch.workflow.verify import LoadPath, run_verify

    if summary and json_:
        raise UsageError(None, "--summary is a one-line human form; --json always has the counts")
    report = run_verify(
        kernel,
        modules or [],
        modules_dir=modules_dir,
        suffix=suffix,
        max_size=max_decompressed,
        progress=progress_bar,
        config=config,
        load_path=None if load_path is None else LoadPath(load_path),
    )
    shown = report.failures() if failures else report
    file_errors(report.modules)
    if json_:
        emit_json("verify", shown)
    elif summary:
        plain(_summary_line(report))
    else:
        _verify_table(shown)
        show(_summary_line(report))
    judged = report.total - report.counts.error  # files that got a verdict at all
    if report.placeholder and judged:
        warn(
            f"{report.kernel}: its root is still the blank placeholder (levels 0, all-zero "
            "hash): the image was never patched, so every proof is refused; run vmpatch patch"
        )
    if report.nothing_checked and report.counts.unchecked:
        warn(
            "nothing was checked: no module got a verdict vmpatch could decide "
            "(PKCS#7 signatures need the kernel's keyring)"
        )
    return report.exit_code


def _summary_line(report: VerifyReport) -> str:
    """One line that counts ACCEPT, REJECT and UNCHECKED apart and says what was checked."""
    counts = report.counts
    total = report.total
    parts = [
        f"{counts.accept} accepted",
        f"{counts.reject} rejected",
        f"{counts.unchecked} unchecked",
    ]
    if counts.error:
        parts.append(f"{counts.error} unreadable")
    line = f"{total} modules: " + ", ".join(parts)
    if report.nothing_checked:
        line += "; nothing was checked"
    elif counts.unchecked:
        line += f"; {counts.checked} of {total} checked"
    return line


def _verify_table(report: VerifyReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    from vmpatch.workflow.results import FileError

    if not report.module_hashes:
        title = "kernel without MODULE_HASHES (no .module_hashes section)"
    else:
        title = f"kernel root levels={report.levels} {report.root_hex}"
        if report.placeholder:
            title += " (blank placeholder: never patched)"
    table = Table(title=title)
    for column in ("module", "verdict", "errno", "load (enforcing)", "reason"):
        table.add_column(column, overflow="fold")
    for r in report.modules:
        if isinstance(r, FileError):
            table.add_row(escape(str(r.path)), "[red]ERROR[/]", "-", "-", escape(r.error.reason))
            continue
        style = {"ACCEPT": "green", "REJECT": "red"}.get(r.verdict, "yellow")
        table.add_row(
            escape(str(r.path)), f"[{style}]{r.verdict}[/]", r.errno or "-", r.load_result, r.reason
        )
    show(table)
    paths_used = sorted(
        {r.load_path.description for r in report.modules if not isinstance(r, FileError)}
    )
    for line in [f"loading path: {p}" for p in paths_used]:
        show(line)
    for line in report.assumptions:
        show(f"assumes {line}")
