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
from dataclasses import dataclass
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure
from vmpatch.fs.atomic import open_input
from vmpatch.records.root import DIGEST_SIZE, ModuleHashesRoot

__all__ = ["MANIFEST_NAME", "LeafEntry", "LeafManifest", "read_manifest"]

MANIFEST_NAME = "modules.leaves"
_MAGIC = "# vmpatch leaf manifest 1"


@dataclass(frozen=True)
class LeafEntry:
    """One position: the module file, its content digest and its leaf."""

    position: int
    path: str  # relative to the tree, e.g. "kernel/lib/crc7.ko.xz" or "updates/zfs.ko"
    content_sha256: bytes  # SHA-256 of the kernel-visible bytes without any trailer
    leaf: bytes  # SHA-256(0x01 || be32(position) || those bytes)


@dataclass(frozen=True)
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
