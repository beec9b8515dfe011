# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify``: what the kernel will say of each module, and why."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from vmpatch.cli.app import Command, app
from vmpatch.cli.options import DEFAULT_MAX_DECOMPRESSED, JsonOption, MaxDecompressedOption
from vmpatch.cli.output import emit_json, file_errors, plain, show, warn
from vmpatch.errors import UsageError

if TYPE_CHECKING:
    from vmpatch.workflow.results import FileError
    from vmpatch.workflow.verify import ModuleVerdict, VerifyReport


@app.command(cls=Command)
def verify(
    modules: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[MODULE...|KVER]",
            readable=False,
            help="Module files (.ko, .ko.gz, .ko.xz, .ko.zst); with --system, the kernel "
            "release (default: uname -r, or under --root the one installed there).",
        ),
    ] = None,
    kernel: Annotated[
        Path | None,
        typer.Option(
            readable=False,
            help="The kernel whose root decides: a vmlinux or a boot image (bzImage, UKI, ...).",
        ),
    ] = None,
    system: Annotated[
        bool,
        typer.Option(
            "--system",
            help="Judge an installed kernel and its modules: /boot/vmlinuz-KVER (or "
            "usr/lib/modules/KVER/vmlinuz, or a UKI under EFI/Linux/), /boot/config-KVER, "
            "lib/modules/KVER, and the running kernel's sig_enforce and lockdown.",
        ),
    ] = False,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            metavar="DIR",
            readable=False,
            help="With --system: a mounted image to read instead of / (like depmod -b).",
        ),
    ] = None,
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
    reference_tree: Annotated[
        Path | None,
        typer.Option(
            "--tree",
            readable=False,
            help="The tree that was hashed (kbuild or install): explains rejections "
            "with its module at each proof's position.",
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            readable=False,
            help="A leaf manifest (modules.leaves) to explain rejections with; default "
            "--modules DIR's own, when it has one.",
        ),
    ] = None,
    other_kernel: Annotated[
        list[Path] | None,
        typer.Option(
            readable=False,
            help="An image whose root a foreign proof may belong to (repeatable).",
        ),
    ] = None,
    max_decompressed: MaxDecompressedOption = DEFAULT_MAX_DECOMPRESSED,
    failures: Annotated[
        bool, typer.Option("--failures", help="List only the modules that do not load.")
    ] = False,
    summary: Annotated[
        bool,
        typer.Option(
            "--summary",
            help="Print one line of counts instead of the table.",
        ),
    ] = False,
    json_: JsonOption = False,
) -> int:
    """Tell, for each module, whether the kernel will load it, and why not."""
    from vmpatch.cli.progress import progress_bar
    from vmpatch.workflow.verify import LoadPath, run_verify, run_verify_system

    if summary and json_:
        raise UsageError(None, "--summary is a one-line human form; --json always has the counts")
    chosen_path = None if load_path is None else LoadPath(load_path)
    if system:
        if kernel is not None or modules_dir is not None or suffix is not None:
            raise UsageError(None, "--system finds the kernel and modules; drop --kernel/--modules")
        if modules and len(modules) > 1:
            raise UsageError(None, "--system takes one KVER, not module files")
        report = run_verify_system(
            root,
            str(modules[0]) if modules else None,
            config=config,
            max_size=max_decompressed,
            progress=progress_bar,
            load_path=chosen_path,
            tree=reference_tree,
            manifest=manifest,
            other_kernels=other_kernel or [],
        )
    else:
        if root is not None:
            raise UsageError(None, "--root is for --system")
        if kernel is None:
            raise UsageError(None, "missing option --kernel (or use --system)")
        report = run_verify(
            kernel,
            modules or [],
            modules_dir=modules_dir,
            suffix=suffix,
            max_size=max_decompressed,
            progress=progress_bar,
            config=config,
            load_path=chosen_path,
            tree=reference_tree,
            manifest=manifest,
            other_kernels=other_kernel or [],
        )
    shown = report.failures() if failures else report
    file_errors((*report.modules, *report.unlisted))
    if json_:
        emit_json("verify", shown)
    elif summary:
        plain(_summary_line(report), *_unlisted_line(report))
    else:
        _system_lines(shown)
        _verify_table(shown)
        _unlisted_table(shown)
        _explanations(shown)
        show(_summary_line(report))
        for line in _unlisted_line(report):
            show(line)
        if report.tree_state:
            show(report.tree_state)
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


