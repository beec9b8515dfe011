# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch reroot``: the packager's main job, one command (see vmpatch.workflow.reroot)."""

from pathlib import Path
from typing import Annotated, Any

import typer

from vmpatch.cli.app import Command, app
from vmpatch.cli.options import (
    DEFAULT_MAX_DECOMPRESSED,
    JsonOption,
    MaxDecompressedOption,
    WorkersOption,
)
from vmpatch.cli.output import emit_json, plain, warn
from vmpatch.errors import UsageError


@app.command(cls=Command)
def reroot(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", readable=False, help="A kbuild tree or a staged lib/modules/KVER."
        ),
    ],
    kernel: Annotated[
        list[Path] | None,
        typer.Option(
            "--kernel", metavar="VMLINUX", readable=False, help="Image to patch (repeatable)."
        ),
    ] = None,
    layout: Annotated[
        str | None, typer.Option(help="kbuild or installed (default: told from modules.order).")
    ] = None,
    extra: Annotated[
        list[Path] | None,
        typer.Option(
            "--extra",
            metavar="PATH",
            readable=False,
            help="Out-of-tree modules (files or dirs) to add.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", readable=False, help="Re-root a copy here; DIR stays as it was."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, write nothing.")] = False,
    keep_signatures: Annotated[
        bool,
        typer.Option(
            "--keep-signatures", help="Hash modules with their PKCS#7 signatures in place."
        ),
    ] = False,
    replace_links: Annotated[
        bool,
        typer.Option("--replace-links", help="Rewrite linked modules as regular files in DIR."),
    ] = False,
    compressor: Annotated[
        str, typer.Option(help="inprocess (deterministic) or kbuild (kbuild's own commands).")
    ] = "inprocess",
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Refuse instead of waiting for another run.")
    ] = False,
    workers: WorkersOption = None,
    max_decompressed: MaxDecompressedOption = DEFAULT_MAX_DECOMPRESSED,
    json_: JsonOption = False,
) -> int:
    """Re-root a tree once, after the last step that changed its modules: proofs, root, verify."""
    from vmpatch.cli.progress import progress_bar
    from vmpatch.records.modorder import Layout
    from vmpatch.workflow.reroot import RerootOptions
    from vmpatch.workflow.reroot import reroot as run

    if layout not in (None, "kbuild", "installed"):
        raise UsageError(None, f"--layout must be kbuild or installed, not {layout!r}")
    if compressor not in ("inprocess", "kbuild"):
        raise UsageError(None, f"--compressor must be inprocess or kbuild, not {compressor!r}")
    options = RerootOptions(
        kernels=tuple(kernel or ()),
        layout=Layout(layout) if layout else None,
        extra=tuple(extra or ()),
        output=output,
        dry_run=dry_run,
        keep_signatures=keep_signatures,
        replace_links=replace_links,
        compressor=compressor,
        wait=not no_wait,
        workers=workers,
        max_size=max_decompressed,
    )
    bars: dict[str, Any] = {}

    def progress(what: str, done: int, total: int) -> None:
        if what not in bars:
            for context, _ in bars.values():  # one bar at a time: the last phase is over
                context.__exit__(None, None, None)
            bars.clear()
            context = progress_bar(what, total)
            bars[what] = (context, context.__enter__())
        callback = bars[what][1]
        if callback is not None:
            callback(done)

    try:
        report = run(directory, options, progress=progress, waiting=warn)
    finally:
        for context, _ in bars.values():
            context.__exit__(None, None, None)
    if json_:
        emit_json("reroot", report)
        return 0
    in_tree = [m for m in report.modules if m.position is not None]
    counts: dict[str, int] = {}
    for m in in_tree:
        counts[m.action.value] = counts.get(m.action.value, 0) + 1
    lines = [
        f"{report.directory}: {report.layout.value} tree, {report.state}"
        + (" (it was part-way)" if report.found == "part-way" and not report.dry_run else ""),
        f"levels  {report.root.levels}",
        f"root    {report.root.digest.hex()}",
        "modules "
        + f"{len(in_tree)} ("
        + ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
        + ")",
    ]
    for k in report.kernels:
        where = "" if k.written == k.path else f" -> {k.written}"
        lines.append(
            f"kernel  {k.path}{where}: {'patched' if k.changed else 'already carries this root'}"
        )
    if not report.dry_run:
        accepted = sum(1 for m in in_tree if m.verdict == "ACCEPT")
        lines.append(f"verify  {accepted} of {len(in_tree)} modules accepted by the kernel")
    lines.append(
        f"summary {report.files_rewritten} files rewritten, {report.bytes_hashed} bytes hashed, "
        f"{report.seconds:.2f} s"
    )
    plain(*lines)
    unlisted = [m.path for m in report.modules if m.position is None]
    if unlisted:
        warn(
            f"{len(unlisted)} module files are in no position (not in modules.order, no --extra): "
            + ", ".join(unlisted)
        )
    for item in report.dropped_xattrs:
        warn(f"dropped {item} (it signed the old bytes)")
    if report.stale_temporaries_removed:
        warn(f"removed {report.stale_temporaries_removed} temporary files an interrupted run left")
    for message in report.warnings:
        warn(message)
    return 0
