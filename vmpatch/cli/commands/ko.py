# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch ko ...``: append, remove and prepare module trailers.

A thin client of :mod:`vmpatch.ko.proof`: each command parses its options,
makes one library call and renders the results (a rich table on stdout, or
one JSON document with ``--json``). Errors travel to ``vmpatch.cli.main``.
The per-module install hook with the same job as ``ko append`` is the lean
``vmpatch-ko-append`` (:mod:`vmpatch.hook`); this is the interactive form.
"""

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from vmpatch.cli.app import Command
from vmpatch.cli.options import (
    DEFAULT_MAX_DECOMPRESSED,
    JsonOption,
    MaxDecompressedOption,
    NoWaitOption,
    WorkersOption,
)
from vmpatch.cli.output import emit_json, show, warn
from vmpatch.errors import UsageError

__all__ = ["ko_app"]

ko_app = typer.Typer(
    help="Append Merkle proofs to modules, remove trailers, strip modules as kbuild does.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ReplaceOption = Annotated[
    bool, typer.Option("--replace", help="Replace an existing trailer (one level only).")
]
StackOption = Annotated[
    bool,
    typer.Option(
        "--stack",
        help="Append on top of an existing trailer (a signature the tree was hashed with).",
    ),
]
KernelOption = Annotated[
    Path | None,
    typer.Option(
        "--kernel",
        readable=False,
        help="Check the result against this vmlinux's root before writing.",
    ),
]
InstallModStripNowOption = Annotated[
    str | None,
    typer.Option(help="INSTALL_MOD_STRIP now; refuse if the build used another value."),
]


#: Columns whose text is prose, free to wrap at spaces; every other cell is a value.
_FREE_TEXT = frozenset({"action", "removed"})


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from vmpatch.cli.tables import Column, records

    records(title, [Column(c, free=c in _FREE_TEXT) for c in columns], rows)


@dataclass(frozen=True)
class ModuleResults:
    """The document of a ``ko`` command: one entry per module, a list whatever their number."""

    modules: tuple[Any, ...]


def _echo(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _append_rows(results: Sequence[Any]) -> list[list[str]]:
    return [
        [
            str(r.module),
            r.action
            + (f" ({r.replaced_kind})" if r.replaced_kind else "")
            + (f" (on {r.stacked_on})" if r.stacked_on else "")
            + (" (chosen by the kernel check)" if r.chosen_by_kernel else ""),
            str(r.position),
            str(r.levels),
            r.codec,
            r.verdict or "-",
        ]
        for r in results
    ]


_APPEND_COLUMNS = ("module", "action", "position", "levels", "codec", "kernel")


@ko_app.command("append", cls=Command)
def append(
    module: Annotated[
        Path,
        typer.Argument(
            metavar="MODULE", readable=False, help="The module: .ko, .ko.gz, .ko.xz or .ko.zst."
        ),
    ],
    proof: Annotated[
        Path, typer.Argument(metavar="PROOF", readable=False, help="Its .merkle proof file.")
    ],
    replace: ReplaceOption = False,
    stack: StackOption = False,
    kernel: KernelOption = None,
    install_mod_strip: InstallModStripNowOption = None,
    build_dir: Annotated[
        Path | None,
        typer.Option(readable=False, help="The build tree whose strip record to compare with."),
    ] = None,
    strip_program: Annotated[
        str | None, typer.Option(help="$(STRIP) now, compared with vmpatch's strip record.")
    ] = None,
    max_decompressed: MaxDecompressedOption = DEFAULT_MAX_DECOMPRESSED,
    no_wait: NoWaitOption = False,
    json_: JsonOption = False,
) -> None:
    """Append PROOF to MODULE, like kbuild's `cat PROOF >> MODULE`, but safely."""
    from vmpatch.ko.proof import append_proof

    check = _strip_check(install_mod_strip, build_dir, strip_program)
    result = append_proof(
        module,
        proof,
        replace=replace,
        stack=stack,
        kernel=kernel,
        strip_check=check,
        max_size=max_decompressed,
        wait=not no_wait,
        waiting=warn,
    )
    if json_:
        emit_json("ko append", ModuleResults((result,)))
    else:
        _table("ko append", _APPEND_COLUMNS, _append_rows([result]))


def _strip_check(install_mod_strip: str | None, build_dir: Path | None, program: str | None) -> Any:
    from vmpatch.workflow.strip_tree import StripCheck

    if install_mod_strip is None and build_dir is None:
        if program is not None:
            raise UsageError(None, "--strip-program needs --install-mod-strip and --build-dir")
        return None
    if install_mod_strip is None or build_dir is None:
        raise UsageError(None, "--install-mod-strip and --build-dir go together")
    return StripCheck(build_dir, install_mod_strip, program)


