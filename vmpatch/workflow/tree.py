# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch tree``: the replacement of the series' ``scripts/modules-merkle-tree``.

Reads a build tree's modules.order, hashes every module (in parallel), builds
the tree, and writes ``<module>.merkle`` beside each module plus, on request,
the 36-byte root (kbuild's ``.tmp_module_hashes.bin``) and a C definition
(kbuild's ``.tmp_module_hashes.c``). Everything is read and validated before
anything is written, and every write is atomic: an error leaves the tree as
it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmpatch.errors import InputError, UsageError
from vmpatch.fs.atomic import atomic_write
from vmpatch.merkle import MerkleTree, hash_leaves
from vmpatch.records.modorder import OrderEntry, read_modules_order
from vmpatch.records.root import ByteOrder, ModuleHashesRoot

__all__ = [
    "PROOF_SUFFIX",
    "TreePlan",
    "build_tree",
    "default_suffix",
    "plan_tree",
    "root_c_source",
    "target_byteorder",
    "write_proofs",
]

PROOF_SUFFIX = ".merkle"
PLAIN_SUFFIX = ".ko"
#: vmpatch.records.striprecord.RECORD_NAME, repeated so that plain trees skip importing it.
STRIP_RECORD = "vmpatch-strip.json"
STRIPPED_SUFFIX = ".ko.stripped"


def default_suffix(build_dir: Path) -> str:
    """``.ko.stripped`` when the tree is stripped at build time, else ``.ko``.

    kbuild records INSTALL_MOD_STRIP as CONFIG_MODULE_INSTALL_STRIP in
    include/config/auto.conf (patch 14) and then hashes ``%.ko.stripped``;
    outside kbuild, ``vmpatch ko strip --tree`` leaves its own record.
    """
    kbuild_value = None
    if (build_dir / "include" / "config" / "auto.conf").is_file():
        from vmpatch.records.striprecord import auto_conf_install_strip

        kbuild_value = auto_conf_install_strip(build_dir)  # None: no such line
    if kbuild_value is not None:
        stripped = bool(kbuild_value)
    elif (build_dir / STRIP_RECORD).is_file():
        from vmpatch.records.striprecord import read_record

        record = read_record(build_dir)
        stripped = record is not None and bool(record.install_mod_strip)
    else:
        stripped = False
    return STRIPPED_SUFFIX if stripped else PLAIN_SUFFIX


@dataclass(frozen=True)
class PlannedModule:
    """One module of the tree; the name is kept as text because a kernel has
    thousands and pathlib parsing was a third of planning time (scripts/bench-tree)."""

    entry: OrderEntry
    file: str
    build_dir: Path

    @property
    def module(self) -> Path:
        return Path(self.file)

    @property
    def proof(self) -> Path:
        """Where kbuild's generator puts this module's proof: the suffix becomes .merkle."""
        return self.build_dir / (self.entry.stem + PROOF_SUFFIX)


@dataclass(frozen=True)
class TreePlan:
    """Which files make the tree, in order, and where their proofs go."""

    build_dir: Path
    order_file: Path
    suffix: str
    modules: tuple[PlannedModule, ...]


def plan_tree(
    build_dir: str | os.PathLike[str],
    *,
    order_file: str | os.PathLike[str] | None = None,
    suffix: str | None = None,
) -> TreePlan:
    """Read modules.order and check that every module it names exists."""
    build_dir = Path(build_dir)
    order = Path(order_file) if order_file is not None else build_dir / "modules.order"
    if not build_dir.is_dir():
        raise InputError(build_dir, "not a directory")
    suffix = suffix or default_suffix(build_dir)
    if not suffix.startswith("."):
        raise UsageError(None, f"--suffix {suffix!r} must start with a dot, like .ko")
    planned = []
    base = os.fspath(build_dir)
    for entry in read_modules_order(order):
        module_name = f"{base}/{entry.stem}{suffix}"
        if not os.path.isfile(module_name):
            module = Path(module_name)
            raise InputError(
                order,
                f"line {entry.line_no}: module {module} does not exist"
                + (" (build the modules, or check --suffix)" if not module.exists() else ""),
            )
        planned.append(PlannedModule(entry, module_name, build_dir))
    return TreePlan(build_dir, order, suffix, tuple(planned))


def build_tree(
    plan: TreePlan,
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> MerkleTree:
    """Hash every planned module and build the tree."""
    leaves = hash_leaves([m.file for m in plan.modules], workers=workers, progress=progress)
    return MerkleTree.from_leaves(leaves)


def write_proofs(plan: TreePlan, tree: MerkleTree) -> None:
    """Write each module's ``.merkle`` file atomically (mode 0644 like kbuild's)."""
    for planned in plan.modules:
        atomic_write(planned.proof, tree.trailer(planned.entry.index), mode=0o644)


def _kernel_byteorder(kernel: Path) -> ByteOrder:
    """The byte order of a vmlinux or boot image; refuses a file that is not a kernel."""
    from vmpatch.boot.kernel import read_kernel

    return read_kernel(kernel).byteorder


def target_byteorder(
    *,
    kernel: str | os.PathLike[str] | None,
    build_dir: Path | None,
    byteorder: ByteOrder | None,
) -> ByteOrder:
    """The target's byte order: from --kernel, else BUILD_DIR/vmlinux, else --byteorder.

    Never the host's: a root encoded for the wrong byte order is a kernel
    that refuses every module.
    """
    candidates = [Path(kernel)] if kernel is not None else []
    if build_dir is not None and kernel is None:
        candidates.append(build_dir / "vmlinux")
    for candidate in candidates:
        if candidate.exists() or kernel is not None:
            found = _kernel_byteorder(candidate)
            if byteorder is not None and byteorder != found:
                raise UsageError(
                    candidate, f"is {found}-endian but --byteorder {byteorder} was given"
                )
            return found
    if byteorder is None:
        raise UsageError(
            None,
            "cannot tell the target's byte order: pass --kernel VMLINUX or --byteorder little|big",
        )
    return byteorder


def root_c_source(root: ModuleHashesRoot) -> str:
    """A C definition of the root, equivalent to kbuild's ``.tmp_module_hashes.c``.

    Compiled for the target, it yields the section bytes in the target's own
    byte order, which is why kbuild goes through C rather than a raw blob.
    """
    rows = []
    for start in range(0, len(root.digest), 8):
        chunk = root.digest[start : start + 8]
        rows.append("\t\t" + " ".join(f"0x{b:02x}," for b in chunk))
    return (
        "#include <linux/module_hashes.h>\n\n"
        "const struct\n"
        "module_hashes_root module_hashes_root __module_hashes_section = {\n"
        f"\t.levels = {root.levels},\n"
        "\t.hash = {{\n" + "\n".join(rows) + "\n\t}},\n"
        "};\n"
    )
