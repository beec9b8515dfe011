# SPDX-License-Identifier: GPL-2.0-or-later
"""Atomic file replacement that keeps what the original carried.

Every rewrite in vmpatch goes through :func:`atomic_write` or
:func:`atomic_copy`: the new content is written to a temporary file in the
destination's directory, flushed with ``fsync``, given the original's mode,
owner and extended attributes (security labels such as SELinux contexts or
IMA signatures), renamed over the destination, and the directory is synced.
A crash at any moment leaves either the old file or the new one, never a mix.
Temporary files carry the :data:`TEMP_MARK` so that what a killed run left
behind is recognisable (nothing removes them yet: that is the planned
reroot's crash recovery); they never stand under a real file's name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from vmpatch.errors import InputError, SystemFailure

#: typing and pathlib load only for type checkers (mypy reads this constant as
#: true): the install hook imports this module, and atomic_write works on
#: names as strings, since pathlib (with urllib.parse, ipaddress and re) was
#: a third of the hook's import time (python -X importtime; vmpatch.frozen
#: says what the others cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import BinaryIO

__all__ = [
    "TEMP_MARK",
    "StagedWrite",
    "atomic_copy",
    "atomic_write",
    "check_target",
    "copy_metadata",
    "copy_xattrs",
    "create_temporary",
    "file_identity",
    "fsync_dir",
    "listxattr",
    "open_input",
    "remove_stale_temporaries",
    "write_all",
]

TEMP_MARK = ".vmpatch-tmp"


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_input(path: str | os.PathLike[str]) -> BinaryIO:
    """Open an input file for reading, refusing anything but a regular file.

    The open is non-blocking so that a FIFO named by mistake cannot hang the
    run before it is refused; OSErrors (missing, permission) propagate for
    the caller to word.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(path, f"is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_identity(path: str | os.PathLike[str]) -> tuple[int, int] | str:
    """What makes two names the same file: device and inode, or the resolved name."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


def check_target(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work is done, a destination that cannot be written.

    A missing directory or a directory in the file's place is the user's
    input problem (exit 2); a directory we may not write to is the system's.
    """
    from pathlib import Path

    path = Path(path)
    try:
        is_dir, parent_is_dir = path.is_dir(), path.parent.is_dir()
    except OSError as err:  # a directory on the way we may not search
        raise SystemFailure.from_oserror(path, err, "write") from err
    if is_dir:
        raise InputError(path, "is a directory, not a file name")
    parent = path.parent
    if not parent_is_dir:
        raise InputError(path, f"cannot write: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SystemFailure(path, f"cannot write: directory {parent} is not writable")


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable; a refusal is a :class:`SystemFailure`."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise SystemFailure.from_oserror(directory, err, "sync the directory") from err


def copy_metadata(
    source_stat: os.stat_result,
    source: str | os.PathLike[str],
    target_fd: int,
    *,
    drop_xattrs: frozenset[str] = frozenset(),
) -> None:
    """Give ``target_fd`` the mode, owner and xattrs of ``source``.

    Owner changes need privileges; when they are refused for a file we own
    anyway, the result is the same, so only a real difference is an error.
    Extended attributes named in ``drop_xattrs`` are not carried over.
    """
    os.fchmod(target_fd, stat.S_IMODE(source_stat.st_mode))
    here = os.fstat(target_fd)
    if (here.st_uid, here.st_gid) != (source_stat.st_uid, source_stat.st_gid):
        try:
            os.fchown(target_fd, source_stat.st_uid, source_stat.st_gid)
        except PermissionError as err:
            raise SystemFailure.from_oserror(source, err, "keep the owner of") from err
    copy_xattrs(source, target_fd, drop=drop_xattrs)


def copy_xattrs(
    source: str | os.PathLike[str], target_fd: int, *, drop: frozenset[str] = frozenset()
) -> None:
    """Give ``target_fd`` the extended attributes of ``source``, but those in ``drop``."""
    for name in listxattr(source):
        if name in drop:
            continue
        with contextlib.suppress(OSError):  # e.g. security.* may be read-only to us
            os.setxattr(target_fd, name, os.getxattr(source, name))


def listxattr(path: str | os.PathLike[str]) -> list[str]:
    """The names of ``path``'s extended attributes; none where the filesystem has none."""
    try:
        return os.listxattr(path)  # the file the data comes from, like its mode
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.ENOSYS, errno.ENOENT):
            return []
        raise


def create_temporary(
    target: str | os.PathLike[str], pending: list[str] | None = None
) -> tuple[int, str]:
    """Create ``.NAME.XXXXXXXX.vmpatch-tmp`` beside ``target``, mode 0600; (fd, path).

    ``pending`` gets the name before the file exists: SIGINT or SIGTERM
    raise in whatever bytecode runs next (vmpatch.errors), which may be the
    one right after ``os.open`` returned, before the caller has recorded the
    path it would remove on the way out. A caller that cleans up removes
    what ``pending`` holds as well (a name that was never created is not
    there to remove).

    What ``tempfile.mkstemp`` does, without importing tempfile (which pulls
    random, hashlib and shutil into the install hook: about 6 ms of its
    start-up, measured with ``python -X importtime``): a random name opened
    with O_EXCL, so two processes never share one, retried on a collision.
    """
    directory, name = os.path.split(os.fspath(target))
    for _ in range(100):
        path = os.path.join(directory, f".{name}.{os.urandom(4).hex()}{TEMP_MARK}")
        if pending is not None:
            pending.append(path)
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            if pending is not None:
                pending.remove(path)  # another process's file: never ours to remove
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", directory)


class _Temporary:
    """An open temp file beside its target; closed exactly once."""

    def __init__(self, target: str, pending: list[str] | None = None) -> None:
        try:
            self.fd, self.path = create_temporary(target, pending)
        except OSError as err:
            raise SystemFailure.from_oserror(target, err, "create a temporary file beside") from err
        self.open = True

    def close(self) -> None:
        if self.open:
            self.open = False  # before close: a failed close must not be retried
            os.close(self.fd)

    def commit(self, target: str) -> None:
        """Make the content durable, then give it the target's name."""
        os.fsync(self.fd)
        self.close()
        os.replace(self.path, target)
        fsync_dir(os.path.dirname(target) or ".")


@contextlib.contextmanager
def _temporary_beside(target: str) -> Iterator[_Temporary]:
    """A temp file next to ``target``, removed unless the caller committed it."""
    pending: list[str] = []
    try:
        temp = _Temporary(target, pending)
    except BaseException:  # SIGINT/SIGTERM right after the file was created
        for name in pending:
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise
    try:
        yield temp
    except BaseException:
        with contextlib.suppress(OSError):
            temp.close()
        with contextlib.suppress(OSError):
            os.unlink(temp.path)
        raise


def atomic_write(
    target: str | os.PathLike[str],
    data: bytes,
    *,
    like: str | os.PathLike[str] | None = None,
    mode: int = 0o644,
) -> None:
    """Replace ``target`` with ``data``, keeping the metadata of ``like``.

    ``like`` defaults to ``target`` itself when it exists; a new file gets
    ``mode`` (before the umask, as ``open`` would). A symlink is followed, as
    ``cat >> link`` would: the file it points to is replaced, the link stays.
    """
    target = os.path.realpath(target)
    reference = like if like is not None else target
    try:
        ref_stat: os.stat_result | None = os.stat(reference)
    except FileNotFoundError:
        ref_stat = None
    except OSError as err:
        raise SystemFailure.from_oserror(reference, err, "write") from err
    with _temporary_beside(target) as temp:
        fd = temp.fd
        try:
            write_all(fd, data)
            if ref_stat is not None:
                copy_metadata(ref_stat, reference, fd)
            else:
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(fd, mode & ~umask)
            temp.commit(target)
        except OSError as err:
            raise SystemFailure.from_oserror(target, err, "write") from err


def atomic_copy(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    edit: Callable[[int], None] | None = None,
) -> None:
    """Copy ``source`` to ``target`` atomically, then let ``edit`` change the copy.

    The copy uses ``copy_file_range`` (reflink or server-side copy where the
    filesystem offers it); ``edit`` receives the temporary file's descriptor
    before it is synced and renamed, so a patched copy never exists
    half-written under the target name. The copy keeps the source's mode.
    """
    target = os.fspath(target)
    try:
        src_fd = os.open(source, os.O_RDONLY)
    except OSError as err:
        raise SystemFailure.from_oserror(source, err, "read") from err
    try:
        src_stat = os.fstat(src_fd)
        with _temporary_beside(target) as temp:
            try:
                _copy_range(src_fd, temp.fd, src_stat.st_size)
                os.fchmod(temp.fd, stat.S_IMODE(src_stat.st_mode))
                if edit is not None:
                    edit(temp.fd)
                temp.commit(target)
            except OSError as err:
                raise SystemFailure.from_oserror(target, err, "write") from err
    finally:
        os.close(src_fd)


def _copy_range(src_fd: int, dst_fd: int, size: int) -> None:
    """Kernel-side copy; falls back to read/write where copy_file_range is refused."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src_fd, dst_fd, size - done, done, done)
            if n == 0:
                break
            done += n
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while done < size:
        chunk = os.pread(src_fd, min(1 << 20, size - done), done)
        if not chunk:
            break
        os.pwrite(dst_fd, chunk, done)
        done += len(chunk)
    if done != size:
        raise OSError(errno.EIO, f"source shrank while copying ({done} of {size} bytes)")


class StagedWrite:
    """New content for ``target``, written and made durable beside it, not yet renamed.

    Workflows that rewrite many files (``vmpatch reroot``) stage every file
    first and rename them all only when every one was written, so a refusal
    or a crash part-way leaves each file old or new, never partial. The temp
    file carries :data:`TEMP_MARK`; :meth:`commit` renames it over the target
    (the caller syncs the directories once, after all renames), :meth:`abort`
    removes it.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        data: bytes,
        *,
        drop_xattrs: frozenset[str] = frozenset(),
        mtime_ns: int | None = None,
        follow_links: bool = True,
    ) -> None:
        # A link is written through (the file it names is replaced) unless
        # follow_links is False: then the link itself becomes a regular file
        # with the content and metadata of the file it named.
        from pathlib import Path

        reference = Path(os.path.realpath(target))
        self.target = reference if follow_links else Path(os.path.abspath(target))
        try:
            ref_stat = reference.stat()
        except OSError as err:
            raise SystemFailure.from_oserror(self.target, err, "write") from err
        pending: list[str] = []
        try:
            self._temp = _Temporary(os.fspath(self.target), pending)
        except BaseException:  # SIGINT/SIGTERM right after the file was created
            for name in pending:
                with contextlib.suppress(OSError):
                    os.unlink(name)
            raise
        try:
            fd = self._temp.fd
            write_all(fd, data)
            copy_metadata(ref_stat, reference, fd, drop_xattrs=drop_xattrs)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.fdatasync(fd)
            self._temp.close()
        except BaseException as err:
            self.abort()
            if isinstance(err, OSError):
                raise SystemFailure.from_oserror(self.target, err, "write") from err
            raise

    @property
    def temp_path(self) -> Path:
        from pathlib import Path

        return Path(self._temp.path)

    def commit(self) -> None:
        """Rename the staged content over the target (directories are synced by the caller)."""
        try:
            os.replace(self._temp.path, self.target)
        except OSError as err:
            raise SystemFailure.from_oserror(self.target, err, "replace") from err

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._temp.close()
        with contextlib.suppress(OSError):
            os.unlink(self._temp.path)


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files an interrupted vmpatch run left under ``directory``.

    Only vmpatch's own are touched: hidden names that end in :data:`TEMP_MARK`
    (``.NAME.XXXXXXXX.vmpatch-tmp``, as :class:`_Temporary` makes them). Call
    it only while holding the tree's lock, so a live run's files are safe.
    Symbolic links are never followed into other trees.
    """
    from pathlib import Path

    removed = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.startswith(".") and name.endswith(TEMP_MARK):
                path = Path(root) / name
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as err:
                    raise SystemFailure.from_oserror(path, err, "remove stale temporary") from err
                removed.append(path)
    return removed
