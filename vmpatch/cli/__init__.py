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
    """Console entry point (:func:`vmpatch.cli.app.main`, the app and its exit codes)."""
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(version_line())
        sys.exit(0)
    from vmpatch.cli.app import main as run_app

    run_app(argv)


def __getattr__(name: str) -> object:
    """``vmpatch.cli.app``'s typer app, imported when first asked for."""
    if name == "app":
        from vmpatch.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
