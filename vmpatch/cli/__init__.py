# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``vmpatch`` command line: a thin client of the library.

Each command parses its options, calls one library function, and hands the
result to :mod:`vmpatch.cli.output`. Errors travel as
:class:`vmpatch.errors.VmpatchError` to :func:`main`, which prints the one
line and exits with the code :func:`vmpatch.errors.describe` gives them, the
mapping the hook uses too.
"""

from vmpatch.cli.app import app, main

__all__ = ["app", "main"]
