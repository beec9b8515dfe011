# SPDX-License-Identifier: GPL-2.0-or-later
"""The Merkle tree over all modules, bit-identical to the kernel's generator.

Keep in sync with ``scripts/modules-merkle-tree.c`` of the v5 series
(docs/format.md section 2)::

    leaf(i)    = SHA256(0x01 || be32(i) || module bytes)
    node(l, r) = SHA256(0x02 || l || r)

Leaves are paired in order; an odd last element at any level is paired with
itself; ``levels`` is 0 for no modules, 1 for one (root = node(leaf, leaf)),
else ceil(log2(n)). The proof of module i is, bottom-up, the partner of the
node on i's path at each level.

This module builds trees. Checking a proof is :mod:`vmpatch.verdict`'s job,
which recomputes bottom-up with its own code so a bug here cannot hide a bug
there.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from vmpatch.errors import SystemFailure
from vmpatch.frozen import frozen
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.records.trailer import merkle_trailer

__all__ = [
    "MerkleTree",
    "default_workers",
    "hash_leaves",
    "leaf_digest",
    "node_digest",
    "tree_levels",
]

LEAF_PREFIX = b"\x01"  # domain separation: a leaf can never be read as a node
NODE_PREFIX = b"\x02"
_POS = struct.Struct(">I")

#: Loads a module's kernel-visible bytes (e.g. decompressing a .ko.xz).
ModuleLoader = Callable[[Path], bytes]
#: A module file: a path, or its name as text (cheaper by the thousand).
ModuleFile = Path | str
Progress = Callable[[int], None]
#: Called with a plain module's name and its last :data:`TAIL_SIZE` bytes as it is
#: hashed; raises to refuse the module (a build-tree module ending with a trailer).
TailCheck = Callable[[ModuleFile, bytes], None]
TAIL_SIZE = 64


def tree_levels(count: int) -> int:
    """Tree height for ``count`` leaves: 0, 1 for one leaf, else ceil(log2(count))."""
    if count < 0:
        raise ValueError("negative module count")
    if count == 0:
        return 0
    return max(1, (count - 1).bit_length())


def leaf_digest(index: int, data: bytes | memoryview) -> bytes:
    """leaf(i) over one module's bytes."""
    h = hashlib.sha256(LEAF_PREFIX + _POS.pack(index))
    h.update(data)
    return h.digest()


