# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch-ko-append``: the lean per-module ``modules_install`` hook.

kbuild runs its install step once per module, thousands of times per kernel,
so this entry point pays for nothing it does not use: argparse and the
stdlib-only parts of vmpatch, never typer, rich or pyelftools (those load
only with ``--kernel``, which needs to read the vmlinux). It is quiet on
success, and on failure prints one line ``vmpatch-ko-append: <error>`` on
stderr and exits with the error's code (see :mod:`vmpatch.errors`), so make
stops with a message a human can act on. The message and the code come from
:func:`vmpatch.errors.describe`, the mapping the ``vmpatch`` CLI uses too.

Usage::

    vmpatch-ko-append [--replace | --stack] [--kernel VMLINUX]
                      [--install-mod-strip VALUE --build-dir DIR [--strip-program P]]
                      [--max-decompressed SIZE] [--no-wait] [--debug] MODULE PROOF
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

PROG = "vmpatch-ko-append"

#: The settings library errors name, as this interface spells them (errors.ToolError).
HOOK_OPTIONS = {"STRIP": "--strip-program"}


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgumentError(message)


def _size(text: str) -> int:
    """``--max-decompressed`` as the CLI takes it: 4096, 1k, 256M (vmpatch.sizes)."""
    from vmpatch.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parser() -> _Parser:
    """The command line; errors raise instead of printing usage and exiting."""
    parser = _Parser(
        prog=PROG,
        description="Append a Merkle proof to a kernel module (a safe `cat PROOF >> MODULE`).",
    )
    parser.add_argument("module", metavar="MODULE", help=".ko, .ko.gz, .ko.xz or .ko.zst")
    parser.add_argument("proof", metavar="PROOF", help="the module's .merkle file")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--replace",
        action="store_true",
        help="replace an existing trailer (one level): the tree was hashed without it",
    )
    existing.add_argument(
        "--stack",
        action="store_true",
        help="append on top of an existing trailer: the tree was hashed with it in place",
    )
    parser.add_argument(
        "--kernel", metavar="VMLINUX", help="check the result against this vmlinux's root first"
    )
    parser.add_argument(
        "--install-mod-strip",
        metavar="VALUE",
        default=None,
        help="INSTALL_MOD_STRIP now; refuse if it differs from the build's (needs --build-dir)",
    )
    parser.add_argument("--build-dir", metavar="DIR", help="the kernel build tree")
    parser.add_argument(
        "--strip-program", metavar="P", help="$(STRIP) now; compared with vmpatch's strip record"
    )
    parser.add_argument(
        "--max-decompressed",
        metavar="SIZE",
        type=_size,
        default=None,
        help="refuse compressed modules larger than this when decompressed "
        "(bytes, or with K, M, G; default 256M)",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="refuse (exit 3) instead of waiting while another vmpatch process holds the module",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show a traceback with errors (for bug reports)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the hook; returns (and exits with) 0 or the error's exit code."""
    from vmpatch.errors import EXIT_INPUT, terminate_on_sigterm

    terminate_on_sigterm()
    parser = _parser()
    args_list = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(args_list)
    except _ArgumentError as err:
        return _fail(f"{err} (hint: see {PROG} --help)", EXIT_INPUT)
    if (args.install_mod_strip is None) != (args.build_dir is None):
        return _fail("--install-mod-strip and --build-dir go together", EXIT_INPUT)
    try:
        _append(args)
    except BaseException as err:  # every failure gets its line and code
        if isinstance(err, SystemExit):
            raise
        return _report(err, debug=args.debug)
    return 0


def _append(args: argparse.Namespace) -> None:
    from vmpatch.ko.proof import append_proof

    check = None
    if args.build_dir is not None:
        from pathlib import Path

        from vmpatch.workflow.strip_tree import StripCheck

        check = StripCheck(Path(args.build_dir), args.install_mod_strip, args.strip_program)
    limit = {} if args.max_decompressed is None else {"max_size": args.max_decompressed}
    append_proof(
        args.module,
        args.proof,
        replace=args.replace,
        stack=args.stack,
        kernel=args.kernel,
        strip_check=check,
        wait=not args.no_wait,
        waiting=_waiting,
        **limit,
    )


def _waiting(message: str) -> None:
    """Said once when another process holds the module: make's output shows why it pauses."""
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def _report(err: BaseException, *, debug: bool) -> int:
    """One line, never a traceback in make's output unless --debug asks for it."""
    from vmpatch.errors import describe

    failure = describe(err, options=HOOK_OPTIONS)
    if failure.silent:
        return failure.exit_code
    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    return _fail(failure.line(), failure.exit_code)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
