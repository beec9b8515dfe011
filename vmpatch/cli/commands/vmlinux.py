# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch inspect`` and ``vmpatch patch``: the vmlinux side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmpatch.cli.app import app
from vmpatch.cli.options import DEFAULT_MAX_DECOMPRESSED, JsonOption, MaxDecompressedOption
from vmpatch.cli.output import emit_json, plain, show, warn
from vmpatch.errors import EXIT_INPUT, UsageError

_MODULE_SUFFIXES = (".ko", ".ko.gz", ".ko.xz", ".ko.zst", ".ko.stripped")


def _is_module(path: Path) -> bool:
    """Modules by name, or relocatable ELF files whatever their name."""
    if path.name.endswith(_MODULE_SUFFIXES):
        return True
    from vmpatch.errors import InputError
    from vmpatch.fs.atomic import open_input

    try:
        with open_input(path) as f:
            head = f.read(18)
    except (OSError, InputError):
        return False  # the reader that follows says what is wrong with it
    if head[:4] != b"\x7fELF" or len(head) < 18:
        return False
    e_type = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
    return e_type == 1  # ET_REL


def _hex(value: int) -> str:
    return f"{value:#x}"


def _vmlinux_rows(report: dict[str, object]) -> list[tuple[str, str]]:
    sec = report["section"]
    sym = report["symbol"]
    assert isinstance(sec, dict)
    rows = [
        ("machine", f"{report['machine']} ({report['class']}, {report['byteorder']} endian)"),
        ("section", f"{sec['name']} [{sec['index']}] {sec['type']} flags {sec['flags']}"),
        ("file offset", _hex(sec["offset"])),
        ("address", _hex(sec["address"])),
        ("size", f"{sec['size']} bytes (align {sec['addralign']})"),
        (
            "symbol",
            "absent"
            if sym is None
            else f"{sym['name']} at {_hex(sym['value'])}, {sym['size']} bytes"  # type: ignore[index]
            + ("" if report["symbol_matches_section"] else " (disagrees with the section)"),
        ),
    ]
    if report["supported"]:
        state = "blank placeholder (levels 0, all-zero hash)" if report["placeholder"] else "set"
        rows += [("levels", str(report["levels"])), ("root", str(report["root"])), ("state", state)]
    return rows


def _kernel_rows(report: dict[str, object]) -> list[tuple[str, str]]:
    """Rows for a boot image, or a vmlinux without .module_hashes."""
    hashes = report["module_hashes"]
    if hashes == "absent":
        state = "no hash-based module authentication"
    elif hashes == "unknown":
        state = "cannot tell"
    elif report["root"] is None:
        state = "present, but holds no valid root"
    else:
        state = (
            "set" if not report["placeholder"] else "blank placeholder (levels 0, all-zero hash)"
        )
    rows = [
        ("format", " > ".join(report["chain"])),  # type: ignore[arg-type]
        ("machine", f"{report['arch']} ({report['byteorder']} endian)"),
        ("version", str(report["version"] or "unknown (no linux_banner found)")),
        ("module hashes", state),
        ("evidence", str(report["evidence"])),
    ]
    if report["root"] is not None:
        rows += [("levels", str(report["levels"])), ("root", str(report["root"]))]
    return rows


def _kernel_document(
    path: Path, system_map: Path | None, vmlinux: Path | None
) -> dict[str, object]:
    """`inspect`'s answer for any kernel file: vmlinux with the section, else the boot reader."""
    from vmpatch.boot.kernel import is_elf_file, read_kernel
    from vmpatch.elf.vmlinux import locate, location_report

    if system_map is None and vmlinux is None and is_elf_file(path):
        from vmpatch.elf.reader import open_elf

        with open_elf(path) as reader:
            has_section = reader.section(".module_hashes") is not None
        if has_section:
            return location_report(locate(path))
    return read_kernel(path, system_map=system_map, vmlinux=vmlinux).to_dict()


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, value)
    show(table)


