# SPDX-License-Identifier: GPL-2.0-or-later
"""The format rules as the tests spell them, once, independently of vmpatch.

Written from docs/format.md, never from vmpatch's code, so that a test
comparing vmpatch's output with these compares it with independent evidence:

* the leaf and node hashes and the bottom-up tree of the generator
  (scripts/modules-merkle-tree.c): :func:`leaf`, :func:`node`,
  :func:`reference_root_of`, :func:`reference_root` over a build tree;
* the module signature trailer (include/linux/module_signature.h):
  :data:`MARKER`, :data:`INFO` and :func:`peel_trailers`.

test_merkle_properties keeps a second, top-down derivation of the tree
(``RefTree``) on purpose: two derivations agreeing is evidence that one of
them copying a mistake is not.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from pathlib import Path

#: The last bytes of every signed module (MODULE_SIG_STRING).
MARKER = b"~Module signature appended~\n"

#: struct module_signature: algo, hash, id_type, signer_len, key_id_len, 3 pad, be32 sig_len.
INFO = struct.Struct(">BBBBB3xI")


def leaf(index: int, data: bytes) -> bytes:
    """leaf(i) = SHA256(0x01 || be32(i) || module bytes)."""
    return hashlib.sha256(b"\x01" + struct.pack(">I", index) + data).digest()


def node(left: bytes, right: bytes) -> bytes:
    """node(l, r) = SHA256(0x02 || l || r)."""
    return hashlib.sha256(b"\x02" + left + right).digest()


def reference_root_of(modules: Sequence[bytes]) -> tuple[int, bytes]:
    """Levels and root over the modules' bytes, layer by layer, an odd last node paired with
    itself; zero modules give the blank root (levels 0, all zero), one module levels 1."""
    layer, levels = [leaf(i, data) for i, data in enumerate(modules)], 0
    while len(layer) > 1 or (levels == 0 and layer):
        layer = [node(layer[i], layer[min(i + 1, len(layer) - 1)]) for i in range(0, len(layer), 2)]
        levels += 1
    return levels, (layer[0] if layer else bytes(32))


def reference_root(build_dir: Path, suffix: str = ".ko") -> tuple[int, bytes]:
    """Levels and root of a build tree: its modules.order's files (``.o`` -> ``suffix``)."""
    lines = (build_dir / "modules.order").read_text().splitlines()
    return reference_root_of([(build_dir / (line[:-2] + suffix)).read_bytes() for line in lines])


def peel_trailers(data: bytes) -> tuple[bytes, list[int]]:
    """The bytes under every trailer, and the id_types cut off, last first."""
    kinds = []
    while data.endswith(MARKER):
        _, _, id_type, _, _, sig_len = INFO.unpack(data[-len(MARKER) - INFO.size : -len(MARKER)])
        kinds.append(id_type)
        data = data[: len(data) - len(MARKER) - INFO.size - sig_len]
    return data, kinds


def peel_one(data: bytes) -> bytes:
    """``data`` without its last trailer (which it must end with)."""
    assert data.endswith(MARKER), "no trailer to cut"
    *_, sig_len = INFO.unpack(data[-len(MARKER) - INFO.size : -len(MARKER)])
    return data[: len(data) - len(MARKER) - INFO.size - sig_len]
