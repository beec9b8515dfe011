# SPDX-License-Identifier: GPL-2.0-or-later
"""The leaf manifest ``modules.leaves``: what each position of a re-rooted tree holds.

``vmpatch reroot`` writes it beside ``modules.order`` (docs/format.md section 7)
so that a later re-root gives ``--extra`` modules the same positions, and so
that a rebuilder (or ``vmpatch verify``'s explanations) can work from it
without the tree that was hashed. It is deterministic: no timestamps, no
absolute paths, one line per position::

    # vmpatch leaf manifest 1
    # levels 4 root 6c154dcf...8357c
    0 kernel/lib/crc7.ko.xz <sha256 of the kernel-visible, trailer-free bytes> <leaf>
    ...

Fields are separated by one space; paths are DIR-relative and may not
contain whitespace (modules.order forbids it too). Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure
from vmpatch.frozen import frozen
from vmpatch.fs.atomic import open_input
from vmpatch.records.root import DIGEST_SIZE, ModuleHashesRoot

__all__ = [
    "MANIFEST_NAME",
    "LeafEntry",
    "LeafManifest",
    "own_manifest",
    "read_manifest",
    "tree_state",
]

MANIFEST_NAME = "modules.leaves"
_MAGIC = "# vmpatch leaf manifest 1"


@frozen
class LeafEntry:
    """One position: the module file, its content digest and its leaf."""

    position: int
    path: str  # relative to the tree, e.g. "kernel/lib/crc7.ko.xz" or "updates/zfs.ko"
    content_sha256: bytes  # SHA-256 of the kernel-visible bytes without any trailer
    leaf: bytes  # SHA-256(0x01 || be32(position) || those bytes)


@frozen
class LeafManifest:
    """Every position of a tree, in order, and the root they fold to."""

    root: ModuleHashesRoot
    entries: tuple[LeafEntry, ...]

    def encode(self) -> bytes:
        lines = [_MAGIC, f"# levels {self.root.levels} root {self.root.digest.hex()}"]
        lines += [
            f"{e.position} {e.path} {e.content_sha256.hex()} {e.leaf.hex()}" for e in self.entries
        ]
        return ("\n".join(lines) + "\n").encode("utf-8")

    def by_path(self) -> dict[str, LeafEntry]:
        return {entry.path: entry for entry in self.entries}


def _digest(path: Path, line_no: int, text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != DIGEST_SIZE:
        raise InputError(path, f"line {line_no}: {text!r} is not a SHA-256 digest")
    return value


def read_manifest(path: str | os.PathLike[str]) -> LeafManifest:
    """Parse a leaf manifest strictly; every malformed line is an error naming it."""
    where = Path(path)
    try:
        with open_input(where) as stream:
            text = stream.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(where, "not a leaf manifest: not UTF-8 text") from err
    except OSError as err:
        raise SystemFailure.from_oserror(where, err, "read") from err
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or lines[0] != _MAGIC:
        raise InputError(where, f"not a leaf manifest (first line is not {_MAGIC!r})")
    head = lines[1].split(" ")
    if len(head) != 5 or head[:2] != ["#", "levels"] or head[3] != "root" or not head[2].isdigit():
        raise InputError(where, "line 2: expected '# levels N root HEX'")
    try:
        root = ModuleHashesRoot(int(head[2]), _digest(where, 2, head[4]))
    except ValueError as err:
        raise InputError(where, f"line 2: {err}") from err
    entries: list[LeafEntry] = []
    for line_no, line in enumerate(lines[2:], start=3):
        fields = line.split(" ")
        if len(fields) != 4 or not fields[0].isdigit():
            raise InputError(where, f"line {line_no}: expected 'POSITION PATH SHA256 LEAF'")
        position = int(fields[0])
        if position != len(entries):
            raise InputError(where, f"line {line_no}: position {position}, expected {len(entries)}")
        entries.append(
            LeafEntry(
                position,
                fields[1],
                _digest(where, line_no, fields[2]),
                _digest(where, line_no, fields[3]),
            )
        )
    return LeafManifest(root, tuple(entries))


def own_manifest(directory: str | os.PathLike[str]) -> Path | None:
    """The leaf manifest a tree keeps beside its modules.order, if it has one."""
    path = Path(directory) / MANIFEST_NAME
    return path if path.is_file() else None


def tree_state(
    directory: str | os.PathLike[str], kernel_root: ModuleHashesRoot | None, proved: int
) -> str | None:
    """What ``vmpatch verify --modules DIR`` can say of a re-rooted tree, or None.

    Only a tree with a leaf manifest (docs/format.md section 7) beside
    ``modules.order`` was re-rooted by vmpatch; the manifest names the root
    it was re-rooted for, and ``proved`` (modules whose proof the kernel
    accepts) against its positions tells done from part-way.
    """
    manifest_path = own_manifest(directory)
    if manifest_path is None:
        return None
    manifest = read_manifest(manifest_path)
    total = len(manifest.entries)
    named = f"the tree is re-rooted for root {manifest.root.digest.hex()}"
    if kernel_root is None:
        return f"{named}; the kernel has no .module_hashes"
    whose = "the kernel's" if manifest.root == kernel_root else "not the kernel's"
    line = f"{named} ({whose}); {proved} of {total} modules carry proofs for the kernel's root"
    if manifest.root == kernel_root and proved < total:
        line += " (part-way: run vmpatch reroot again to finish)"
    return line
