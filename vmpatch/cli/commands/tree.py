# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch tree`` and ``vmpatch verify``: the Merkle side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from vmpatch.cli.app import app
from vmpatch.cli.options import DEFAULT_MAX_DECOMPRESSED, JsonOption, MaxDecompressedOption
from vmpatch.cli.output import emit_json, plain, show
from vmpatch.errors import EXIT_MISMATCH, UsageError


@app.command()
def tree(
    build_dir: Annotated[Path, typer.Argument(help="Kernel build tree.")] = Path("."),
    order: Annotated[
        Path | None, typer.Option(help="modules.order to read (default BUILD_DIR/modules.order).")
    ] = None,
    suffix: Annotated[
        str | None,
        typer.Option(help="Module suffix (default .ko, or .ko.stripped when kbuild strips)."),
    ] = None,
    root_out: Annotated[
        Path | None, typer.Option(help="Write the 36-byte section content here.")
    ] = None,
    c_out: Annotated[
        Path | None, typer.Option(help="Write a C definition of the root here.")
    ] = None,
    kernel: Annotated[
        Path | None, typer.Option(help="vmlinux whose byte order --root-out uses.")
    ] = None,
    byteorder: Annotated[
        str | None, typer.Option(help="little or big, when there is no vmlinux to ask.")
    ] = None,
    no_proofs: Annotated[bool, typer.Option("--no-proofs", help="Write no .merkle files.")] = False,
    workers: Annotated[
        int | None, typer.Option(help="Hashing threads (default: all CPUs).")
    ] = None,
    json_: JsonOption = False,
) -> int:
    """Hash every module of modules.order, build the tree, write the proofs and the root."""
    from vmpatch.cli.progress import progress_bar
    from vmpatch.fs.atomic import atomic_write
    from vmpatch.workflow.tree import (
        build_tree,
        plan_tree,
        root_c_source,
        target_byteorder,
        write_proofs,
    )

    if byteorder not in (None, "little", "big"):
        raise UsageError(None, f"--byteorder must be little or big, not {byteorder!r}")
    order_arg: Literal["little", "big"] | None = byteorder  # type: ignore[assignment]
    from vmpatch.fs.atomic import check_target

    for target in (root_out, c_out):
        if target is not None:
            check_target(target)  # before any proof is written
    plan = plan_tree(build_dir, order_file=order, suffix=suffix)
    order_bytes = None
    if root_out is not None:  # decided before any hashing or writing
        order_bytes = target_byteorder(kernel=kernel, build_dir=build_dir, byteorder=order_arg)
    with progress_bar("hashing modules", len(plan.modules)) as done:
        merkle = build_tree(plan, workers=workers, progress=done)
    root = merkle.root
    if not no_proofs:
        write_proofs(plan, merkle)
    if root_out is not None and order_bytes is not None:
        atomic_write(root_out, root.encode(order_bytes))
    if c_out is not None:
        atomic_write(c_out, root_c_source(root).encode())
    if json_:
        emit_json(
            {
                "build_dir": str(plan.build_dir),
                "levels": root.levels,
                "root": root.digest.hex(),
                "modules": len(plan.modules),
                "suffix": plan.suffix,
                "proofs_written": not no_proofs,
            }
        )
    else:
        plain(
            f"modules {len(plan.modules)}",
            f"levels  {root.levels}",
            f"root    {root.digest.hex()}",
        )
    return 0


@app.command()
def verify(
    modules: Annotated[
        list[Path] | None, typer.Argument(help="Module files (.ko, .ko.gz, .ko.xz, .ko.zst).")
    ] = None,
    kernel: Annotated[Path, typer.Option(help="The vmlinux whose root decides.")] = ...,  # type: ignore[assignment]
    modules_dir: Annotated[
        Path | None,
        typer.Option("--modules", help="Take the modules from DIR/modules.order."),
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="With --modules: module suffix.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="The kernel's config (.config, /boot/config-*, or a build tree): decides "
            "in-kernel decompression, its codec and MODULE_SIG_FORCE."
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
    json_: JsonOption = False,
) -> int:
    """Tell, for each module, whether the kernel will load it, and why not."""
    from vmpatch.cli.progress import progress_bar
    from vmpatch.workflow.verify import (
        LoadPath,
        assumptions,
        kernel_model,
        modules_of_build_dir,
        verify_files,
    )

    paths = list(modules or [])
    if modules_dir is not None:
        paths += modules_of_build_dir(modules_dir, suffix)
    if not paths:
        raise UsageError(None, "no modules given: name them, or use --modules DIR")
    model = kernel_model(kernel, config)
    forced = None if load_path is None else LoadPath(load_path)
    with progress_bar("verifying modules", len(paths)) as done:
        results = verify_files(
            model, paths, max_size=max_decompressed, progress=done, load_path=forced
        )
    assumed = assumptions(model, forced)
    rejected = sum(1 for r in results if r.verdict.verdict == "REJECT")
    if json_:
        emit_json(
            {
                "kernel": str(kernel),
                "module_hashes": model.merkle,
                "levels": model.root.levels,
                "root": model.root.digest.hex(),
                "pkcs7_support": model.pkcs7.value,
                "config": model.config,
                "module_decompress": model.decompress,
                "assumptions": assumed,
                "rejected": rejected,
                "modules": [
                    {
                        "path": str(r.path),
                        "verdict": r.verdict.verdict,
                        "errno": r.verdict.errno,
                        "load_result": r.verdict.load_result,
                        "lockdown_result": r.verdict.lockdown_result,
                        "position": r.verdict.position,
                        "trailer": r.verdict.trailer,
                        "reason": r.verdict.reason,
                        "load_path": r.load_path.value,
                    }
                    for r in results
                ],
            }
        )
    else:
        from rich.table import Table

        title = (
            f"kernel root levels={model.root.levels} {model.root.digest.hex()}"
            if model.merkle
            else "kernel without MODULE_HASHES (no .module_hashes section)"
        )
        table = Table(title=title)
        for column in ("module", "verdict", "errno", "load (enforcing)", "reason"):
            table.add_column(column, overflow="fold")
        for r in results:
            v = r.verdict
            style = {"ACCEPT": "green", "REJECT": "red"}.get(v.verdict, "yellow")
            table.add_row(
                str(r.path),
                f"[{style}]{v.verdict}[/]",
                v.errno or "-",
                v.load_result,
                v.reason,
            )
        show(table)
        paths_used = sorted({r.load_path.description for r in results})
        for line in [f"loading path: {p}" for p in paths_used] + assumed:
            show(f"assumes {line}" if not line.startswith("loading") else line)
        show(f"{len(results) - rejected} of {len(results)} modules accepted or unchecked")
    return EXIT_MISMATCH if rejected else 0
