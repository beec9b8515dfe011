# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``vmpatch`` command line: a thin client of the library.

Each command parses its options, calls one library function, and hands the
result to :mod:`vmpatch.cli.output`. Errors travel as
:class:`vmpatch.errors.VmpatchError` to :func:`main`, which prints the one
line and exits with the code :func:`vmpatch.errors.describe` gives them, the
mapping the hook uses too.

``vmpatch --version`` alone is answered before the app is imported: typer
and click are 0.1 s of start-up, five times ``python -c pass`` without an
editable finder on the path (issue 12 holds ``--version`` to 5x).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (6 ms)
if TYPE_CHECKING:
    from vmpatch.cli.app import app

__all__ = ["app", "main", "version_line"]


def version_line() -> str:
    """What ``vmpatch --version`` prints."""
    from vmpatch import FORMAT_VERSION, __version__

    return f"vmpatch {__version__} (format {FORMAT_VERSION})"


def main(argv: list[str] | None = None) -> None:
    """Console entry point (:func:`vmpatch.cli.app.main`, the app and its exit codes).

    Run as the program (no ``argv``), it ends the process itself once the
    command is done (:func:`_exit_now`); with ``argv`` it raises SystemExit
    like any library call, for callers and tests that go on.
    """
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(version_line())
        sys.exit(0)
    from vmpatch.cli.app import main as run_app

    if argv is not None:
        run_app(argv)
        return
    try:
        run_app(None)
    except SystemExit as done:
        if (isinstance(done.code, int) or done.code is None) and _nothing_waits_for_exit():
            _exit_now(done.code or 0)
        raise


def _nothing_waits_for_exit() -> bool:
    """No atexit handler, profiler or tracer would miss the interpreter's exit.

    cProfile and coverage write their data when the interpreter exits, and a
    library may register its own clean-up (logging does when imported).
    """
    import atexit

    count = getattr(atexit, "_ncallbacks", None)  # CPython's count of registered handlers
    return (
        count is not None and count() == 0 and sys.getprofile() is None and sys.gettrace() is None
    )


def _exit_now(code: int) -> None:
    """Flush the output and end the process, without tearing the interpreter down.

    Finalization frees every module and object one by one: after ``vmpatch
    tree`` printed its root, 12 ms of a 0.6 s run (25-45 ms before start-up
    was frozen for gc; Debian's 4230 modules in tmpfs, under strace). mypy
    ends the same way (mypy.util.hard_exit). Nothing here needs the
    interpreter's exit: vmpatch registers no atexit handler, its thread pools
    and temporary directories are closed by ``with`` before this, and its
    worker processes are reaped; :func:`_nothing_waits_for_exit` checks the
    rest. If the last flush fails, the interpreter's own exit reports it as
    it would have.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code)


def __getattr__(name: str) -> object:
    """``vmpatch.cli.app``'s typer app, imported when first asked for."""
    if name == "app":
        from vmpatch.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
