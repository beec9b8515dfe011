# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch-ko-append``: the lean per-module ``modules_install`` hook.

kbuild runs its install step once per module, thousands of times per kernel,
so this entry point pays for nothing it does not use: argparse and the
stdlib-only parts of vmpatch, never typer, rich or pyelftools (those load
only with ``--kernel``, which needs to read the vmlinux). It is quiet on
success, and on failure prints one line ``vmpatch-ko-append: <error>`` on
stderr and exits with the error's code (see :mod:`vmpatch.errors`), so make
stops with a message a human can act on.

Usage::

    vmpatch-ko-append [--replace | --stack] [--kernel VMLINUX]
                      [--install-mod-strip VALUE --build-dir DIR [--strip-program P]]
                      [--max-decompressed BYTES] MODULE PROOF
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

PROG = "vmpatch-ko-append"


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgumentError(message)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


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
        metavar="BYTES",
        type=_positive,
        default=None,
        help="refuse compressed modules larger than this when decompressed (256 MiB)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the hook; returns (and exits with) 0 or the error's exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except _ArgumentError as err:
        return _fail(str(err), 2)
    if (args.install_mod_strip is None) != (args.build_dir is None):
        return _fail("--install-mod-strip and --build-dir go together", 2)

    from vmpatch.errors import VmpatchError
    from vmpatch.ko.proof import append_proof

    check = None
    if args.build_dir is not None:
        from pathlib import Path

        from vmpatch.workflow.strip_tree import StripCheck

        check = StripCheck(Path(args.build_dir), args.install_mod_strip, args.strip_program)
    limit = {} if args.max_decompressed is None else {"max_size": args.max_decompressed}
    try:
        append_proof(
            args.module,
            args.proof,
            replace=args.replace,
            stack=args.stack,
            kernel=args.kernel,
            strip_check=check,
            **limit,
        )
    except VmpatchError as err:
        return _fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as err:
        return _fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "), 3)
    except Exception as err:  # a bug: still one line, never a traceback in make's output
        return _fail(f"internal error: {type(err).__name__}: {err} (please report)", 70)
    return 0


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: {message}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
