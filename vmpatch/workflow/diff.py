# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch diff A B``: do two builds give the same root, and which modules differ?

A rebuilder's question. Each side is a kbuild tree, a staged install tree,
a leaf manifest (``modules.leaves``, :mod:`vmpatch.records.leaves`) or a
kernel image (whose modules come from ``--modules-a``/``--modules-b``; without
them only the roots are compared).

Modules are matched by name (:func:`vmpatch.workflow.explain.module_key`:
``lib/crc7`` for both ``lib/crc7.o`` and ``kernel/lib/crc7.ko.xz``) and
compared by the SHA-256 of their kernel-visible bytes (decompressed by the
kernel's decoder, every trailer removed), positions apart: a leaf includes
the position, so comparing leaves would call a moved module changed.
Compression and trailers are differences only with ``compare_bytes``
(``--bytes``), which compares the files as stored too.

Both trees are hashed once, in one thread pool (decompression and SHA-256
release the GIL), so a diff costs about one ``vmpatch tree`` per side.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from vmpatch.errors import EXIT_MISMATCH, EXIT_OK, InputError, SystemFailure
from vmpatch.merkle import MerkleTree, _leaf_of_file, default_workers, leaf_digest
from vmpatch.records.leaves import read_manifest
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.records.trailer import MARKER
from vmpatch.workflow.explain import module_key, strip_trailers, tree_listing

__all__ = ["Change", "DiffReport", "DiffSide", "ModuleChange", "run_diff"]

_MANIFEST_MAGIC = b"# vmpatch leaf manifest "


class Change(StrEnum):
    """How a module differs between A and B."""

    ADDED = "added"  # only in B
    REMOVED = "removed"  # only in A
    MOVED = "moved"  # same kernel-visible bytes, another position
    CHANGED = "changed"  # other kernel-visible bytes (position may differ too)
    FILE_BYTES = "file-bytes"  # same kernel-visible bytes, other file (--bytes only)


@dataclass(frozen=True)
class ModuleChange:
    """One module that differs; the side it is missing from has None."""

    name: str
    change: Change
    position_a: int | None
    position_b: int | None
    path_a: str | None
    path_b: str | None
    sha256_a: str | None
    sha256_b: str | None


@dataclass(frozen=True)
class DiffSide:
    """One side: what it is, the root it gives, and how many modules it holds.

    ``root`` is what is compared: an image's root, else the root its
    modules fold to (``tree_root``, None for an image without modules).
    """

    source: Path
    kind: str  # kbuild, installed, manifest, image
    root: ModuleHashesRoot | None
    tree_root: ModuleHashesRoot | None
    modules_dir: Path | None
    module_count: int | None


@dataclass
class _Entry:
    """One position of a side: its leaf always, its content digest when known or needed."""

    position: int
    path: str
    leaf: bytes
    sha256: bytes | None  # of the kernel-visible, trailer-free bytes (a manifest has it)
    raw_sha256: bytes | None = None  # of the file as stored (--bytes)
    file: Path | None = None  # to hash the content again when a comparison needs it


@dataclass(frozen=True)
class DiffReport:
    """What ``vmpatch diff`` found."""

    json_extra = (("same", "same"), ("identical", "identical"), ("counts", "counts"))

    a: DiffSide
    b: DiffSide
    same_root: bool
    modules_compared: bool  # False when a side is an image without modules
    compare_bytes: bool
    changes: tuple[ModuleChange, ...]
    common: int  # modules present in both

    @property
    def identical(self) -> int:
        return self.common - sum(
            1 for c in self.changes if c.position_a is not None and c.position_b is not None
        )

    @property
    def counts(self) -> dict[str, int]:
        return {kind.value: sum(1 for c in self.changes if c.change is kind) for kind in Change}

    @property
    def same(self) -> bool:
        return self.same_root and not self.changes

    @property
    def exit_code(self) -> int:
        """diffoscope's convention: 0 same, 1 different."""
        return EXIT_OK if self.same else EXIT_MISMATCH


def _kind(path: Path) -> str:
    try:
        if path.is_dir():
            from vmpatch.records.modorder import Layout, layout_of

            return "installed" if layout_of(path, None) is Layout.INSTALLED else "kbuild"
        with open(path, "rb") as stream:
            head = stream.read(len(_MANIFEST_MAGIC))
    except FileNotFoundError:
        raise InputError(path, "no such file or directory") from None
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from err
    return "manifest" if head == _MANIFEST_MAGIC else "image"


def _body(path: Path) -> tuple[bytes, memoryview]:
    """The file as stored, and the kernel-visible bytes without any trailer (no copy)."""
    from vmpatch.ko.compression import decompress, read_raw

    codec, stored = read_raw(path)
    data = decompress(stored, codec, path=path)
    view = memoryview(data)
    return stored, view[: len(strip_trailers(view)[0])]


def _hash_module(position: int, name: str, path: Path, raw: bool) -> _Entry:
    """One module's leaf: one SHA-256 pass, as ``vmpatch tree`` makes.

    The content digest (a second pass) is made only for the modules a
    comparison needs it for (:func:`_content_sha256`).
    """
    if not raw and not _compressed_or_trailed(path):
        # A plain module without a trailer (a kbuild tree's): hashed from
        # the file in chunks exactly as `vmpatch tree` hashes it.
        return _Entry(position, name, _leaf_of_file(position, path), None, None, path)
    stored, body = _body(path)
    return _Entry(
        position,
        name,
        leaf_digest(position, body),
        None,
        hashlib.sha256(stored).digest() if raw else None,
        path,
    )


def _compressed_or_trailed(path: Path) -> bool:
    """Whether the file's bytes are not its kernel-visible, trailer-free bytes as they are."""
    if path.name.endswith((".gz", ".xz", ".zst")):
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            tail = os.pread(fd, len(MARKER), max(0, size - len(MARKER)))
        finally:
            os.close(fd)
    except OSError:
        return True  # let the full read name the error
    return tail == MARKER


def _content_sha256(entry: _Entry) -> None:
    if entry.sha256 is None and entry.file is not None:
        entry.sha256 = hashlib.sha256(_body(entry.file)[1]).digest()


@dataclass
class _Plan:
    side: Path
    kind: str
    modules_dir: Path | None
    listing: list[tuple[str, Path]]
    image_root: ModuleHashesRoot | None
    entries: list[_Entry] | None = None  # a manifest's, read directly
    manifest_root: ModuleHashesRoot | None = None


def _plan(side: Path, modules: Path | None) -> _Plan:
    kind = _kind(side)
    if kind == "image":
        from vmpatch.boot.kernel import kernel_model

        model = kernel_model(side, None)
        root = model.root if model.merkle else None
        listing = tree_listing(modules) if modules is not None else []
        return _Plan(side, kind, modules, listing, root)
    if modules is not None:
        from vmpatch.errors import UsageError

        raise UsageError(side, f"is a {kind} tree or manifest: --modules is for a kernel image")
    if kind == "manifest":
        manifest = read_manifest(side)
        entries = [_Entry(e.position, e.path, e.leaf, e.content_sha256) for e in manifest.entries]
        tree = MerkleTree.from_leaves([e.leaf for e in manifest.entries])
        if tree.root != manifest.root:
            raise InputError(side, "its recorded root is not the root its leaves fold to")
        return _Plan(side, kind, None, [], None, entries, manifest.root)
    return _Plan(side, kind, side, tree_listing(side), None)


_T = TypeVar("_T")
_R = TypeVar("_R")


def _in_shares(work: Callable[[_T], _R], items: Sequence[_T], workers: int | None) -> list[_R]:
    """``work`` over ``items`` in a few threads, each taking every n-th item.

    One task per thread rather than per module: a future per module cost as
    much as the hashing of a small one. Interleaved shares keep the threads'
    loads alike without sizing the files first.
    """
    count = max(1, min(workers or default_workers(), len(items)))
    out: list[_R | None] = [None] * len(items)

    def share(start: int) -> None:
        for i in range(start, len(items), count):
            out[i] = work(items[i])

    with ThreadPoolExecutor(max_workers=count) as pool:
        for done in [pool.submit(share, k) for k in range(count)]:
            done.result()
    return out  # type: ignore[return-value]


def run_diff(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    modules_a: str | os.PathLike[str] | None = None,
    modules_b: str | os.PathLike[str] | None = None,
    compare_bytes: bool = False,
    workers: int | None = None,
) -> DiffReport:
    """``vmpatch diff``: hash both sides once, in parallel, and compare them module by module."""
    plans = [
        _plan(Path(a), Path(modules_a) if modules_a is not None else None),
        _plan(Path(b), Path(modules_b) if modules_b is not None else None),
    ]
    if compare_bytes and any(p.kind == "manifest" for p in plans):
        from vmpatch.errors import UsageError

        raise UsageError(None, "--bytes compares files: a leaf manifest holds only digests")
    jobs = [
        (k, i, name, path) for k, p in enumerate(plans) for i, (name, path) in enumerate(p.listing)
    ]
    hashed = _in_shares(
        lambda job: _hash_module(job[1], job[2], job[3], compare_bytes), jobs, workers
    )
    results: list[list[_Entry]] = [[], []]
    for (k, *_), entry in zip(jobs, hashed, strict=True):
        results[k].append(entry)
    sides = []
    tables: list[dict[str, _Entry] | None] = []
    for k, plan in enumerate(plans):
        entries = plan.entries
        tree_root = plan.manifest_root
        if plan.listing:
            entries = results[k]
            tree_root = MerkleTree.from_leaves([e.leaf for e in entries]).root
        elif plan.kind in ("kbuild", "installed"):
            entries, tree_root = [], MerkleTree.from_leaves([]).root
        tables.append(None if entries is None else _by_name(plan.side, entries))
        sides.append(
            DiffSide(
                source=plan.side,
                kind=plan.kind,
                root=plan.image_root if plan.kind == "image" else tree_root,
                tree_root=tree_root,
                modules_dir=plan.modules_dir if plan.kind == "image" else None,
                module_count=None if entries is None else len(entries),
            )
        )
    changes: list[ModuleChange] = []
    common = 0
    table_a, table_b = tables
    if table_a is not None and table_b is not None:
        common = len(table_a.keys() & table_b.keys())
        changes = _compare(table_a, table_b, compare_bytes, workers)
    return DiffReport(
        a=sides[0],
        b=sides[1],
        same_root=sides[0].root is not None and sides[0].root == sides[1].root,
        modules_compared=table_a is not None and table_b is not None,
        compare_bytes=compare_bytes,
        changes=tuple(changes),
        common=common,
    )


def _by_name(side: Path, entries: list[_Entry]) -> dict[str, _Entry]:
    table: dict[str, _Entry] = {}
    for entry in entries:
        key = module_key(entry.path)
        if key in table:
            raise InputError(side, f"two positions hold a module named {key}")
        table[key] = entry
    return table


def _compare(
    a: dict[str, _Entry], b: dict[str, _Entry], compare_bytes: bool, workers: int | None
) -> list[ModuleChange]:
    """The modules that differ, in A's order (then B's for those only in B).

    At the same position, leaves differ exactly when the contents do; at
    different positions, and for every module reported, the content digests
    decide, hashed now for those modules only.
    """
    both = a.keys() & b.keys()
    needed = [
        entry
        for name in both
        if a[name].position != b[name].position or a[name].leaf != b[name].leaf
        for entry in (a[name], b[name])
    ]
    needed += [entry for name in a.keys() ^ b.keys() for entry in [a.get(name) or b[name]]]
    _in_shares(_content_sha256, needed, workers)

    def change(name: str, kind: Change, x: _Entry | None, y: _Entry | None) -> ModuleChange:
        return ModuleChange(
            name,
            kind,
            x.position if x else None,
            y.position if y else None,
            x.path if x else None,
            y.path if y else None,
            x.sha256.hex() if x and x.sha256 else None,
            y.sha256.hex() if y and y.sha256 else None,
        )

    out = []
    for name in sorted(a.keys() | b.keys(), key=lambda n: _order(n, a, b)):
        x, y = a.get(name), b.get(name)
        if y is None:
            out.append(change(name, Change.REMOVED, x, None))
        elif x is None:
            out.append(change(name, Change.ADDED, None, y))
        elif x.position == y.position and x.leaf == y.leaf:
            if compare_bytes and x.raw_sha256 != y.raw_sha256:
                out.append(change(name, Change.FILE_BYTES, x, y))
        elif x.sha256 != y.sha256:
            out.append(change(name, Change.CHANGED, x, y))
        elif x.position != y.position:
            out.append(change(name, Change.MOVED, x, y))
    return out


def _order(name: str, a: dict[str, _Entry], b: dict[str, _Entry]) -> tuple[int, int]:
    return (0, a[name].position) if name in a else (1, b[name].position)