@ko_app.command("append-tree", cls=Command)
def append_tree(
    build_dir: Annotated[
        Path,
        typer.Argument(
            metavar="BUILD_DIR", readable=False, help="The kernel build tree (has modules.order)."
        ),
    ],
    dest: Annotated[
        Path | None,
        typer.Option(
            readable=False,
            help="A staged install dir: append to DEST/kernel/<path>.ko[.gz|.xz|.zst].",
        ),
    ] = None,
    suffix: Annotated[
        str | None, typer.Option(help="Module suffix in the build tree (.ko or .ko.stripped).")
    ] = None,
    replace: ReplaceOption = False,
    stack: StackOption = False,
    kernel: KernelOption = None,
    install_mod_strip: InstallModStripNowOption = None,
    max_decompressed: MaxDecompressedOption = DEFAULT_MAX_DECOMPRESSED,
    workers: WorkersOption = None,
    no_wait: NoWaitOption = False,
    json_: JsonOption = False,
) -> None:
    """Append every module's .merkle in one process; nothing is written unless all pass."""
    from vmpatch.cli.progress import progress_bar
    from vmpatch.workflow.append_tree import append_tree as run
    from vmpatch.workflow.strip_tree import StripCheck

    check = StripCheck(build_dir, install_mod_strip) if install_mod_strip is not None else None
    results = run(
        build_dir,
        dest=dest,
        suffix=suffix,
        replace=replace,
        stack=stack,
        kernel=kernel,
        strip_check=check,
        max_size=max_decompressed,
        workers=workers,
        progress=progress_bar,
        wait=not no_wait,
        waiting=warn,
    )
    if json_:
        emit_json("ko append-tree", ModuleResults(tuple(results)))
    else:
        _table(f"ko append-tree {build_dir}", _APPEND_COLUMNS, _append_rows(results))


@ko_app.command("strip-proof", cls=Command)
def strip_proof(
    modules: Annotated[
        list[Path],
        typer.Argument(
            metavar="MODULE...", readable=False, help="Modules to take the trailer off."
        ),
    ],
    all_: Annotated[
        bool, typer.Option("--all", help="Remove stacked trailers too, until none is left.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", readable=False, help="Write the result here (one MODULE only)."
        ),
    ] = None,
    max_decompressed: MaxDecompressedOption = DEFAULT_MAX_DECOMPRESSED,
    no_wait: NoWaitOption = False,
    json_: JsonOption = False,
) -> None:
    """Remove the last trailer (proof or signature), leaving the bytes the kernel hashes."""
    from vmpatch.ko.proof import strip_proof as run

    if output is not None and len(modules) != 1:
        raise UsageError(None, "--output takes exactly one MODULE")
    results = [
        run(
            m,
            all_trailers=all_,
            output=output,
            max_size=max_decompressed,
            wait=not no_wait,
            waiting=warn,
        )
        for m in modules
    ]
    if json_:
        emit_json("ko strip-proof", ModuleResults(tuple(results)))
        return
    rows = [
        [
            str(r.module),
            r.action,
            ", ".join(r.removed) or "-",
            str(r.module_size),
            str(r.written) if r.written is not None else "-",
        ]
        for r in results
    ]
    _table("ko strip-proof", ("module", "action", "removed", "module bytes", "written"), rows)


@ko_app.command("strip", cls=Command)
def strip(
    install_mod_strip: Annotated[
        str,
        typer.Option(help="INSTALL_MOD_STRIP: '' (copy), '1' (--strip-debug) or strip options."),
    ],
    modules: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[MODULE...]", readable=False, help="Modules (.ko) to strip into %.ko.stripped."
        ),
    ] = None,
    strip_program: Annotated[
        str | None, typer.Option(help="$(STRIP), as `make STRIP=...` would set it.")
    ] = None,
    llvm: Annotated[str | None, typer.Option(help="LLVM=1, LLVM=/prefix/ or LLVM=-suffix.")] = None,
    cross_compile: Annotated[str, typer.Option(help="CROSS_COMPILE prefix.")] = "",
    tree: Annotated[
        Path | None,
        typer.Option(readable=False, help="Strip every module of this build tree's modules.order."),
    ] = None,
    no_wait: NoWaitOption = False,
    json_: JsonOption = False,
) -> None:
    """Make %.ko.stripped beside each %.ko exactly as kbuild does (commands echoed on stderr)."""
    from vmpatch.ko.strip import strip_program as program_for
    from vmpatch.workflow.strip_tree import make_stripped, make_stripped_tree

    program = program_for(llvm=llvm, cross_compile=cross_compile, override=strip_program)
    record = None
    if tree is not None:
        if modules:
            raise UsageError(None, "give MODULE... or --tree, not both")
        made, record = make_stripped_tree(
            tree, install_mod_strip, program, echo=_echo, wait=not no_wait, waiting=warn
        )
    elif modules:
        made = make_stripped(
            modules, install_mod_strip, program, echo=_echo, wait=not no_wait, waiting=warn
        )
    else:
        raise UsageError(None, "give MODULE... or --tree BUILD_DIR")
    if json_:
        from vmpatch.workflow.strip_tree import StripReport

        emit_json("ko strip", StripReport(install_mod_strip, program, record, tuple(made)))
        return
    _table("ko strip", ("module", "stripped"), [[str(m.source), str(m.stripped)] for m in made])
    if record is not None:
        show(f"record: {record}")