def _summary_line(report: "VerifyReport") -> str:
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


def _explanations(report: "VerifyReport") -> None:
    """One line of cause per refused module, then what to do about it (never wrapped)."""
    from vmpatch.workflow.results import FileError

    lines = []
    for r in report.modules:
        if isinstance(r, FileError) or r.explanation is None:
            continue
        why = r.explanation
        lines.append(f"{r.path}: {why.cause}: {why.detail}")
        if why.hint:
            lines.append(f"  {why.hint}")
    plain(*lines)


def _verify_table(report: "VerifyReport") -> None:
    from vmpatch.cli.tables import Cell, Column, records
    from vmpatch.workflow.results import FileError

    if not report.module_hashes:
        title = "kernel without MODULE_HASHES (no .module_hashes section)"
    else:
        title = f"kernel root levels={report.levels} {report.root_hex}"
        if report.placeholder:
            title += " (blank placeholder: never patched)"
    columns = [
        Column("module"),
        Column("verdict"),
        Column("errno"),
        Column("load (enforcing)"),
        Column("reason", free=True),
    ]
    rows: list[list[Cell]] = []
    for r in report.modules:
        if isinstance(r, FileError):
            rows.append([str(r.path), ("ERROR", "red"), "-", "-", r.error.reason])
            continue
        style = {"ACCEPT": "green", "REJECT": "red"}.get(r.verdict, "yellow")
        rows.append([str(r.path), (r.verdict, style), r.errno or "-", r.load_result, r.reason])
    records(title, columns, rows)
    paths_used = sorted(
        {r.load_path.description for r in report.modules if not isinstance(r, FileError)}
    )
    for line in [f"loading path: {p}" for p in paths_used]:
        show(line)
    for line in report.assumptions:
        show(f"assumes {line}")


def _system_lines(report: "VerifyReport") -> None:
    """With --system: which kernel, config and module tree were found, and the enforcement."""
    found = report.system
    if found is not None:
        show(f"kernel {found.kver}: {found.image}")
        show(f"modules {found.modules}")
        show(f"config {found.config or '(none found)'}")
    enforcement = report.enforcement
    if enforcement is not None and found is not None:
        said = "; ".join(enforcement.evidence) or "nothing read"
        guess = " (assumed)" if enforcement.assumed else ""
        show(f"enforcement {enforcement.mode}{guess}: {said}")


def _unlisted_line(report: "VerifyReport") -> list[str]:
    """The counts of the modules modules.order does not name (they also decide the exit code)."""
    from vmpatch.workflow.verify import count_verdicts

    if not report.unlisted:
        return []
    counts = count_verdicts(report.unlisted)
    parts = [f"{counts.accept} accepted", f"{counts.reject} rejected"]
    parts.append(f"{counts.unchecked} unchecked")
    if counts.error:
        parts.append(f"{counts.error} unreadable")
    return [f"{len(report.unlisted)} not in modules.order: " + ", ".join(parts)]


def _unlisted_table(report: "VerifyReport") -> None:
    """Module files modules.order does not name (out-of-tree, DKMS), apart from the rest."""
    from rich.markup import escape
    from rich.table import Table

    from vmpatch.workflow.results import FileError

    if not report.unlisted:
        return
    tree = report.modules_dir
    where = f"{tree}/modules.order" if tree is not None else "modules.order"
    table = Table(title=f"not in {where} (out-of-tree, DKMS)")

    def shown_path(r: "ModuleVerdict | FileError") -> str:
        return str(r.path.relative_to(tree) if tree is not None else r.path)

    longest = max(len(shown_path(r)) for r in report.unlisted)
    table.add_column("module", overflow="fold", min_width=min(longest, 40))
    for column in ("trailer", "verdict", "result", "reason"):
        table.add_column(column, overflow="fold")
    for r in report.unlisted:
        if isinstance(r, FileError):
            table.add_row(escape(shown_path(r)), "-", "[red]ERROR[/]", "-", escape(r.error.reason))
            continue
        style = {"ACCEPT": "green", "REJECT": "red"}.get(r.verdict, "yellow")
        table.add_row(
            escape(shown_path(r)),
            str(r.trailer["kind"]),
            f"[{style}]{r.verdict}[/]",
            r.result,
            escape(r.reason),
        )
    show(table)
