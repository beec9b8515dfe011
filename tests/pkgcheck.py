# SPDX-License-Identifier: GPL-2.0-or-later
"""Independent evidence that an installed module tree loads against a vmlinux.

Used by the packaging tests. Nothing here calls vmpatch: the root is read out
of vmlinux with ``objcopy --dump-section``, modules are decompressed with the
xz/zstd/gzip command-line tools, the trailer is cut with the layout of
docs/format.md section 3 written out here, and every proof is folded to a root
with hashlib (section 2's formulas). The tests then ask ``vmpatch verify`` as
well, so the two must agree.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from clirun import tool
from conftest import require_tool

MARKER = b"~Module signature appended~\n"
DECOMPRESS = {".xz": ["xz", "-dc"], ".zst": ["zstd", "-dcq"], ".gz": ["gzip", "-dc"]}
PROOF_ID_TYPE = 3


def kernel_visible(path: Path) -> bytes:
    """The module as the kernel's decompressor hands it over, by the real tool."""
    for suffix, argv in DECOMPRESS.items():
        if path.name.endswith(".ko" + suffix):
            require_tool(argv[0])
            return bytes(tool(*argv, path).stdout)
    return path.read_bytes()


def section_root(vmlinux: Path, tmp: Path) -> tuple[int, bytes]:
    """``levels`` and ``hash`` of x86_64 vmlinux's ``.module_hashes`` (little-endian u32)."""
    require_tool("objcopy", "binutils")
    out = tmp / f"{vmlinux.name}.module_hashes.bin"
    tool("objcopy", "--dump-section", f".module_hashes={out}", vmlinux, tmp / "scratch")
    raw = out.read_bytes()
    assert len(raw) == 36, f"{vmlinux}: .module_hashes is {len(raw)} bytes"
    return struct.unpack("<I", raw[:4])[0], raw[4:]


def split_proof(data: bytes) -> tuple[bytes, bytes] | None:
    """(module bytes, proof) when ``data`` ends with exactly one Merkle trailer."""
    if not data.endswith(MARKER):
        return None
    info = data[-len(MARKER) - 12 : -len(MARKER)]
    id_type, sig_len = info[2], struct.unpack(">I", info[8:])[0]
    if id_type != PROOF_ID_TYPE:
        return None
    end = len(data) - len(MARKER) - 12
    base, proof = data[: end - sig_len], data[end - sig_len : end]
    if base.endswith(MARKER):
        return None  # stacked: a second trailer under the proof
    return base, proof


def fold(base: bytes, proof: bytes) -> tuple[int, int, bytes]:
    """(position, levels, root) the proof folds ``base`` to."""
    position = struct.unpack(">I", proof[:4])[0]
    siblings = [proof[i : i + 32] for i in range(4, len(proof), 32)]
    node = hashlib.sha256(b"\x01" + proof[:4] + base).digest()
    index = position
    for sibling in siblings:
        pair = node + sibling if index % 2 == 0 else sibling + node
        node = hashlib.sha256(b"\x02" + pair).digest()
        index //= 2
    return position, len(siblings), node


def order_files(modules_dir: Path) -> list[Path]:
    """The file each installed ``modules.order`` line names (one of .ko[.gz|.xz|.zst])."""
    files = []
    for line in (modules_dir / "modules.order").read_text().split():
        found = [
            p for p in (modules_dir / (line + s) for s in ("", ".gz", ".xz", ".zst")) if p.is_file()
        ]
        assert len(found) == 1, f"{line}: {found}"
        files.append(found[0])
    return files


def problems(modules_dir: Path, vmlinux: Path, tmp: Path) -> list[str]:
    """Why modules of ``modules_dir`` would not load against ``vmlinux`` (empty: all load)."""
    levels, root = section_root(vmlinux, tmp)
    found = []
    files = order_files(modules_dir)
    if not files:
        return [f"{modules_dir}: no modules"]
    for position, path in enumerate(files):
        split = split_proof(kernel_visible(path))
        if split is None:
            found.append(f"{path}: does not end with exactly one Merkle proof")
            continue
        got = fold(*split)
        if got != (position, levels, root):
            found.append(f"{path}: folds to {got[0]}/{got[1]}/{got[2].hex()}, not the image's")
    return found
