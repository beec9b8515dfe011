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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from vmpatch.errors import EXIT_MISMATCH, EXIT_OK, InputError, SystemFailure
from vmpatch.merkle import MerkleTree, default_workers, leaf_digest
from vmpatch.records.leaves import read_manifest
from vmpatch.records.root import ModuleHashesRoot
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


@dataclass(frozen=True)
class _Entry:
    position: int
    path: str
    sha256: bytes
    raw_sha256: bytes | None


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
            from vmpatch.records.modorder import Layout
            from vmpatch.workflow.reroot import layout_of

            return "installed" if layout_of(path, None) is Layout.INSTALLED else "kbuild"
        with open(path, "rb") as stream:
            head = stream.read(len(_MANIFEST_MAGIC))
    except FileNotFoundError:
        raise InputError(path, "no such file or directory") from None
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from err
    return "manifest" if head == _MANIFEST_MAGIC else "image"


def _hash_module(position: int, name: str, path: Path, raw: bool) -> tuple[_Entry, bytes]:
    """One module's content digest (and its leaf, for the tree's root)."""
    from vmpatch.ko.compression import decompress, read_raw

    codec, stored = read_raw(path)
    data = decompress(stored, codec, path=path)
    body = strip_trailers(data)[0]
    entry = _Entry(
        position,
        name,
        hashlib.sha256(body).digest(),
        hashlib.sha256(stored).digest() if raw else None,
    )
    return entry, leaf_digest(position, body)


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
        entries = [_Entry(e.position, e.path, e.content_sha256, None) for e in manifest.entries]
        tree = MerkleTree.from_leaves([e.leaf for e in manifest.entries])
        if tree.root != manifest.root:
            raise InputError(side, "its recorded root is not the root its leaves fold to")
        return _Plan(side, kind, None, [], None, entries, manifest.root)
    return _Plan(side, kind, side, tree_listing(side), None)


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
    results: list[list[tuple[_Entry, bytes]]] = [[], []]
    if jobs:
        with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
            done = pool.map(lambda job: _hash_module(job[1], job[2], job[3], compare_bytes), jobs)
            for (k, *_), result in zip(jobs, done, strict=True):
                results[k].append(result)
    sides = []
    tables: list[dict[str, _Entry] | None] = []
    for k, plan in enumerate(plans):
        entries = plan.entries
        tree_root = plan.manifest_root
        if plan.listing:
            entries = [entry for entry, _leaf in results[k]]
            tree_root = MerkleTree.from_leaves([leaf for _e, leaf in results[k]]).root
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
        changes = _compare(table_a, table_b, compare_bytes)
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


def _compare(a: dict[str, _Entry], b: dict[str, _Entry], compare_bytes: bool) -> list[ModuleChange]:
    def change(name: str, kind: Change, x: _Entry | None, y: _Entry | None) -> ModuleChange:
        return ModuleChange(
            name,
            kind,
            x.position if x else None,
            y.position if y else None,
            x.path if x else None,
            y.path if y else None,
            x.sha256.hex() if x else None,
            y.sha256.hex() if y else None,
        )

    out = []
    for name in sorted(a.keys() | b.keys(), key=lambda n: (a.get(n) or b[n]).position):
        x, y = a.get(name), b.get(name)
        if y is None:
            out.append(change(name, Change.REMOVED, x, None))
        elif x is None:
            out.append(change(name, Change.ADDED, None, y))
        elif x.sha256 != y.sha256:
            out.append(change(name, Change.CHANGED, x, y))
        elif x.position != y.position:
            out.append(change(name, Change.MOVED, x, y))
        elif compare_bytes and x.raw_sha256 != y.raw_sha256:
            out.append(change(name, Change.FILE_BYTES, x, y))
    return out
