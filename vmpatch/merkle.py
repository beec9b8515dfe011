# SPDX-License-Identifier: GPL-2.0-or-later
"""The Merkle tree over all modules, bit-identical to the kernel's generator.

Keep in sync with ``scripts/modules-merkle-tree.c`` of the v5 series
(FORMAT.md section 2)::

    leaf(i)    = SHA256(0x01 || be32(i) || module bytes)
    node(l, r) = SHA256(0x02 || l || r)

Leaves are paired in order; an odd last element at any level is paired with
itself; ``levels`` is 0 for no modules, 1 for one (root = node(leaf, leaf)),
else ceil(log2(n)). The proof of module i is, bottom-up, the partner of the
node on i's path at each level.

This module builds trees. Checking a proof is :mod:`vmpatch.verify`'s job,
which recomputes bottom-up with its own code so a bug here cannot hide a bug
there.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmpatch.errors import SystemFailure
from vmpatch.rootrecord import ModuleHashesRoot
from vmpatch.trailer import merkle_trailer

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
Progress = Callable[[int], None]


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


def _leaf_of_file(index: int, path: Path) -> bytes:
    """Hash a plain file in chunks through one reused buffer per thread.

    Measured on 4000 modules (527 MiB in tmpfs, 2 CPUs, scripts/bench-tree's
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
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            while size := os.readv(fd, [buffer]):
                h.update(view[:size])
        finally:
            os.close(fd)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read module") from err
    return h.digest()


def default_workers() -> int:
    """The CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


#: Modules per task handed to a worker process: enough to amortise the task
#: round trip, small enough that the last tasks still balance across workers.
_SPAN = 64
#: Below this many modules, starting processes costs more than it saves.
_PROCESS_THRESHOLD = 256


def _leaves_of_span(paths: Sequence[Path], first: int) -> list[bytes]:
    """leaf(first + k) of each file in ``paths``: one worker process's task."""
    return [_leaf_of_file(first + k, path) for k, path in enumerate(paths)]


def _hash_in_processes(
    paths: Sequence[Path], workers: int, progress: Progress | None
) -> list[bytes]:
    """Hash plain files in forked worker processes.

    Threads scale poorly here: with thousands of small modules, the per-file
    Python work convoys on the GIL between hashes. Measured on 4000 modules
    (527 MiB, 2 CPUs): two threads 0.53-0.63 s, two forked processes
    0.30-0.39 s, one thread 0.47-0.50 s. ``fork`` keeps start-up to a few
    milliseconds; callers must not hold other threads while hashing (the
    CLI's progress bar refreshes from the calling thread for that reason).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spans = [(paths[i : i + _SPAN], i) for i in range(0, len(paths), _SPAN)]
    leaves: list[bytes] = []
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for part in pool.map(_leaves_of_span, *zip(*spans, strict=True)):
            leaves.extend(part)
            if progress:
                progress(len(leaves))
    return leaves


def hash_leaves(
    paths: Sequence[Path],
    *,
    workers: int | None = None,
    loader: ModuleLoader | None = None,
    progress: Progress | None = None,
) -> list[bytes]:
    """leaf(i) for every module, i being its index in ``paths``.

    ``loader`` returns a module's bytes when they are not the file's bytes
    (compressed modules; decompression releases the GIL, so those use
    threads); plain files are read in chunks, in worker processes when there
    are many. ``progress`` is called with the number of modules finished,
    from the calling thread.
    """
    workers = min(workers or default_workers(), max(1, len(paths)))
    if loader is None and workers > 1 and len(paths) >= _PROCESS_THRESHOLD:
        return _hash_in_processes(paths, workers, progress)

    def one(index: int) -> bytes:
        path = paths[index]
        if loader is None:
            return _leaf_of_file(index, path)
        return leaf_digest(index, loader(path))

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


@dataclass(frozen=True)
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
        siblings = []
        for level in range(self.levels):
            nodes = self.layers[level]
            here = index >> level
            partner = here ^ 1
            siblings.append(nodes[partner] if partner < len(nodes) else nodes[here])
        return siblings

    def trailer(self, index: int) -> bytes:
        """The ``.merkle`` file content for module ``index``."""
        return merkle_trailer(index, self.proof(index))
