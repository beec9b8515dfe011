# SPDX-License-Identifier: GPL-2.0-or-later
"""Replace thousands of small files at once, each old or new after a crash.

``vmpatch tree`` writes one proof per module: 4230 files for Debian's
kernel. Written one :func:`vmpatch.fs.atomic.atomic_write` at a time, that
is two flushes per file (issue 12: 0.6 s of a 1.13 s run in tmpfs, 3.8-40 s
on ext4). A batch keeps the guarantee (every rename follows its file's data
reaching the disk; the directories are synced after) with one flush per
file that mostly finds its journal transaction committed, or, for a big
batch while little else waits to be written, one sync of the filesystem
before the renames and one after; and it spreads the system calls over
worker processes. A target that already holds its new
bytes is only flushed, never replaced: a re-run over an unchanged tree
writes nothing. A small target that keeps its size (a stale proof) is
rewritten in place, which is as safe for a file of one sector and costs no
new inode (see :meth:`_BatchFile.examine`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

from vmpatch.errors import SystemFailure
from vmpatch.fs.atomic import (
    TEMP_MARK,
    copy_metadata,
    copy_xattrs,
    create_temporary,
    fsync_dir,
    write_all,
)

__all__ = ["durable_batch"]

#: Temporaries open at once: bounded, far below RLIMIT_NOFILE.
_OPEN_AT_ONCE = 256
#: Below this many files, forking workers costs more than it saves.
_FORK_THRESHOLD = 512

#: How a file is made durable, by its filesystem (:meth:`_BatchFile.flushing`):
#: not at all (in memory), by a flush of the file and its directory, or by a
#: sync of the whole filesystem.
_IN_MEMORY, _EACH_FILE, _WHOLE_FS = range(3)

Staged = list[tuple[str, str, int]]  # (temporary, target, how it is made durable)
#: Targets rewritten in place at commit: (target, new bytes, how made durable).
Overwrites = list[tuple[str, bytes, int]]

#: The largest file rewritten in place rather than replaced: one 512-byte sector,
#: the unit a disk writes whole (include/linux/blk_types.h, SECTOR_SIZE). See
#: :meth:`_BatchFile.examine`.
OVERWRITE_MAX = 512

#: How a temporary is created: new, never through a link, not inherited across exec.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW

#: What :meth:`_BatchFile.examine` finds a target needs.
_HOLDS, _OVERWRITE, _REPLACE = range(3)

#: The smallest batch that may sync whole filesystems instead of each file
#: (:func:`_sync_whole_filesystems`): below it, a few flushes cost less than
#: writing out whatever else is dirty on the filesystem.
_WHOLE_FS_MIN = 256
#: Filesystems whose syncfs() makes every file and directory change durable and
#: reports the writeback errors of their files: each keeps its dirty inodes and
#: its errors in its own superblock (fs/sync.c, sync_filesystem and syncfs;
#: fs/ext4/super.c ext4_sync_fs, fs/xfs/xfs_super.c xfs_fs_sync_fs,
#: fs/btrfs/super.c btrfs_sync_fs, fs/f2fs/super.c f2fs_sync_fs). Not FUSE,
#: whose sync_fs does nothing for a server without FUSE_SYNCFS (fs/fuse/inode.c,
#: fuse_sync_fs), nor overlayfs, whose files' errors land in the upper
#: filesystem's superblock; there each file is flushed.
_WHOLE_FS_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs"})
#: The most data waiting to be written back, machine-wide, for which a batch
#: syncs whole filesystems: a sync of 64 MB of other dirty data took 0.05 s on
#: this VM's disk, and would take under 0.5 s at a hard disk's 150 MB/s, where
#: 4230 flushes of single files take longer still.
_DIRTY_MAX = 64 << 20


def durable_batch(
    files: Sequence[tuple[str | os.PathLike[str], bytes]],
    *,
    mode: int = 0o644,
    workers: int = 1,
    flush: Literal["auto", "file", "filesystem"] = "auto",
) -> None:
    """Replace many files, each old or new after a crash, with few disk flushes.

    Each target gets what :func:`vmpatch.fs.atomic.atomic_write` would give
    it (a new file ``mode`` minus the umask, an existing one its own mode,
    owner and xattrs), in three passes: write every temporary and make its
    data durable (writeback started for a few hundred at a time, then
    fdatasync each, which finds its journal transaction mostly committed
    already; or one sync of the filesystem, below); rewrite the targets that
    stay in place (same size, at most one sector, one link) and flush them,
    then rename every temporary over its target; fsync each directory once
    (or sync the filesystem again). A failure before that second pass
    leaves every target as it was.

    Why this primitive (``scripts/bench`` and a side-by-side test of 4230
    400-byte files on this ext4, 2 shared cores, 3 alternated rounds, median
    (min) s): fsync each as written 42.5 (22.0), fdatasync each as written
    47.2 (21.3), write all then fdatasync each 38.6 (28.0), writeback started
    for all then fdatasync each 29.3 (13.0), one syncfs 25.4 (24.1), one
    os.sync() 14.2 (1.7). The disk was shared with other jobs, so all are
    noisy. A sync of the filesystem also writes every other dirty page on it
    (a kernel build's hundreds of MB of fresh .ko files), a cost that grows
    with what others wrote; so the batch flushes each file unless it is big
    and little else is dirty (:func:`_sync_whole_filesystems`). Then, on a
    filesystem whose sync covers every file (:data:`_WHOLE_FS_TYPES`), it
    syncs that filesystem once before the renames and once after, instead
    of each file and directory. On this VM's ext4, which has no journal
    (each fdatasync there writes the file's inode block and flushes the
    disk: fs/ext4/fsync.c, ext4_fsync_nojournal), 4230 new proofs in
    Debian's directories took 1.0-1.3 s flushed file by file and
    0.23-0.33 s with the two syncs (4 alternated rounds, one process;
    writing them with no flush at all: 0.09-0.13 s); ``vmpatch tree`` with
    every proof stale went from 0.58-0.67x the C generator's time to
    0.28-0.40x (scripts/bench). ``flush`` chooses: ``"file"`` flushes each
    file, ``"filesystem"`` syncs each filesystem where it can, ``"auto"``
    decides as above.

    With ``workers`` > 1 and many files, forked processes each stage runs
    of neighbouring files (directories mostly stay together) as they take
    them, and rename what they staged only once every run is staged
    (:func:`_forked_batch`): the work is system calls, which processes run
    in parallel and threads serialise on the GIL.
    """
    umask = os.umask(0)
    os.umask(umask)
    whole_fs = flush == "filesystem" or (flush == "auto" and _sync_whole_filesystems(len(files)))
    forkable = threading.active_count() == 1  # forking with threads alive is unsafe
    if workers > 1 and len(files) >= _FORK_THRESHOLD and forkable:
        _forked_batch(files, mode & ~umask, umask, workers, whole_fs)
        return
    batch = _BatchFile(mode & ~umask, umask, writeback=len(files) > 1, whole_fs=whole_fs)
    try:
        staged, overwrites = _stage(files, batch)
        _commit(staged, overwrites, batch)
    finally:
        batch.close()


def _sync_whole_filesystems(count: int) -> bool:
    """Whether a batch of ``count`` files syncs whole filesystems instead of each file.

    Only for a big batch (:data:`_WHOLE_FS_MIN`), while at most
    :data:`_DIRTY_MAX` waits to be written back (/proc/meminfo's Dirty and
    Writeback: the most a sync could write for others), and on Linux 5.8 or
    later: before it, syncfs() reported no writeback error (fs/sync.c,
    sync_filesystem's result is returned since commit 735e4ae5ba28,
    "vfs: track per-sb writeback errors and report them to syncfs").
    """
    if count < _WHOLE_FS_MIN or _kernel_release() < (5, 8):
        return False
    dirty = _dirty_bytes()
    return dirty is not None and dirty <= _DIRTY_MAX


def _kernel_release() -> tuple[int, int]:
    """The running kernel's major and minor version; (0, 0) if unreadable."""
    major, _, rest = os.uname().release.partition(".")
    minor = rest.split(".", 1)[0].split("-", 1)[0]
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (0, 0)


def _dirty_bytes() -> int | None:
    """Bytes waiting to be written back machine-wide (fs/proc/meminfo.c: Dirty, Writeback)."""
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            text = meminfo.read()
    except OSError:
        return None
    total = 0
    for field in (b"\nDirty:", b"\nWriteback:"):
        at = text.find(field)
        if at < 0:
            return None
        total += int(text[at + len(field) :].split(None, 1)[0]) * 1024  # in kB
    return total


def _stage(
    files: Iterable[tuple[str | os.PathLike[str], bytes]], batch: _BatchFile
) -> tuple[Staged, Overwrites]:
    """Write every temporary and make its data durable; on failure remove them all.

    Also returns the targets to rewrite in place, which are not touched yet.
    A temporary on a filesystem with no disk is closed as soon as it is
    written: there is nothing to flush (:data:`_NO_DISK`); so is one that a
    sync of its whole filesystem makes durable at the end.
    """
    staged: Staged = []
    overwrites: Overwrites = []
    unflushed: list[tuple[int, str]] = []
    try:
        for target_name, data in files:
            target, prefix, flush, ref_stat = batch.locate(os.fspath(target_name))
            if ref_stat is not None:
                need = batch.examine(target, ref_stat, data, flush)
                if need == _HOLDS:
                    continue  # already what it would become: left alone, mtime and all
                if need == _OVERWRITE:
                    overwrites.append((target, data, flush))
                    continue
            fd = batch.write(target, prefix, ref_stat, data, staged, flush)
            # (a signal between the open and here: batch.pending has the name)
            if flush != _EACH_FILE:
                os.close(fd)
                continue
            unflushed.append((fd, target))
            if len(unflushed) == _OPEN_AT_ONCE:
                _flush_and_close(unflushed)
        _flush_and_close(unflushed)
        if staged:
            batch.sync_filesystems()  # those of _WHOLE_FS files, if any
    except BaseException:
        for fd, _ in unflushed:
            with contextlib.suppress(OSError):
                os.close(fd)
        _remove(batch.pending)  # every one created, with or without its entry in staged
        raise
    return staged, overwrites


def _flush_and_close(unflushed: list[tuple[int, str]]) -> None:
    """fdatasync each open temporary (its writeback started when written), then close it.

    Each fd leaves the list once closed, so a failure leaves the caller only
    the ones still open.
    """
    for fd, target in unflushed:
        try:
            os.fdatasync(fd)
        except OSError as err:
            raise SystemFailure.from_oserror(target, err, "write") from err
    while unflushed:
        os.close(unflushed.pop()[0])


def _discard(staged: Staged) -> None:
    """Remove the temporaries of ``staged`` that still exist (renamed ones do not)."""
    _remove(temp for temp, _, _ in staged)


def _remove(names: Iterable[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _commit(staged: Staged, overwrites: Overwrites, batch: _BatchFile) -> None:
    """Rewrite the in-place targets, rename every temporary over its target, then sync
    each directory with a disk behind it once (or each filesystem, if whole_fs)."""
    directories: dict[str, None] = {}
    done = 0
    try:
        _overwrite(overwrites, batch)
        for temp, target, flush in staged:
            os.replace(temp, target)
            done += 1
            if flush == _EACH_FILE:
                directories[target.rpartition("/")[0] or "/"] = None
    except BaseException as err:  # a failed rename, or SIGINT/SIGTERM among the renames
        _discard(staged[done:])  # the first is gone already if its rename was done
        if isinstance(err, OSError):
            raise SystemFailure.from_oserror(staged[done][1], err, "replace") from err
        raise
    batch.sync_filesystems()
    for directory in directories:
        fsync_dir(directory)


def _overwrite(overwrites: Overwrites, batch: _BatchFile) -> None:
    """Write each target's new bytes over its old ones, then make them durable.

    A few hundred at a time, as staging does: writeback is started for each
    as it is written, then each is fdatasync'd (where a disk is behind it),
    unless the sync of the whole filesystem after the renames does it.
    """
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    for start in range(0, len(overwrites), _OPEN_AT_ONCE):
        unflushed: list[tuple[int, str]] = []
        try:
            for target, data, how in overwrites[start : start + _OPEN_AT_ONCE]:
                try:
                    fd = os.open(target, flags)
                except OSError as err:
                    raise SystemFailure.from_oserror(target, err, "write") from err
                flush = how == _EACH_FILE
                try:
                    if how == _WHOLE_FS:
                        batch.anchor(target, fd)
                    if os.pwrite(fd, data, 0) != len(data):  # one page: whole, or an error
                        raise OSError(errno.EIO, "short write")
                    if flush and len(overwrites) > 1:
                        _start_writeback(fd)
                except OSError as err:
                    os.close(fd)
                    raise SystemFailure.from_oserror(target, err, "write") from err
                if flush:
                    unflushed.append((fd, target))
                else:
                    os.close(fd)
            _flush_and_close(unflushed)
        finally:
            for fd, _ in unflushed:
                with contextlib.suppress(OSError):
                    os.close(fd)


# ---------------------------------------------------------------------------
# Worker processes

_READY = b"R"  # child -> parent: my share is staged and durable
_DONE = b"D"  # child -> parent: my share is renamed and its directories synced
_FAILED = b"E"  # child -> parent: then a pickled exception, to the end of the pipe
_COMMIT = b"C"  # parent -> child: rename now (end of file instead: discard)


def _forked_batch(
    files: Sequence[tuple[str | os.PathLike[str], bytes]],
    new_mode: int,
    umask: int,
    workers: int,
    whole_fs: bool,
) -> None:
    """:func:`durable_batch` over ``workers`` forked children, in two phases.

    Every child stages the runs of files it takes (:func:`_taken`) and
    reports ready; only when all are ready does this process tell them to
    rename, so a failure anywhere before that leaves every target as it was
    (the children remove their temporaries). If this process dies first (a
    SIGKILL), each child reads the end of its command pipe, removes its
    temporaries and exits; the children hold the tree's lock (an inherited
    flock) until then, so no next run overlaps them. Measured on Debian's
    4230 proofs in tmpfs on 2 CPUs: see :func:`vmpatch.workflow.tree.write_proofs`.
    """
    from vmpatch.fs.forkmap import MAX_TASKS, task_pipe

    size = max(_RUN, -(-len(files) // MAX_TASKS))
    runs = [(start, min(start + size, len(files))) for start in range(0, len(files), size)]
    children: list[tuple[int, int, int]] = []  # (pid, report read end, command write end)
    failure: BaseException | None = None
    tasks = task_pipe(len(runs))
    try:
        for _ in range(min(workers, len(runs))):
            report_r, report_w = os.pipe()
            command_r, command_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns
                os.close(report_r)
                os.close(command_w)
                batch = _BatchFile(new_mode, umask, writeback=True, whole_fs=whole_fs)
                _child(_taken(files, runs, tasks), batch, report_w, command_r)
            os.close(report_w)
            os.close(command_r)
            children.append((pid, report_r, command_w))
        os.close(tasks)
        tasks = -1
        for _pid, report_r, _command_w in children:
            failure = failure or _report(report_r, _READY)
        if failure is None:
            for _pid, _report_r, command_w in children:
                write_all(command_w, _COMMIT)
            for _pid, report_r, _command_w in children:
                failure = failure or _report(report_r, _DONE)
    finally:
        if tasks >= 0:
            os.close(tasks)
        for pid, report_r, command_w in children:  # end of file: discard, if not committed
            with contextlib.suppress(OSError):
                os.close(command_w)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.close(report_r)
    if failure is not None:
        raise failure


#: Files a worker takes at once. Runs of neighbours keep a directory's files
#: mostly in one worker (a directory on a disk is synced by each worker that
#: renamed into it). Taking runs as workers finish, instead of a fixed half
#: each, bounds how long one waits on the other when a CPU is taken by
#: something else: staging Debian's 4230 proofs in tmpfs, the two fixed
#: halves took 57-78 and 72-99 ms in three runs. On an idle machine the
#: whole batch measured the same either way (25 alternated rounds: median
#: 121 against 122 ms).
_RUN = 64


def _taken(
    files: Sequence[tuple[str | os.PathLike[str], bytes]], runs: list[tuple[int, int]], tasks: int
) -> Iterator[tuple[str | os.PathLike[str], bytes]]:
    """The files of each run this worker takes from the task pipe, as it takes them."""
    from vmpatch.fs.forkmap import take_tasks

    for number in take_tasks(tasks):
        start, stop = runs[number]
        yield from files[start:stop]


def _report(report_r: int, expected: bytes) -> BaseException | None:
    """Read a child's next report: None when it is ``expected``, else its failure."""
    tag = os.read(report_r, 1)
    if tag == expected:
        return None
    if tag == _FAILED:
        import pickle

        payload = bytearray()
        while chunk := os.read(report_r, 1 << 16):
            payload += chunk
        with contextlib.suppress(Exception):
            error = pickle.loads(payload)
            if isinstance(error, BaseException):
                return error
    return SystemFailure(None, "a worker process writing the files died")


def _child(
    files: Iterable[tuple[str | os.PathLike[str], bytes]],
    batch: _BatchFile,
    report_w: int,
    command_r: int,
) -> None:
    """A worker: stage ``files``, report, rename on the parent's word; never returns."""
    status = 0
    staged: Staged = []
    try:
        staged, overwrites = _stage(files, batch)
        write_all(report_w, _READY)
        if os.read(command_r, 1) != _COMMIT:
            _discard(staged)  # the parent failed or died: leave every target as it was
        else:
            _commit(staged, overwrites, batch)
            write_all(report_w, _DONE)
    except BaseException as err:
        status = 1
        _discard(staged)  # renamed ones are gone already; the rest must not be left
        with contextlib.suppress(BaseException):
            import pickle

            write_all(report_w, _FAILED + pickle.dumps(err))
    finally:
        os._exit(status)


# ---------------------------------------------------------------------------
# One file of a batch


def _real_dir(directory: str, real_dirs: dict[str, str], devices: dict[str, int]) -> str:
    """``os.path.realpath(directory)``, building on its parent's cached resolution.

    A directory whose last component is no symbolic link is its resolved
    parent plus that name: one lstat, where realpath lstats every component
    again (Debian's 863 module directories: 0.04 s, cProfile). That lstat's
    device goes into ``devices`` (real directory -> st_dev), so that
    :meth:`_BatchFile.flushing` needs no stat of its own.
    """
    known = real_dirs.get(directory)
    if known is not None:
        return known
    parent, _, last = directory.rpartition("/")
    if not parent or last in ("", ".", "..") or directory.startswith("//"):
        real = os.path.realpath(directory)
    else:
        candidate = f"{_real_dir(parent, real_dirs, devices).rstrip('/')}/{last}"
        try:
            info = os.lstat(candidate)
        except OSError:
            info = None  # let realpath say what it says of a missing or odd name
        if info is not None and stat.S_ISDIR(info.st_mode):
            real = candidate
            devices[real] = info.st_dev
        else:
            real = os.path.realpath(candidate)
    real_dirs[directory] = real
    return real


class _BatchFile:
    """Creates the temporaries of one batch, with as few system calls as it can.

    Names are ``.NAME.XXXXXXXX`` + :data:`TEMP_MARK` as
    :func:`vmpatch.fs.atomic.create_temporary` makes them, the eight hex
    digits a random base for the batch plus a counter (one getrandom for the
    batch, not one per file), still opened with O_EXCL and retried at random
    on a collision. A new target's temporary is created with its final mode
    (the kernel applies the umask, as it would to the target), so it needs no
    fchmod; an existing target's metadata is kept as
    :func:`vmpatch.fs.atomic.copy_metadata` keeps it. With 4230 proofs in
    tmpfs the former version (a random name, fchmod, fstat and listxattr for
    every file) took 0.41-0.68 s, this one 0.37 s, the bare open, write,
    fdatasync, close and rename 0.17 s.
    """

    def __init__(self, new_mode: int, umask: int, *, writeback: bool, whole_fs: bool) -> None:
        self.new_mode = new_mode
        self.umask = umask
        #: Whether files on a disk may be made durable by syncing their
        #: filesystems (:func:`_sync_whole_filesystems`), not one by one.
        self.whole_fs = whole_fs
        #: Device -> (a descriptor opened on it before this batch wrote there, its
        #: name): syncfs() reports the writeback errors since that open.
        self.anchors: dict[int, tuple[int, str]] = {}
        #: Whether to start each file's writeback as it is written: for one file alone
        #: the fdatasync right after does the same.
        self.writeback = writeback
        self.serial = int.from_bytes(os.urandom(4), "big")
        self.euid = os.geteuid()
        #: How files are made durable in each directory, and on each device.
        self.dir_flush: dict[str, int] = {}
        self.device_flush: dict[int, int] = {}
        #: Each directory named as given -> its real path (_real_dir).
        self.real_dirs: dict[str, str] = {}
        #: The device of each real directory whose lstat resolving it gave (_real_dir).
        self.devices: dict[str, int] = {}
        #: Each directory named as given -> (real path + "/", how made durable).
        self.places: dict[str, tuple[str, int]] = {}
        #: Every temporary's name, recorded before it exists: SIGINT or SIGTERM
        #: raise at whatever bytecode runs next (vmpatch.errors), which may be
        #: the one right after os.open returned.
        self.pending: list[str] = []
        self.mounts: list[tuple[str, str]] | None = None

    def locate(self, name: str) -> tuple[str, str, int, os.stat_result | None]:
        """Where ``name`` is written: the file as ``os.path.realpath`` names it, its
        directory's real path ending in ``/``, how files there are made durable
        (:meth:`flushing`), and the file's stat (None: there is none yet).

        realpath lstats every component of every name: it was a third of
        writing Debian's 4230 proofs (cProfile: 4.4 of 12.3 s under load,
        33,630 lstat calls). Here each directory is resolved and its
        filesystem looked up once (:func:`_real_dir`, :meth:`flushing`), and
        each file costs one lstat; a target that is itself a link is resolved
        in full (written through, as :func:`vmpatch.fs.atomic.atomic_write`
        does).
        """
        head, _, tail = name.rpartition("/")
        directory = head or ("/" if name[:1] == "/" else ".")
        place = self.places.get(directory)
        if place is None:
            real = _real_dir(directory, self.real_dirs, self.devices)
            place = self.places[directory] = (real.rstrip("/") + "/", self.flushing(real))
        prefix, flush = place
        target = prefix + tail
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return target, prefix, flush, None
        except OSError as err:
            raise SystemFailure.from_oserror(target, err, "write") from err
        if not stat.S_ISLNK(st.st_mode):
            return target, prefix, flush, st
        target = os.path.realpath(target)
        real = target.rpartition("/")[0] or "/"
        prefix, flush = real.rstrip("/") + "/", self.flushing(real)
        try:
            return target, prefix, flush, os.stat(target)
        except FileNotFoundError:
            return target, prefix, flush, None
        except OSError as err:
            raise SystemFailure.from_oserror(target, err, "write") from err

    def write(
        self,
        target: str,
        prefix: str,
        ref_stat: os.stat_result | None,
        data: bytes,
        staged: Staged,
        flush: int,
    ) -> int:
        """One temporary beside ``target`` (in ``prefix``, its directory), written,
        writeback started if it is flushed alone; its fd (added to ``staged``)."""
        mode = self.new_mode if ref_stat is None else stat.S_IMODE(ref_stat.st_mode)
        self.serial = (self.serial + 1) & 0xFFFFFFFF
        temp = f"{prefix}.{target[len(prefix) :]}.{self.serial:08x}{TEMP_MARK}"
        self.pending.append(temp)
        try:
            fd = os.open(temp, _CREATE, mode)
        except FileExistsError:
            self.pending.pop()  # another process's file: never ours to remove
            fd, temp = _create_retrying(target, mode, self.pending)
        except OSError as err:
            self.pending.pop()
            raise SystemFailure.from_oserror(target, err, "create a temporary file beside") from err
        staged.append((temp, target, flush))
        try:
            if flush == _WHOLE_FS:
                self.anchor(target, fd)
            write_all(fd, data)
            if ref_stat is not None:
                self._keep_metadata(ref_stat, target, fd)
            if flush == _EACH_FILE and self.writeback:
                _start_writeback(fd)
        except BaseException as err:
            os.close(fd)
            if isinstance(err, OSError):
                raise SystemFailure.from_oserror(target, err, "write") from err
            raise
        return fd

    def flushing(self, directory: str) -> int:
        """How files in ``directory`` are made durable: not at all on a filesystem with
        no disk behind it, by syncing the whole filesystem where the batch may
        and the filesystem is one of :data:`_WHOLE_FS_TYPES`, else file by file.

        tmpfs's and ramfs's fsync is noop_fsync (mm/shmem.c, shmem_file_operations;
        fs/ramfs/file-mmu.c; fs/libfs.c, simple_offset_dir_operations and
        simple_dir_operations for their directories): a file is as durable as
        it will be once written, and a crash of the machine loses them all. On
        tmpfs the sync_file_range through ctypes was 8 us a file, 35 ms of the
        4230 proofs of a tree (cProfile), and the fdatasync of each temporary
        and fsync of each of its 863 directories another ~0.01 s. The mount
        table is searched once per device (st_dev), not per directory: 863
        searches were 0.03 s.
        """
        known = self.dir_flush.get(directory)
        if known is None:
            device = self.devices.get(directory)
            if device is None:
                try:
                    device = os.stat(directory).st_dev
                except OSError:
                    device = None
            known = self.device_flush.get(device) if device is not None else None
            if known is None:
                if self.mounts is None:
                    self.mounts = _mount_table()
                kind = _filesystem_type(directory, self.mounts)
                if kind in _NO_DISK:
                    known = _IN_MEMORY
                elif self.whole_fs and kind in _WHOLE_FS_TYPES and _load_libc().syncfs:
                    known = _WHOLE_FS
                else:
                    known = _EACH_FILE
                if device is not None:
                    self.device_flush[device] = known
            self.dir_flush[directory] = known
        return known

    def examine(self, target: str, ref_stat: os.stat_result, data: bytes, flush: int) -> int:
        """What the existing ``target`` needs: nothing, an in-place rewrite, or replacing.

        A target that holds ``data`` already is left as it is: a re-run of
        ``vmpatch tree`` over an unchanged tree reads its 4230 proofs instead
        of replacing them, and the proofs keep their times for make and
        packaging steps that compare them. It is flushed (a no-op when it is
        clean) so that the batch's promise holds for it too: durable when the
        batch returns.

        A target of the same size, at most :data:`OVERWRITE_MAX` bytes, with
        one link and writable, is rewritten in place at commit. That is old or
        new after anything: a SIGKILL lands before or after the copy into its
        one page (mm/filemap.c, generic_perform_write(), checks for a fatal
        signal only between folios), and a disk writes its one sector whole,
        the assumption PostgreSQL makes of its 512-byte pg_control
        (include/catalog/pg_control.h, PG_CONTROL_MAX_SAFE_SIZE). It skips a
        new inode, a rename and a directory sync. ``vmpatch tree`` over
        Debian's 4230 modules with every proof stale (scripts/bench, 5
        alternated rounds): on this VM's ext4 (mounted ``discard``) 3.54 s
        replacing them, 2.18x the C generator, and 1.27 s (0.67x) rewriting
        them in place; in tmpfs 0.71 s (1.19x) and 0.58 s (0.99x). Every
        proof of a tree up to 16384 modules (14 levels, 492 bytes)
        qualifies; another link (``cp -al``) keeps its bytes only if the
        file is replaced.
        """
        if not stat.S_ISREG(ref_stat.st_mode) or ref_stat.st_size != len(data):
            return _REPLACE
        in_place = len(data) <= OVERWRITE_MAX and ref_stat.st_nlink == 1
        flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(target, flags | (os.O_RDWR if in_place else os.O_RDONLY))
        except PermissionError:  # not writable by us: replaced, which needs only the directory
            in_place = False
            try:
                fd = os.open(target, flags | os.O_RDONLY)
            except OSError:
                return _REPLACE
        except OSError:
            return _REPLACE  # replaced under us, or unreadable: written anew, as before
        try:
            if os.read(fd, len(data) + 1) != data:
                return _OVERWRITE if in_place else _REPLACE
            if flush == _WHOLE_FS:
                self.anchor(target, fd)  # the sync after the renames covers it
            elif flush == _EACH_FILE:
                os.fdatasync(fd)
        except OSError:
            return _REPLACE
        finally:
            os.close(fd)
        return _HOLDS

    def anchor(self, name: str, fd: int) -> None:
        """Keep a duplicate of ``fd`` (open on ``name``, not yet written by this batch)
        for the sync of its filesystem, the first time the batch meets that device."""
        directory = name.rpartition("/")[0] or "/"
        device = self.devices.get(directory)
        if device is None:
            device = os.fstat(fd).st_dev
        if device not in self.anchors:
            self.anchors[device] = (os.dup(fd), directory)

    def sync_filesystems(self) -> None:
        """syncfs() each filesystem this batch wrote to (fs/sync.c, sync_filesystem:
        every dirty inode written and waited on, then the filesystem's own
        sync, which commits a journal and flushes the disk)."""
        if not self.anchors:
            return  # nothing on such a filesystem: no ctypes to load either
        syncfs = _load_libc().syncfs
        for fd, directory in self.anchors.values():
            if syncfs is not None and syncfs(fd) != 0:
                import ctypes

                code = ctypes.get_errno()
                err = OSError(code, os.strerror(code))
                raise SystemFailure.from_oserror(directory, err, "sync the filesystem of")

    def close(self) -> None:
        """Close the descriptors kept for syncing filesystems."""
        while self.anchors:
            with contextlib.suppress(OSError):
                os.close(self.anchors.popitem()[1][0])

    def _keep_metadata(self, ref_stat: os.stat_result, target: str, fd: int) -> None:
        if ref_stat.st_mode & self.umask:  # open() dropped bits the target has
            os.fchmod(fd, stat.S_IMODE(ref_stat.st_mode))
        if ref_stat.st_uid != self.euid or ref_stat.st_gid != os.fstat(fd).st_gid:
            copy_metadata(ref_stat, target, fd)  # another owner: rare, the full path
            return
        copy_xattrs(target, fd)


#: Filesystems whose pages live only in memory (fs/ramfs, mm/shmem.c).
_NO_DISK = frozenset({"tmpfs", "ramfs", "devtmpfs"})


def _mount_table() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, from /proc/self/mounts.

    Names in that file escape blanks and backslashes as octal
    (fs/proc_namespace.c, mangle()).
    """
    try:
        with open("/proc/self/mounts", "rb") as mounts:
            lines = mounts.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    table = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            point = fields[1]
            for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                point = point.replace(code, char)
            table.append((point, fields[2]))
    return table


def _filesystem_type(directory: str, table: list[tuple[str, str]]) -> str | None:
    """The type of the mount holding ``directory`` (a real path): the longest point wins."""
    best, kind = -1, None
    for point, fstype in table:
        inside = directory == point or directory.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # the later of two equal points is on top
            best, kind = len(point), fstype
    return kind


def _create_retrying(target: str, mode: int, pending: list[str]) -> tuple[int, str]:
    try:
        fd, temp = create_temporary(target, pending)
        os.fchmod(fd, mode)
    except OSError as err:
        raise SystemFailure.from_oserror(target, err, "create a temporary file beside") from err
    return fd, temp


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting.

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``: Python's os module lacks it,
    so it goes through libc; where that fails the later fdatasync does it all.
    """
    sync_file_range = _load_libc().sync_file_range
    if sync_file_range is None:
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sync_file_range(fd, 0, 0, 2)  # SYNC_FILE_RANGE_WRITE, include/uapi/linux/fs.h


class _Libc:
    """The two libc calls Python's os module lacks, or None where libc has no such call."""

    loaded = False
    sync_file_range: Callable[[int, int, int, int], int] | None = None
    syncfs: Callable[[int], int] | None = None


def _load_libc() -> type[_Libc]:
    """:class:`_Libc`, through ctypes (5 ms to import): only once a file on a disk is written."""
    if _Libc.loaded:
        return _Libc
    _Libc.loaded = True
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return _Libc
    with contextlib.suppress(AttributeError):
        func = libc.sync_file_range
        func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        func.restype = ctypes.c_int
        _Libc.sync_file_range = func
    with contextlib.suppress(AttributeError):
        func = libc.syncfs
        func.argtypes = [ctypes.c_int]
        func.restype = ctypes.c_int
        _Libc.syncfs = func
    return _Libc
