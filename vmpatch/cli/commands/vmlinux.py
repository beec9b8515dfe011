# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch inspect`` and ``vmpatch patch``: the vmlinux side."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vmpatch.cli.app import Command, app
from vmpatch.cli.options import (
    DEFAULT_MAX_DECOMPRESSED,
    JsonOption,
    MaxDecompressedOption,
    NoWaitOption,
    WorkersOption,
)
from vmpatch.cli.output import emit_json, file_errors, plain, warn
from vmpatch.errors import UsageError

if TYPE_CHECKING:
    from vmpatch.boot.kernel import KernelFacts
    from vmpatch.elf.vmlinux import ImageReport
    from vmpatch.workflow.patch import RootSource


def _hex(value: int) -> str:
    return f"{value:#x}"


def _vmlinux_rows(report: "ImageReport") -> list[tuple[str, str]]:
    sec, sym = report.section, report.symbol
    rows = [
        ("machine", f"{report.machine} ({report.elf_class}, {report.byteorder} endian)"),
        ("section", f"{sec.name} [{sec.index}] {sec.type} flags {sec.flags}"),
        ("file offset", _hex(sec.offset)),
        ("address", _hex(sec.address)),
        ("size", f"{sec.size} bytes (align {sec.addralign})"),
        (
            "symbol",
            "absent"
            if sym is None
            else f"{sym.name} at {_hex(sym.value)}, {sym.size} bytes"
            + ("" if report.symbol_matches_section else " (disagrees with the section)"),
        ),
    ]
    if report.supported:
        state = "blank placeholder (levels 0, all-zero hash)" if report.placeholder else "set"
        rows += [("levels", str(report.levels)), ("root", str(report.root_hex)), ("state", state)]
    return rows


def _kernel_rows(facts: "KernelFacts") -> list[tuple[str, str]]:
    """Rows for a boot image, or a vmlinux without .module_hashes."""
    if facts.hashes == "absent":
        state = "no hash-based module authentication"
    elif facts.hashes == "unknown":
        state = "cannot tell"
    elif facts.root_record is None:
        state = "present, but holds no valid root"
    elif facts.root_record.is_placeholder:
        state = "blank placeholder (levels 0, all-zero hash)"
    else:
        state = "set"
    rows = [
        ("format", " > ".join(facts.chain)),
        ("machine", f"{facts.arch} ({facts.byteorder} endian)"),
        ("version", facts.version or "unknown (no linux_banner found)"),
        ("module hashes", state),
        ("evidence", facts.evidence),
    ]
    if facts.root_record is not None:
        rows += [
            ("levels", str(facts.root_record.levels)),
            ("root", facts.root_record.digest.hex()),
        ]
    return rows


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    from vmpatch.cli.tables import fields

    fields(title, rows)


@app.command(cls=Command)
def inspect(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            readable=False,
            help="vmlinux, vmlinux.unstripped, boot images (bzImage, Image, ...), modules.",
        ),
    ],
    json_: JsonOption = False,
    max_decompressed: MaxDecompressedOption = DEFAULT_MAX_DECOMPRESSED,
    system_map: Annotated[
        Path | None,
        typer.Option(
            readable=False, help="Symbol map of a raw boot image (Image, zImage, s390): System.map."
        ),
    ] = None,
    vmlinux: Annotated[
        Path | None,
        typer.Option(readable=False, help="The vmlinux of a raw boot image, for its symbols."),
    ] = None,
) -> int:
    """Show where a kernel or boot image keeps its module-hash root, or a module's trailer."""
    from vmpatch.boot.kernel import KernelFacts
    from vmpatch.elf.vmlinux import ImageReport
    from vmpatch.workflow.inspect import run_inspect
    from vmpatch.workflow.results import FileError

    report = run_inspect(files, max_size=max_decompressed, system_map=system_map, vmlinux=vmlinux)
    file_errors(report.files)
    if json_:
        emit_json("inspect", report)
        return report.exit_code
    for entry in report.files:
        if isinstance(entry, FileError):
            continue
        title = str(entry.path)
        if isinstance(entry, ImageReport):
            _print_rows(title, _vmlinux_rows(entry))
            for message in entry.warnings:
                warn(f"{title}: {message}")
        elif isinstance(entry, KernelFacts):
            _print_rows(title, _kernel_rows(entry))
        else:
            _print_rows(title, entry.rows())
    return report.exit_code


def _root_source(
    root_file: Path | None, root: str | None, levels: int | None, force: bool
) -> "RootSource | None":
    from vmpatch.records.root import DIGEST_SIZE, ModuleHashesRoot
    from vmpatch.workflow.patch import RootSource, decode_root_file

    if root_file is not None:
        if root is not None or levels is not None:
            raise UsageError(None, "--root-file excludes --root/--levels")
        return RootSource(raw=decode_root_file(root_file), origin=str(root_file), force=force)
    if root is None and levels is None:
        return None
    if root is None or levels is None:
        raise UsageError(None, "--root and --levels go together")
    try:
        digest = bytes.fromhex(root)
    except ValueError as err:
        raise UsageError(None, f"--root is not hexadecimal: {root!r}") from err
    if len(digest) != DIGEST_SIZE:
        raise UsageError(None, f"--root must be {DIGEST_SIZE} bytes ({2 * DIGEST_SIZE} hex digits)")
    try:
        decoded = ModuleHashesRoot(levels, digest)
    except ValueError as err:
        raise UsageError(None, f"--levels: {err}") from err
    return RootSource(root=decoded, origin="--root/--levels", force=force)


@app.command(cls=Command)
def patch(
    images: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE...", readable=False, help="vmlinux images to patch."),
    ],
    root_file: Annotated[
        Path | None,
        typer.Option(readable=False, help="Raw section content (kbuild's .tmp_module_hashes.bin)."),
    ] = None,
    root: Annotated[str | None, typer.Option(help="Root hash, 64 hex digits.")] = None,
    levels: Annotated[int | None, typer.Option(help="Tree levels for --root.")] = None,
    from_tree: Annotated[
        Path | None,
        typer.Option(
            readable=False,
            help="Build the tree of this kbuild tree (writes .merkle files) and use it.",
        ),
    ] = None,
    output: Annotated[
        list[Path] | None,
        typer.Option(
            "--output", "-o", readable=False, help="Write a patched copy here (once per image)."
        ),
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="With --from-tree: module suffix.")] = None,
    no_proofs: Annotated[
        bool, typer.Option("--no-proofs", help="With --from-tree: write no .merkle files.")
    ] = False,
    workers: WorkersOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Write a root no tree of the generator has (levels 0, non-zero hash)."
        ),
    ] = False,
    no_wait: NoWaitOption = False,
    json_: JsonOption = False,
) -> int:
    """Write a new root into .module_hashes, in place or into --output copies."""
    from vmpatch.cli.progress import progress_bar
    from vmpatch.workflow.patch import run_patch

    source = _root_source(root_file, root, levels, force)
    if from_tree is not None and source is not None:
        raise UsageError(None, "--from-tree excludes --root-file and --root/--levels")
    report = run_patch(
        images,
        source,
        from_tree=from_tree,
        outputs=output,
        suffix=suffix,
        proofs=not no_proofs,
        workers=workers,
        progress=progress_bar,
        wait=not no_wait,
        waiting=warn,
    )
    if json_:
        emit_json("patch", report)
    else:
        for r in report.images:
            what = "patched" if r.changed else "already carries this root"
            where = "" if r.written == r.source else f" -> {r.written}"
            plain(f"{r.source}{where}: {what} at offset {r.offset:#x}")
    return 0