@app.command()
def inspect(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="vmlinux, vmlinux.unstripped, boot images (bzImage, Image, ...), modules."
        ),
    ],
    json_: JsonOption = False,
    max_decompressed: MaxDecompressedOption = DEFAULT_MAX_DECOMPRESSED,
    system_map: Annotated[
        Path | None,
        typer.Option(help="Symbol map of a raw boot image (Image, zImage, s390): System.map."),
    ] = None,
    vmlinux: Annotated[
        Path | None,
        typer.Option(help="The vmlinux of a raw boot image, for its symbols."),
    ] = None,
) -> int:
    """Show where a kernel or boot image keeps its module-hash root, or a module's trailer."""

    documents: list[dict[str, object]] = []
    tables: list[tuple[str, list[tuple[str, str]], list[str]]] = []
    for path in files:
        if _is_module(path):
            from vmpatch.ko.report import module_report

            module = module_report(path, max_size=max_decompressed)
            document = module.to_dict()
            rows = module.rows()
        else:
            document = _kernel_document(path, system_map, vmlinux)
            rows = (
                _vmlinux_rows(document) if document["kind"] == "vmlinux" else _kernel_rows(document)
            )
        documents.append(document)
        warnings = document.get("warnings") or []
        tables.append((str(path), rows, list(warnings) if isinstance(warnings, list) else []))
    if json_:
        emit_json(documents[0] if len(documents) == 1 else documents)
    else:
        for title, rows, warnings in tables:
            _print_rows(title, rows)
            for message in warnings:
                warn(f"{title}: {message}")
    unsupported = any(d.get("kind") == "vmlinux" and not d["supported"] for d in documents)
    return EXIT_INPUT if unsupported else 0


def _root_source(
    root_file: Path | None, root: str | None, levels: int | None
) -> tuple[object, str] | None:
    from vmpatch.records.root import DIGEST_SIZE, ModuleHashesRoot
    from vmpatch.workflow.patch import RootSource, decode_root_file

    if root_file is not None:
        if root is not None or levels is not None:
            raise UsageError(None, "--root-file excludes --root/--levels")
        return RootSource(raw=decode_root_file(root_file), origin=str(root_file)), str(root_file)
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
    return RootSource(root=decoded, origin="--root/--levels"), "--root/--levels"


@app.command()
def patch(
    images: Annotated[list[Path], typer.Argument(help="vmlinux images to patch.")],
    root_file: Annotated[
        Path | None,
        typer.Option(help="Raw section content (kbuild's .tmp_module_hashes.bin)."),
    ] = None,
    root: Annotated[str | None, typer.Option(help="Root hash, 64 hex digits.")] = None,
    levels: Annotated[int | None, typer.Option(help="Tree levels for --root.")] = None,
    from_tree: Annotated[
        Path | None,
        typer.Option(help="Build the tree of this kbuild tree (writes .merkle files) and use it."),
    ] = None,
    output: Annotated[
        list[Path] | None,
        typer.Option("--output", "-o", help="Write a patched copy here (once per image)."),
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="With --from-tree: module suffix.")] = None,
    no_proofs: Annotated[
        bool, typer.Option("--no-proofs", help="With --from-tree: write no .merkle files.")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="With --from-tree: hashing threads.")] = None,
    json_: JsonOption = False,
) -> int:
    """Write a new root into .module_hashes, in place or into --output copies."""
    from vmpatch.workflow.patch import RootSource, apply_patches, plan_patches

    chosen = _root_source(root_file, root, levels)
    plan = tree = None
    if from_tree is not None:
        if chosen is not None:
            raise UsageError(None, "--from-tree excludes --root-file and --root/--levels")
        from vmpatch.cli.progress import progress_bar
        from vmpatch.workflow.tree import build_tree, plan_tree

        plan = plan_tree(from_tree, suffix=suffix)
        with progress_bar("hashing modules", len(plan.modules)) as done:
            tree = build_tree(plan, workers=workers, progress=done)
        source = RootSource(root=tree.root, origin=f"tree of {from_tree}")
    elif chosen is None:
        raise UsageError(None, "give the root: --root-file, --root with --levels, or --from-tree")
    else:
        source = chosen[0]  # type: ignore[assignment]
    plans = plan_patches(images, source, outputs=output)  # validates every image first
    if plan is not None and tree is not None and not no_proofs:
        from vmpatch.workflow.tree import write_proofs

        write_proofs(plan, tree)
    results = apply_patches(plans)
    documents = [
        {
            "path": str(r.source),
            "written": str(r.written),
            "offset": r.offset,
            "old": r.old.hex(),
            "new": r.new.hex(),
            "changed": r.changed,
            "byteorder": r.byteorder,
        }
        for r in results
    ]
    if json_:
        emit_json(documents[0] if len(documents) == 1 else documents)
    else:
        for r in results:
            what = "patched" if r.changed else "already carries this root"
            where = "" if r.written == r.source else f" -> {r.written}"
            plain(f"{r.source}{where}: {what} at offset {r.offset:#x}")
    return 0
