# SPDX-License-Identifier: GPL-2.0-or-later
"""The exception tree and the exit-code contract.

Every failure the user can cause or meet is a :class:`VmpatchError` carrying
the file it concerns and a one-line reason. Library code never
calls ``sys.exit``; third-party exceptions (pyelftools, zstandard, OSError)
are translated into these classes at the few choke points that call them.

Both entry points, the ``vmpatch`` CLI and the ``vmpatch-ko-append`` hook,
turn whatever reached them into the line they print and the code they exit
with through one function, :func:`describe`, so they cannot disagree. The
exit-code contract itself is data, :data:`EXIT_STATUSES`: the README table
and the man page's EXIT STATUS section are generated from it
(``scripts/make-manpage``; tests/test_manpage.py fails when either is stale).

This module imports only the standard library: the lean hook imports it.
"""

from __future__ import annotations

import errno
import os
import signal

from vmpatch.frozen import frozen

#: typing loads only for type checkers (mypy reads this constant as true): the
#: install hook imports this module (vmpatch.frozen says what its imports cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import ClassVar

__all__ = [
    "EXIT_BUG",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_STATUSES",
    "EXIT_SYSTEM",
    "EXIT_TERMINATED",
    "EXIT_TOOL",
    "ExitStatus",
    "Failure",
    "InputError",
    "MismatchError",
    "OutputClosed",
    "SystemFailure",
    "Terminated",
    "ToolError",
    "UnsupportedLayout",
    "UsageError",
    "VmpatchError",
    "describe",
    "terminate_on_sigterm",
]

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_INPUT = 2
EXIT_SYSTEM = 3
EXIT_TOOL = 4
#: EX_SOFTWARE (sysexits.h): an internal error, a bug in vmpatch.
EXIT_BUG = 70
#: 128 + SIGINT, what a shell reports for a process killed by Ctrl-C.
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE: stdout was closed by its reader, as a shell reports a SIGPIPE death.
EXIT_OUTPUT_CLOSED = 141
#: 128 + SIGTERM: stopped by ``kill`` (or make stopping its jobs), after cleaning up.
EXIT_TERMINATED = 143


@frozen
class ExitStatus:
    """One row of the exit-code contract; ``meaning`` may hold `code` spans."""

    code: int
    name: str
    meaning: str


#: The whole exit-code contract, once. README.md's table and the man page's
#: EXIT STATUS section are generated from these rows (scripts/make-manpage).
EXIT_STATUSES: tuple[ExitStatus, ...] = (
    ExitStatus(EXIT_OK, "EXIT_OK", "success"),
    ExitStatus(
        EXIT_MISMATCH,
        "EXIT_MISMATCH",
        "a verification failure or mismatch (a module the kernel would reject, "
        "an INSTALL_MOD_STRIP that differs from the build's)",
    ),
    ExitStatus(
        EXIT_INPUT,
        "EXIT_INPUT",
        "bad usage or bad input (not ELF, truncated, no `.module_hashes`, unsupported "
        "layout, malformed `modules.order` or proof, a file that does not exist)",
    ),
    ExitStatus(
        EXIT_SYSTEM,
        "EXIT_SYSTEM",
        "the system refused: a file not readable or not writable, disk full, an I/O error",
    ),
    ExitStatus(EXIT_TOOL, "EXIT_TOOL", "an external tool (strip) is missing or failed"),
    ExitStatus(
        EXIT_BUG,
        "EXIT_BUG",
        "a bug in vmpatch (rerun with `--debug` and report the traceback)",
    ),
    ExitStatus(EXIT_INTERRUPTED, "EXIT_INTERRUPTED", "interrupted (SIGINT)"),
    ExitStatus(
        EXIT_OUTPUT_CLOSED,
        "EXIT_OUTPUT_CLOSED",
        "stdout was closed by its reader (`vmpatch ... | head`); nothing else is printed",
    ),
    ExitStatus(
        EXIT_TERMINATED,
        "EXIT_TERMINATED",
        "terminated (SIGTERM); temporary files were removed and no file was left half-written",
    ),
)

#: errno values that mean "the file named is not there (as a file)": the
#: user's input, exit 2, rather than the system refusing, exit 3.
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR})


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
        if err.errno in _MISSING_ERRNOS:
            return InputError(path, reason)
        return cls(path, reason)


