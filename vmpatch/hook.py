# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch-ko-append``: the lean per-module ``modules_install`` hook.

kbuild runs its install step once per module, thousands of times per kernel,
so this entry point pays for nothing it does not use: the stdlib-only parts
of vmpatch, never typer, rich or pyelftools (those load only with
``--kernel``, which needs to read the vmlinux), nor argparse, dataclasses
(:mod:`vmpatch.frozen` says why) or typing; tests/test_layers.py runs a real
append and holds that list. It is quiet on
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

import sys

__all__ = ["main"]

PROG = "vmpatch-ko-append"

#: The settings library errors name, as this interface spells them (errors.ToolError).
HOOK_OPTIONS = {"STRIP": "--strip-program"}

#: The command line is parsed by hand, not by argparse: argparse (with gettext
#: and its helpers) was about 4 ms of a call's imports (python -X importtime),
#: paid thousands of times per kernel.
USAGE = f"""usage: {PROG} [-h] [--replace | --stack] [--kernel VMLINUX]
       [--install-mod-strip VALUE --build-dir DIR [--strip-program P]]
       [--max-decompressed SIZE] [--debug] MODULE PROOF

Append a Merkle proof to a kernel module (a safe `cat PROOF >> MODULE`).

positional arguments:
  MODULE                     .ko, .ko.gz, .ko.xz or .ko.zst
  PROOF                      the module's .merkle file

options:
  -h, --help                 show this help message and exit
  --replace                  replace an existing trailer (one level): the tree
                             was hashed without it
  --stack                    append on top of an existing trailer: the tree was
                             hashed with it in place
  --kernel VMLINUX           check the result against this vmlinux's root first
  --install-mod-strip VALUE  INSTALL_MOD_STRIP now; refuse if it differs from
                             the build's (needs --build-dir)
  --build-dir DIR            the kernel build tree
  --strip-program P          $(STRIP) now; compared with vmpatch's strip record
  --max-decompressed SIZE    refuse compressed modules larger than this when
                             decompressed (bytes, or with K, M, G; default 256M)
  --debug                    show a traceback with errors (for bug reports)
"""

_FLAGS = {
    "--replace": "replace",
    "--stack": "stack",
    "--debug": "debug",
    "--no-wait": "no_wait",
}
_VALUED = {
    "--kernel": "kernel",
    "--install-mod-strip": "install_mod_strip",
    "--build-dir": "build_dir",
    "--strip-program": "strip_program",
    "--max-decompressed": "max_decompressed",
}


class _ArgumentError(Exception):
    pass


class _Args:
    """The parsed command line (what argparse's Namespace held)."""

    def __init__(self) -> None:
        self.module = ""
        self.proof = ""
        self.replace = False
        self.stack = False
        self.debug = False
        self.no_wait = False
        self.help = False
        self.kernel: str | None = None
        self.install_mod_strip: str | None = None
        self.build_dir: str | None = None
        self.strip_program: str | None = None
        self.max_decompressed: int | None = None


def _size(text: str) -> int:
    """``--max-decompressed`` as the CLI takes it: 4096, 1k, 256M (vmpatch.sizes)."""
    from vmpatch.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise _ArgumentError(f"argument --max-decompressed: {err}") from None


def _parse(argv: list[str]) -> _Args:
    """``[options] MODULE PROOF``; options as ``--name VALUE`` or ``--name=VALUE``."""
    args = _Args()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            positional += argv[i:]
            break
        if word in ("-h", "--help"):
            args.help = True
            return args
        name, eq, value = word.partition("=")
        if name in _FLAGS and not eq:
            setattr(args, _FLAGS[name], True)
        elif name in _VALUED:
            if not eq:
                if i >= len(argv):
                    raise _ArgumentError(f"argument {name}: expected one argument")
                value = argv[i]
                i += 1
            attribute = _VALUED[name]
            setattr(args, attribute, _size(value) if attribute == "max_decompressed" else value)
        elif word.startswith("-") and word != "-":
            raise _ArgumentError(f"unrecognized argument: {word}")
        else:
            positional.append(word)
    if args.replace and args.stack:
        raise _ArgumentError("argument --stack: not allowed with argument --replace")
    if len(positional) != 2:
        missing = ["MODULE", "PROOF"][len(positional) :]
        if missing:
            raise _ArgumentError(f"the following arguments are required: {', '.join(missing)}")
        raise _ArgumentError(f"unrecognized arguments: {' '.join(positional[2:])}")
    args.module, args.proof = positional
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the hook; returns (and exits with) 0 or the error's exit code."""
    from vmpatch.errors import EXIT_INPUT, terminate_on_sigterm

    terminate_on_sigterm()
    args_list = sys.argv[1:] if argv is None else argv
    try:
        args = _parse(args_list)
    except _ArgumentError as err:
        return _fail(f"{err} (hint: see {PROG} --help)", EXIT_INPUT)
    if args.help:
        sys.stdout.write(USAGE)
        return 0
    if (args.install_mod_strip is None) != (args.build_dir is None):
        return _fail("--install-mod-strip and --build-dir go together", EXIT_INPUT)
    try:
        _append(args)
    except BaseException as err:  # every failure gets its line and code
        if isinstance(err, SystemExit):
            raise
        return _report(err, debug=args.debug)
    return 0


def _append(args: _Args) -> None:
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
