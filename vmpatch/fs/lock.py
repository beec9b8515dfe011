# SPDX-License-Identifier: GPL-2.0-or-later
"""Advisory locks that create no file: ``flock`` on a descriptor of what is locked.

Two vmpatch processes on the same tree (or the same vmlinux) must never
interleave their writes. A lock file would be a write of its own, and a
re-run over an already re-rooted tree must write nothing at all (not even a
directory entry), so the lock is taken with ``flock(2)`` on a read-only
descriptor of the directory or image itself. The kernel drops it when the
process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence

from vmpatch.errors import SystemFailure

__all__ = ["Busy", "locked"]


class Busy(SystemFailure):
    """Another process holds the lock and the caller asked not to wait."""


def _open_for_lock(path: str | os.PathLike[str]) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "lock") from err


def _lock_one(
    path: str | os.PathLike[str], fd: int, *, wait: bool, waiting: Callable[[str], None] | None
) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SystemFailure.from_oserror(path, err, "lock") from err
    if not wait:
        raise Busy(path, "another vmpatch process is working on it (--no-wait given)")
    if waiting is not None:
        waiting(f"{os.fspath(path)}: waiting for another vmpatch process to finish")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "lock") from err


@contextlib.contextmanager
def locked(
    paths: Sequence[str | os.PathLike[str]],
    *,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on every path (directories or files) for the block.

    Paths are locked in a fixed order (by device and inode) so that two
    processes locking overlapping sets cannot deadlock. ``waiting`` is told
    once per path that is busy before the call blocks; with ``wait=False`` a
    busy path raises :class:`Busy` instead.
    """
    fds: list[int] = []
    try:
        opened = []
        for path in paths:
            fd = _open_for_lock(path)
            fds.append(fd)
            st = os.fstat(fd)
            opened.append(((st.st_dev, st.st_ino), path, fd))
        seen: set[tuple[int, int]] = set()
        for key, path, fd in sorted(opened, key=lambda item: item[0]):
            if key in seen:
                continue  # the same file named twice: one lock serves both
            seen.add(key)
            _lock_one(path, fd, wait=wait, waiting=waiting)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing the last descriptor releases the flock
