# SPDX-License-Identifier: GPL-2.0-or-later
"""The exception tree and the exit-code contract.

Every failure the user can cause or meet is a :class:`VmpatchError` carrying
the file it concerns and a one-line reason. The CLI maps each class to a
distinct exit code in one place (``vmpatch.cli.main``); library code never
calls ``sys.exit``. Third-party exceptions (pyelftools, zstandard, OSError)
are translated into these classes at the few choke points that call them.

Exit codes (documented in README.md, pinned by tests/test_cli_contract.py):

==== =====================================================================
0    success
1    verification failure or mismatch (a module the kernel would reject,
     a result that differs from what was asked)
2    bad usage or bad input (not ELF, truncated, no .module_hashes, ...)
3    the operation failed on the system (not writable, disk full, I/O)
4    a required external tool is missing or failed (strip, objcopy)
130  interrupted (SIGINT)
==== =====================================================================
"""

from __future__ import annotations

import errno
import os
from typing import ClassVar

__all__ = [
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_SYSTEM",
    "EXIT_TOOL",
    "InputError",
    "MismatchError",
    "SystemFailure",
    "ToolError",
    "UnsupportedLayout",
    "UsageError",
    "VmpatchError",
]

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_INPUT = 2
EXIT_SYSTEM = 3
EXIT_TOOL = 4
EXIT_INTERRUPTED = 130


class VmpatchError(Exception):
    """Base class: a one-line, user-facing failure about one file.

    ``path`` names the file (or ``None`` when no single file is to blame),
    ``reason`` says what is wrong with it, ``hint`` optionally says what to
    do about it. ``str(err)`` is the line the CLI prints.
    """

    exit_code: ClassVar[int] = EXIT_INPUT

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        reason: str,
        *,
        hint: str | None = None,
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.reason = reason
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (worker processes hash modules); the
        # default reduction would call __init__ with the message as the path.
        return (_rebuild, (type(self), self.path, self.reason, self.hint))


def _rebuild(
    cls: type[VmpatchError], path: str | None, reason: str, hint: str | None
) -> VmpatchError:
    return cls(path, reason, hint=hint)


class InputError(VmpatchError):
    """The input is malformed, truncated or not what the command needs."""

    exit_code = EXIT_INPUT


class UsageError(VmpatchError):
    """The arguments do not make sense together."""

    exit_code = EXIT_INPUT


class UnsupportedLayout(InputError):
    """Well-formed, but a layout this version does not support (never guessed)."""


class MismatchError(VmpatchError):
    """A check found a difference: a rejected proof, an inconsistent strip."""

    exit_code = EXIT_MISMATCH


class SystemFailure(VmpatchError):
    """The system refused the operation: permissions, space, I/O errors."""

    exit_code = EXIT_SYSTEM

    @classmethod
    def from_oserror(cls, path: str | os.PathLike[str], err: OSError, doing: str) -> VmpatchError:
        """Wrap an ``OSError`` raised while ``doing`` something to ``path``.

        A file that does not exist (or is a directory) is the user's input
        problem, exit 2; permissions, space and I/O errors are the system's.
        """
        reason = f"cannot {doing}: {err.strerror or err}"
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
            return InputError(path, reason)
        return cls(path, reason)


class ToolError(VmpatchError):
    """An external program (strip, objcopy) is missing or failed."""

    exit_code = EXIT_TOOL
