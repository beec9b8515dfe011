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
import mmap
import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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


def leaf_digest(index: int, data: bytes | memoryview | mmap.mmap) -> bytes:
    """leaf(i) over one module's bytes."""
    h = hashlib.sha256(LEAF_PREFIX + _POS.pack(index))
    h.update(data)
    return h.digest()


def node_digest(left: bytes, right: bytes) -> bytes:
    """node(l, r): an inner node over its two children."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _leaf_of_file(index: int, path: Path) -> bytes:
    """Hash a plain file through mmap: read once, nothing held beyond the page cache.

    hashlib releases the GIL while it digests a large buffer, so threads hash
    files truly in parallel.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return leaf_digest(index, b"")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return leaf_digest(index, mapped)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read module") from err


def default_workers() -> int:
    """The CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def hash_leaves(
    paths: Sequence[Path],
    *,
    workers: int | None = None,
    loader: ModuleLoader | None = None,
    progress: Progress | None = None,
) -> list[bytes]:
    """leaf(i) for every module, i being its index in ``paths``.

    ``loader`` returns a module's bytes when they are not the file's bytes
    (compressed modules); plain files are mmapped. ``progress`` is called with
    the number of modules finished, from the calling thread.
    """
    workers = workers or default_workers()

    def one(index: int) -> bytes:
        path = paths[index]
        if loader is None:
            return _leaf_of_file(index, path)
        return leaf_digest(index, loader(path))

    if workers == 1 or len(paths) < 2:
        leaves = []
        for i in range(len(paths)):
            leaves.append(one(i))
            if progress:
                progress(i + 1)
        return leaves
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