def node_digest(left: bytes, right: bytes) -> bytes:
    """node(l, r): an inner node over its two children."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


#: Per-thread read buffer size: large enough that hashlib releases the GIL on
#: every update, small enough that memory stays bounded whatever the file size.
_CHUNK = 1 << 20
_buffers = threading.local()


def _open_regular(path: ModuleFile) -> tuple[int, int]:
    """Open a module to read (its fd and size); refuse what is no regular file, without
    blocking on a FIFO.

    The caller may not have stat'ed the file first (:func:`vmpatch.workflow.tree.plan_tree`
    leaves the existence check to hashing): the one fstat here is the check.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SystemFailure(Path(path), "read module: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def _leaf_of_file(index: int, path: ModuleFile, tail_check: TailCheck | None = None) -> bytes:
    """Hash a plain file in chunks through one reused buffer per thread.

    Measured on 4000 modules (527 MiB in tmpfs, 2 CPUs, scripts/bench's
    tree): per-file mmap took 0.87-0.92 s with one thread and 0.64-0.71 s
    with two, because every fault and munmap in a threaded process contends
    on the address space (and munmap sends TLB-shootdown IPIs); readv into a
    thread's own buffer took 0.68-0.77 s and 0.35-0.45 s. hashlib releases
    the GIL while it digests each chunk, so threads hash truly in parallel.
    """
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    h = hashlib.sha256(LEAF_PREFIX + _POS.pack(index))
    tail = b""
    try:
        fd, _ = _open_regular(path)
        try:
            while size := os.readv(fd, [buffer]):
                h.update(view[:size])
                if tail_check is not None:
                    tail = (tail + view[max(0, size - TAIL_SIZE) : size])[-TAIL_SIZE:]
        finally:
            os.close(fd)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read module") from err
    if tail_check is not None:
        tail_check(path, tail)
    return h.digest()


def _leaf_of_mapped_file(
    index: int, path: ModuleFile, tail_check: TailCheck | None = None
) -> bytes:
    """Hash a plain file through a read-only mapping: no copy into a buffer.

    Only for single-threaded processes (the forked workers of
    :func:`_hash_in_processes`), where no other thread contends on the address
    space. Measured on Debian's 4230 modules (507 MB in tmpfs, 2 CPUs, two
    forked workers, 3 alternated rounds): 0.47-0.58 s against 0.59-0.69 s
    with :func:`_leaf_of_file`'s readv, which copies every byte once more (the
    C generator maps its files too).
    """
    import mmap

    h = hashlib.sha256(LEAF_PREFIX + _POS.pack(index))
    try:
        fd, size = _open_regular(path)
        try:
            if size:
                with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
                    h.update(mapped)
                    tail = mapped[-TAIL_SIZE:]
            else:
                tail = b""
        finally:
            os.close(fd)
    except (OSError, ValueError) as err:  # ValueError: mmap of a file that shrank to 0
        if isinstance(err, OSError):
            raise SystemFailure.from_oserror(path, err, "read module") from err
        raise SystemFailure(Path(path), f"read module: {err}") from err
    if tail_check is not None:
        tail_check(path, tail)
    return h.digest()


def default_workers() -> int:
    """The CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def _largest_first(sizes: Sequence[int]) -> list[int]:
    """Module indexes, largest file first: handed out in that order, the workers
    finish together (the last chunks are the smallest files)."""
    return sorted(range(len(sizes)), key=sizes.__getitem__, reverse=True)


def _hash_in_processes(
    paths: Sequence[ModuleFile],
    workers: int,
    progress: Progress | None,
    tail_check: TailCheck | None,
    sizes: Sequence[int] | None = None,
) -> list[bytes]:
    """Hash plain files in ``workers`` forked children (:func:`vmpatch.fs.forkmap.fork_map`).

    Threads scale poorly here: with thousands of small modules the per-file
    Python work convoys on the GIL between hashes, and a ProcessPoolExecutor
    spends its gain on task pickling and teardown. Measured on 4000 modules
    (527 MiB in tmpfs, 2 CPUs, hashing only): one thread 0.51 s, two threads
    0.53-0.63 s, ProcessPoolExecutor(2) 0.31-0.34 s, a static split
    0.28-0.29 s. Only children hash, because they map the files
    (:func:`_leaf_of_mapped_file`): a module truncated while mapped raises
    SIGBUS, which ends a child and becomes that module's error here, never
    this process's death. Chunks are handed out as workers ask, largest files
    first when ``sizes`` are known, so no size split is needed up front.
    """
    from vmpatch.fs.forkmap import fork_map

    def crashed(index: int, why: str) -> bytes | BaseException:
        return SystemFailure(Path(paths[index]), f"cannot read module: {why}")

    leaves = fork_map(
        lambda index: _leaf_of_mapped_file(index, paths[index], tail_check),
        len(paths),
        workers=workers,
        crashed=crashed,
        progress=progress,
        order=_largest_first(sizes) if sizes is not None else None,
    )
    for leaf in leaves:
        if isinstance(leaf, BaseException):
            raise leaf
    return leaves  # type: ignore[return-value]  # every one a digest


#: Below this many modules, forking costs more than it saves.
_PROCESS_THRESHOLD = 256


def hash_leaves(
    paths: Sequence[ModuleFile],
    *,
    workers: int | None = None,
    loader: ModuleLoader | None = None,
    progress: Progress | None = None,
    tail_check: TailCheck | None = None,
    sizes: Sequence[int] | None = None,
) -> list[bytes]:
    """leaf(i) for every module, i being its index in ``paths``.

    ``loader`` returns a module's bytes when they are not the file's bytes
    (compressed modules; decompression releases the GIL, so those use
    threads); plain files are read in chunks, in worker processes when there
    are many (and threads where forking is unsafe). ``progress`` is called
    with the number of modules finished, from the calling thread.
    ``tail_check`` sees each plain file's end as it is read (not with a
    ``loader``), so a refusal needs no second pass over the files.
    ``sizes``, the files' sizes if the caller stat'ed them already, balance
    the worker processes without another stat of each.
    """
    if tail_check is not None and loader is not None:
        raise ValueError("tail_check is for plain files, not a loader's bytes")
    workers = min(workers or default_workers(), max(1, len(paths)))
    # Forking is only safe with no other thread alive (a library caller may have some).
    forkable = threading.active_count() == 1
    if loader is None and workers > 1 and len(paths) >= _PROCESS_THRESHOLD and forkable:
        return _hash_in_processes(paths, workers, progress, tail_check, sizes)

    def one(index: int) -> bytes:
        path = paths[index]
        if loader is None:
            return _leaf_of_file(index, path, tail_check)
        return leaf_digest(index, loader(Path(path)))

    if workers == 1:
        leaves = []
        for i in range(len(paths)):
            leaves.append(one(i))
            if progress:
                progress(i + 1)
        return leaves
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        leaves = []
        # map() keeps order and bounds nothing in memory but the digests.
        for done, digest in enumerate(pool.map(one, range(len(paths))), start=1):
            leaves.append(digest)
            if progress:
                progress(done)
        return leaves


@frozen
class MerkleTree:
    """All layers of a built tree: ``layers[0]`` are the leaves, the last is the root."""

    layers: tuple[tuple[bytes, ...], ...]

    @classmethod
    def from_leaves(cls, leaves: Sequence[bytes]) -> MerkleTree:
        layers = [tuple(leaves)]
        for _ in range(tree_levels(len(leaves))):
            below = layers[-1]
            layers.append(
                tuple(
                    node_digest(below[i], below[i + 1] if i + 1 < len(below) else below[i])
                    for i in range(0, len(below), 2)
                )
            )
        return cls(tuple(layers))

    @property
    def count(self) -> int:
        return len(self.layers[0])

    @property
    def levels(self) -> int:
        return len(self.layers) - 1

    @property
    def root(self) -> ModuleHashesRoot:
        if self.count == 0:
            return ModuleHashesRoot.placeholder()
        return ModuleHashesRoot(self.levels, self.layers[-1][0])

    def proof(self, index: int) -> list[bytes]:
        """The sibling digests of leaf ``index``, bottom-up (itself where none exists)."""
        if not 0 <= index < self.count:
            raise IndexError(f"module index {index} outside 0..{self.count - 1}")
        return [self._sibling(level, index >> level) for level in range(self.levels)]

    def _sibling(self, level: int, here: int) -> bytes:
        """The partner of node ``here`` at ``level`` (itself where an odd last one has none)."""
        nodes = self.layers[level]
        partner = here ^ 1
        return nodes[partner] if partner < len(nodes) else nodes[here]

    def trailer(self, index: int) -> bytes:
        """The ``.merkle`` file content for module ``index``."""
        return merkle_trailer(index, self.proof(index))

    def trailers(self, indexes: Iterable[int]) -> list[bytes]:
        """``[self.trailer(i) for i in indexes]``, cheaper over a run of neighbours.

        Neighbouring leaves share most of their path: the sibling at level l
        changes only when ``index >> l`` does, so in ascending order each
        index walks up only until its path meets the previous one's (two
        levels on average). 4230 proofs one by one took 27-35 ms, in front
        of the writes of ``vmpatch tree``.
        """
        levels = self.levels
        siblings = [b""] * levels
        held = [-1] * levels  # the node at each level whose sibling is in siblings
        out = []
        for index in indexes:
            if not 0 <= index < self.count:
                raise IndexError(f"module index {index} outside 0..{self.count - 1}")
            for level in range(levels):
                here = index >> level
                if held[level] == here:
                    break  # so is every level above: the paths have met
                held[level] = here
                siblings[level] = self._sibling(level, here)
            out.append(merkle_trailer(index, siblings))
        return out