class ToolError(VmpatchError):
    """An external program (strip, objcopy) is missing or failed.

    ``choose`` names, when the caller can pick another program, the setting
    that picks it, by its make variable (``"STRIP"``) since that is what the
    library mirrors; each entry point names its own option for it instead
    (:func:`describe`'s ``options``), so ``vmpatch ko strip`` says
    ``--strip-program`` where a make user would be told ``STRIP=``.
    """

    exit_code = EXIT_TOOL

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        reason: str,
        *,
        hint: str | None = None,
        choose: str | None = None,
    ) -> None:
        self.choose = choose
        super().__init__(path, reason, hint=hint)

    def hint_for(self, options: Mapping[str, str]) -> str | None:
        """The hint, naming the option that picks another program in this interface."""
        if self.choose is None:
            return self.hint
        how = f"pass {options.get(self.choose, self.choose + '=')} to name another program"
        return f"{self.hint} or {how}" if self.hint else how

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_tool, (type(self), self.path, self.reason, self.hint, self.choose))


def _rebuild_tool(
    cls: type[ToolError], path: str | None, reason: str, hint: str | None, choose: str | None
) -> ToolError:
    return cls(path, reason, hint=hint, choose=choose)


class OutputClosed(Exception):
    """Whoever read stdout went away (``vmpatch ... | head``): stop quietly, exit 141.

    Not an OSError on purpose: click would turn a broken pipe into exit 1,
    which in vmpatch's contract means "mismatch".
    """


class Terminated(BaseException):  # named after the signal
    """SIGTERM arrived: unwind like Ctrl-C (``finally`` blocks remove temporaries)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def terminate_on_sigterm() -> None:
    """Make SIGTERM unwind the stack as :class:`Terminated` instead of killing outright.

    Without it ``kill`` (or make stopping its jobs) would leave a
    ``.vmpatch-tmp`` file behind mid-write; with it the same cleanup runs as
    for Ctrl-C, and the exit code is 143, what a shell reports for SIGTERM.
    """
    signal.signal(signal.SIGTERM, _raise_terminated)


@frozen
class Failure:
    """What an entry point prints and exits with for one exception."""

    message: str
    hint: str | None
    exit_code: int
    #: Print nothing at all: the reader of stdout went away, nobody is listening.
    silent: bool = False

    def line(self) -> str:
        """The message and, when there is one, the hint: one line."""
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


#: What a bug's hint asks for; both entry points take --debug.
BUG_HINT = "this is a bug in vmpatch; rerun with --debug and report the traceback"


def describe(err: BaseException, *, options: Mapping[str, str] | None = None) -> Failure:
    """Map any exception to its one-line message, its hint and its exit code.

    The single mapping both entry points use (see the module docstring):
    :class:`VmpatchError` by its class's code; an OSError that escaped the
    library unwrapped as a system failure naming its file (2 when the file
    is not there, as :meth:`SystemFailure.from_oserror` does; 141 for a
    broken pipe); Ctrl-C 130; SIGTERM 143; a closed stdout 141; anything
    else is a bug, 70. ``options`` maps the settings a library error may
    name (``"STRIP"``) to the calling interface's option (``"--strip-program"``).
    """
    if isinstance(err, ToolError):
        return Failure(str(err), err.hint_for(options or {}), err.exit_code)
    if isinstance(err, VmpatchError):
        return Failure(str(err), err.hint, err.exit_code)
    if isinstance(err, KeyboardInterrupt):
        return Failure("interrupted", None, EXIT_INTERRUPTED)
    if isinstance(err, Terminated):
        return Failure("terminated", None, EXIT_TERMINATED)
    if isinstance(err, OutputClosed | BrokenPipeError):
        return Failure("stdout closed by its reader", None, EXIT_OUTPUT_CLOSED, silent=True)
    if isinstance(err, OSError):
        return _describe_oserror(err)
    return Failure(f"internal error: {type(err).__name__}: {err}", BUG_HINT, EXIT_BUG)


def _describe_oserror(err: OSError) -> Failure:
    reason = err.strerror or str(err) or type(err).__name__
    names = [os.fsdecode(n) for n in (err.filename, err.filename2) if n is not None]
    where = " -> ".join(names)
    message = f"{where}: {reason}" if where else f"system error: {reason}"
    code = EXIT_INPUT if err.errno in _MISSING_ERRNOS else EXIT_SYSTEM
    return Failure(message, None, code)
