# SPDX-License-Identifier: GPL-2.0-or-later
"""Advisory locks that create no file: ``flock`` on a descriptor of what is locked.

Two vmpatch processes on the same tree (or the same vmlinux) must never
interleave their writes. A lock file would be a write of its own, and a
re-run over an already re-rooted tree must write nothing at all (not even a
directory entry), so the lock is taken with ``flock(2)`` on a read-only
descriptor of the directory or image itself. The kernel drops it when the
process dies, so a killed run never leaves a stale lock behind.

A file that vmpatch rewrites atomically gets a new inode at each rename, so a
process that waited on the old inode would hold a lock nobody else asks for:
after taking the lock, :func:`locked` checks that the path still names the
inode it locked and, if a rename replaced it meanwhile, locks the new one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from vmpatch.errors import SystemFailure

#: typing loads only for type checkers (mypy reads this constant as true): the
#: install hook imports this module (vmpatch.frozen says what its imports cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

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


def _same_file(path: str | os.PathLike[str], fd: int) -> bool:
    """Whether ``path`` still names the inode of ``fd`` (no rename replaced it)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _lock_current(
    path: str | os.PathLike[str],
    fd: int,
    *,
    wait: bool,
    waiting: Callable[[str], None] | None,
) -> int:
    """Lock ``fd``; while a rename replaced ``path`` meanwhile, lock its new inode instead.

    Returns the descriptor that holds the lock (``fd`` or a newer one; the
    replaced ones are closed). ``waiting`` is told at most once.
    """
    told: list[str] = []

    def tell_once(message: str) -> None:
        if not told and waiting is not None:
            told.append(message)
            waiting(message)

    try:
        while True:
            _lock_one(path, fd, wait=wait, waiting=tell_once)
            if _same_file(path, fd):
                return fd
            replacement = _open_for_lock(path)
            os.close(fd)  # the lock on the replaced inode protects nothing
            fd = replacement
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def locked(
    paths: Sequence[str | os.PathLike[str]],
    *,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
    missing_ok: bool = False,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on every path (directories or files) for the block.

    Paths are locked in a fixed order (by device and inode) so that two
    processes locking overlapping sets cannot deadlock. ``waiting`` is told
    once per path that is busy before the call blocks; with ``wait=False`` a
    busy path raises :class:`Busy` instead. With ``missing_ok`` a path that
    does not resolve (missing, a dangling link, a link loop) is skipped, so
    that the command's own read reports it in the words (and with the exit
    code) it always has.
    """
    fds: list[int] = []
    held: list[int] = []
    try:
        opened = []
        for path in paths:
            if missing_ok and not os.path.exists(path):  # also dangling links and loops
                continue
            fd = _open_for_lock(path)
            fds.append(fd)
            st = os.fstat(fd)
            opened.append(((st.st_dev, st.st_ino), path, fd))
        seen: set[tuple[int, int]] = set()
        for key, path, fd in sorted(opened, key=lambda item: item[0]):
            if key in seen:
                continue  # the same file named twice: one lock serves both
            seen.add(key)
            fds.remove(fd)
            held.append(_lock_current(path, fd, wait=wait, waiting=waiting))
        yield
    finally:
        for fd in fds + held:
            os.close(fd)  # closing the last descriptor releases the flock
