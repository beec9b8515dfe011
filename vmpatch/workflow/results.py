# SPDX-License-Identifier: GPL-2.0-or-later
"""What a multi-file command reports for a file it could not read.

A bad file is one entry among the results, not the end of the run: the other
files are still reported, and the command exits with the most severe code
(issue 8.7). Errors about the whole command (a bad ``--kernel``, a usage
error) are raised as before and stop it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vmpatch.errors import VmpatchError
from vmpatch.frozen import frozen

__all__ = ["ErrorInfo", "FileError", "most_severe"]


@frozen
class ErrorInfo:
    """The one-line message (``FILE: reason``), its reason alone, and the exit code."""

    message: str
    reason: str
    exit_code: int
    hint: str | None = None


@dataclass(frozen=True)
class FileError:
    """One file that gave an error instead of a result."""

    json_skip = ("exception",)

    path: Path
    error: ErrorInfo
    exception: VmpatchError | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, path: Path, err: VmpatchError) -> FileError:
        return cls(path, ErrorInfo(str(err), err.reason, err.exit_code, err.hint), err)


def most_severe(codes: Iterable[int]) -> int:
    """The exit code of a run from its files' codes: the highest (4 tool > 3 system > 2 input
    > 1 mismatch > 0), so a script sees the worst thing that happened."""
    return max(codes, default=0)
