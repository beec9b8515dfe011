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
import stat
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import overload

from vmpatch.errors import InputError, SystemFailure, UsageError, VmpatchError
from vmpatch.frozen import frozen
from vmpatch.fs.atomic import atomic_write
from vmpatch.fs.batch import durable_batch
from vmpatch.merkle import MerkleTree, ModuleFile, default_workers, hash_leaves
from vmpatch.records.modorder import OrderEntry, read_modules_order
from vmpatch.records.root import ByteOrder, ModuleHashesRoot
from vmpatch.records.trailer import MARKER, TRAILER_END_SIZE, signature_info, type_label

__all__ = [
    "PROOF_SUFFIX",
    "Progress",
    "TreeModule",
    "TreePlan",
    "TreeResult",
    "build_tree",
    "default_suffix",
    "plan_tree",
    "root_c_source",
    "run_tree",
    "target_byteorder",
    "write_proofs",
]

PROOF_SUFFIX = ".merkle"
PLAIN_SUFFIX = ".ko"
STRIPPED_SUFFIX = ".ko.stripped"


def default_suffix(build_dir: Path) -> str:
    """``.ko.stripped`` when the tree is stripped at build time, else ``.ko``.

    kbuild records INSTALL_MOD_STRIP as CONFIG_MODULE_INSTALL_STRIP in
    include/config/auto.conf (patch 14) and then hashes ``%.ko.stripped``;
    outside kbuild, ``vmpatch ko strip --tree`` leaves its own record.
    """
    from vmpatch.records.striprecord import auto_conf_install_strip, read_record

    kbuild_value = auto_conf_install_strip(build_dir, missing_ok=True)  # None: no record
    if kbuild_value is not None:
        stripped = bool(kbuild_value)
    else:
        record = read_record(build_dir)  # None: no such file
        stripped = record is not None and bool(record.install_mod_strip)
    return STRIPPED_SUFFIX if stripped else PLAIN_SUFFIX


@frozen
class PlannedModule:
    """One module of the tree; the name is kept as text because a kernel has
    thousands and pathlib parsing was a third of planning time (measured with the
    former scripts/bench-tree, now scripts/bench)."""

    entry: OrderEntry
    file: str
    build_dir: Path
    #: The file's size when planning stat'ed it: hashing balances its workers
    #: by size without a second stat of every module.
    size: int | None = None

    @property
    def module(self) -> Path:
        return Path(self.file)

    @property
    def proof(self) -> Path:
        """Where kbuild's generator puts this module's proof: the suffix becomes .merkle."""
        return self.build_dir / (self.entry.stem + PROOF_SUFFIX)


@frozen
class TreePlan:
    """Which files make the tree, in order, and where their proofs go."""

    build_dir: Path
    order_file: Path
    suffix: str
    modules: tuple[PlannedModule, ...]
    #: The trailer refusal is left to :func:`build_tree` (``check_trailers_when_hashing``).
    trailers_unchecked: bool = False


def _module_tail(name: str) -> tuple[bytes, int] | None:
    """The last bytes of module file ``name`` (a trailer's fixed end) and its size.

    None if ``name`` is not a regular file.

    One open, fstat and pread per module: planning a 4000-module tree costs
    about what the existence check alone did (scripts/bench-tree, now part of scripts/bench).
    """
    try:  # O_NONBLOCK: a FIFO named by modules.order must not hang the planning
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise SystemFailure.from_oserror(name, err, "read module") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        start = max(0, info.st_size - TRAILER_END_SIZE)
        return os.pread(fd, info.st_size - start, start), info.st_size
    except OSError as err:
        raise SystemFailure.from_oserror(name, err, "read module") from None
    finally:
        os.close(fd)


def _refuse_post_processed(module: str, tail: bytes) -> InputError:
    """A build-tree module that ends with a trailer: something appended to it after kbuild.

    kbuild's generator hashes modules as the build made them, and
    ``modules_install`` appends each proof to a fresh copy (docs/format.md
    section 6); a trailer in the build tree means an earlier append (or a
    signing step) ran there, and hashing it would root a tree that fits no
    installed module.
    """
    info = signature_info(tail)
    kind = type_label(info.id_type) if info is not None else "malformed"
    what = {"merkle": " (a proof)", "pkcs7": " (a signature)"}.get(kind, "")
    return InputError(
        module,
        f"already ends with a {kind} trailer{what}: something post-processed this build "
        "tree, and its hash would fit no module kbuild installs; remove the trailers first "
        "with `vmpatch ko strip-proof --all`",
        hint="to re-root an installed tree instead, use `vmpatch reroot`",
    )


def plan_tree(
    build_dir: str | os.PathLike[str],
    *,
    order_file: str | os.PathLike[str] | None = None,
    suffix: str | None = None,
    refuse_trailers: bool = True,
    check_trailers_when_hashing: bool = False,
    check_files: bool = True,
) -> TreePlan:
    """Read modules.order and check that every module it names exists.

    With ``refuse_trailers`` (what hashing needs: ``tree``, ``patch
    --from-tree``, ``ko append-tree --dest``) a module that already ends with
    a trailer is refused before anything is hashed or written (only its
    last 40 bytes are read here). ``verify`` and in-place appends, which
    expect proofs on the modules, pass False. A caller that hashes the plan
    with :func:`build_tree` next (before any write) can pass
    ``check_trailers_when_hashing``: for plain modules the check then happens
    as each module is hashed, instead of an extra open, fstat and pread of
    every module here (0.05 s of planning Debian's 4230 in tmpfs, about a
    tenth of ``vmpatch tree``), and so does the existence check: hashing
    opens and fstats each module anyway, and :func:`build_tree` turns a
    failure into the refusal made here (:func:`first_missing`). The stat of
    every module was 0.03-0.04 s of a 0.7 s run in front of the hashing
    workers (Debian's 4230 in tmpfs, writing proofs: median of 6 alternated
    whole runs 0.715 s with it, 0.66 s without). ``check_files`` False (with
    ``refuse_trailers`` False) skips the check too, for a caller that opens
    every module next and asks :func:`first_missing` when one fails
    (``verify``).
    """
    build_dir = Path(build_dir)
    order = Path(order_file) if order_file is not None else build_dir / "modules.order"
    try:
        is_dir = build_dir.is_dir()
    except OSError as err:  # a directory on the way we may not search
        raise SystemFailure.from_oserror(build_dir, err, "read") from err
    if not is_dir:
        raise InputError(build_dir, "not a directory")
    suffix = suffix or default_suffix(build_dir)
    if not suffix.startswith("."):
        raise UsageError(None, f"--suffix {suffix!r} must start with a dot, like .ko")
    planned = []
    base = os.fspath(build_dir)
    deferred = refuse_trailers and check_trailers_when_hashing and _is_plain(suffix)
    for entry in read_modules_order(order):
        module_name = f"{base}/{entry.stem}{suffix}"
        if deferred or not (check_files or refuse_trailers):
            # the caller opens every module next: it checks them (first_missing)
            planned.append(PlannedModule(entry, module_name, build_dir))
            continue
        size: int | None = None
        if refuse_trailers:
            found = _module_tail(module_name)
            if found is not None:
                _refuse_trailer_tail(module_name, found[0])
                size = found[1]
        else:
            size = _regular_file_size(module_name)
        if size is None:
            raise _missing(order, entry, module_name)
        planned.append(PlannedModule(entry, module_name, build_dir, size))
    return TreePlan(build_dir, order, suffix, tuple(planned), trailers_unchecked=deferred)


def _missing(order: Path, entry: OrderEntry, module_name: str) -> InputError:
    module = Path(module_name)
    return InputError(
        order,
        f"line {entry.line_no}: module {module} does not exist"
        + (" (build the modules, or check --suffix)" if not module.exists() else ""),
    )


def first_missing(plan: TreePlan) -> InputError | None:
    """The refusal planning would have made: the first module, in order, that is no
    regular file. A plan that left the check to hashing asks this when hashing fails,
    so the error is the same whichever worker met which module first."""
    for module in plan.modules:
        if _regular_file_size(module.file) is None:
            return _missing(plan.order_file, module.entry, module.file)
    return None


def _regular_file_size(name: str) -> int | None:
    """The size of ``name`` if it is a regular file, else None.

    The system's refusals (a link loop, a directory we may not search) are errors.
    """
    try:
        info = os.stat(name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise SystemFailure.from_oserror(name, err, "read module") from None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _is_plain(suffix: str) -> bool:
    from vmpatch.ko.compression import Codec, codec_for_path

    return codec_for_path(suffix) is Codec.NONE


def _refuse_trailer_tail(module: ModuleFile, tail: bytes) -> None:
    """:data:`vmpatch.merkle.TailCheck` for a build tree: a trailer at the end is refused."""
    if tail.endswith(MARKER):
        raise _refuse_post_processed(os.fspath(module), tail[-TRAILER_END_SIZE:])


def build_tree(
    plan: TreePlan,
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_size: int | None = None,
) -> MerkleTree:
    """Hash every planned module and build the tree.

    With a compressed suffix (``--suffix .ko.xz``) each leaf is the hash of
    the bytes the kernel verifies: the module as the kernel's own decompressor
    yields it (:func:`vmpatch.ko.compression.read_module`), not the file. A
    file that decompressor refuses is an error, never hashed as if it loaded.
    """
    from vmpatch.ko.compression import Codec, codec_for_path
    from vmpatch.merkle import ModuleLoader

    loader: ModuleLoader | None = None
    if codec_for_path(plan.suffix) is not Codec.NONE:
        from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED, read_module

        limit = DEFAULT_MAX_DECOMPRESSED if max_size is None else max_size

        def loader(path: Path) -> bytes:
            return read_module(path, max_size=limit).data

    sizes = [m.size for m in plan.modules if m.size is not None]
    try:
        leaves = hash_leaves(
            [m.file for m in plan.modules],
            sizes=sizes if len(sizes) == len(plan.modules) else None,
            workers=workers,
            loader=loader,
            progress=progress,
            tail_check=_refuse_trailer_tail if plan.trailers_unchecked else None,
        )
    except VmpatchError:  # planning checked existence before any trailer: so does this
        missing = first_missing(plan) if plan.trailers_unchecked else None
        if missing is not None:
            raise missing from None
        raise
    return MerkleTree.from_leaves(leaves)


class _ProofFiles(Sequence[tuple[str, bytes]]):
    """Each module's (proof file name, ``.merkle`` content), computed when indexed.

    Lazy so that each worker of :func:`vmpatch.fs.batch.durable_batch` builds
    the proofs of its own share after the fork: building all 4230 of
    Debian's names (through pathlib) and proofs first took 0.06 s in one
    process, in front of the parallel writes.
    """

    def __init__(self, plan: TreePlan, tree: MerkleTree) -> None:
        self._base = os.fspath(plan.build_dir)
        self._modules = plan.modules
        self._tree = tree

    def __len__(self) -> int:
        return len(self._modules)

    @overload
    def __getitem__(self, index: int) -> tuple[str, bytes]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, bytes]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, bytes] | Sequence[tuple[str, bytes]]:
        if isinstance(index, slice):
            entries = [module.entry for module in self._modules[index]]
            trailers = self._tree.trailers(entry.index for entry in entries)
            return [
                (self._file(entry), trailer)
                for entry, trailer in zip(entries, trailers, strict=True)
            ]
        entry = self._modules[index].entry
        return self._file(entry), self._tree.trailer(entry.index)

    def _file(self, entry: OrderEntry) -> str:
        return f"{self._base}/{entry.stem}{PROOF_SUFFIX}"


def write_proofs(plan: TreePlan, tree: MerkleTree, *, workers: int | None = None) -> None:
    """Write every module's ``.merkle`` file atomically (mode 0644 like kbuild's).

    All proofs go through one :func:`vmpatch.fs.batch.durable_batch` over
    ``workers`` processes (default: every CPU): one temporary, fsync and
    rename per proof, plus a directory fsync each, cost 0.6 s of a 1.13 s run
    over Debian's 4230 modules in tmpfs and 3.8-40 s on ext4 (issue 12, about
    8,460 flushes); the batch makes the data durable together and syncs each
    directory once.
    """
    durable_batch(_ProofFiles(plan, tree), mode=0o644, workers=workers or default_workers())


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


#: How a workflow reports progress: called with a description and a total, it
#: gives a context whose value is a ``done(count)`` callback (or None for no bar).
Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None] | None]]


def no_progress(description: str, total: int) -> AbstractContextManager[None]:
    return nullcontext()


@frozen
class TreeModule:
    """One leaf: the module file, its position, and the proof written for it (or None)."""

    path: Path
    position: int
    proof: Path | None


class _TreeModules(Sequence[TreeModule]):
    """:attr:`TreeResult.modules`, each made when first asked for.

    Building all 4230 of Debian's (two paths each) took 0.06 s, a tenth of
    ``vmpatch tree`` in tmpfs, for a summary that shows only their count
    (scripts/bench, cProfile).
    """

    def __init__(self, plan: TreePlan, proofs: bool) -> None:
        self._modules = plan.modules
        self._proofs = proofs

    def __len__(self) -> int:
        return len(self._modules)

    @overload
    def __getitem__(self, index: int) -> TreeModule: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[TreeModule, ...]: ...
    def __getitem__(self, index: int | slice) -> TreeModule | tuple[TreeModule, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        m = self._modules[index]
        return TreeModule(m.module, m.entry.index, m.proof if self._proofs else None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} modules)"


@frozen
class TreeResult:
    """What ``vmpatch tree`` built and wrote."""

    json_skip = ("root_record",)
    json_extra = (("levels", "levels"), ("root", "root_hex"), ("module_count", "module_count"))

    build_dir: Path
    order_file: Path
    suffix: str
    root_record: ModuleHashesRoot
    modules: Sequence[TreeModule]
    proofs_written: bool
    root_out: Path | None = None
    c_out: Path | None = None
    byteorder: ByteOrder | None = None  # of --root-out, when written

    @property
    def levels(self) -> int:
        return self.root_record.levels

    @property
    def root_hex(self) -> str:
        return self.root_record.digest.hex()

    @property
    def module_count(self) -> int:
        return len(self.modules)


def tree_result(
    plan: TreePlan,
    tree: MerkleTree,
    *,
    proofs: bool,
    root_out: Path | None = None,
    c_out: Path | None = None,
    byteorder: ByteOrder | None = None,
) -> TreeResult:
    """The result of hashing ``plan`` into ``tree`` (proofs written or not)."""
    return TreeResult(
        build_dir=plan.build_dir,
        order_file=plan.order_file,
        suffix=plan.suffix,
        root_record=tree.root,
        modules=_TreeModules(plan, proofs),
        proofs_written=proofs,
        root_out=root_out,
        c_out=c_out,
        byteorder=byteorder,
    )


def run_tree(
    build_dir: str | os.PathLike[str],
    *,
    order_file: str | os.PathLike[str] | None = None,
    suffix: str | None = None,
    proofs: bool = True,
    root_out: str | os.PathLike[str] | None = None,
    c_out: str | os.PathLike[str] | None = None,
    kernel: str | os.PathLike[str] | None = None,
    byteorder: ByteOrder | None = None,
    workers: int | None = None,
    progress: Progress = no_progress,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> TreeResult:
    """``vmpatch tree``: plan, hash, then write proofs, the root file and the C file.

    Everything that can be refused is refused before the first write: the
    output targets, modules.order and every module, and the byte order of
    ``root_out`` (asked of ``kernel``, ``BUILD_DIR/vmlinux`` or ``byteorder``,
    never the host's). The build directory is locked
    (:func:`vmpatch.fs.lock.locked`) for the whole run, so two runs on one
    tree never interleave their proofs.
    """
    from vmpatch.fs.lock import locked

    with locked([build_dir], wait=wait, waiting=waiting, missing_ok=True):
        return _run_tree(
            build_dir,
            order_file=order_file,
            suffix=suffix,
            proofs=proofs,
            root_out=root_out,
            c_out=c_out,
            kernel=kernel,
            byteorder=byteorder,
            workers=workers,
            progress=progress,
        )


def _run_tree(
    build_dir: str | os.PathLike[str],
    *,
    order_file: str | os.PathLike[str] | None,
    suffix: str | None,
    proofs: bool,
    root_out: str | os.PathLike[str] | None,
    c_out: str | os.PathLike[str] | None,
    kernel: str | os.PathLike[str] | None,
    byteorder: ByteOrder | None,
    workers: int | None,
    progress: Progress,
) -> TreeResult:
    from vmpatch.fs.atomic import check_target

    targets = [Path(t) for t in (root_out, c_out) if t is not None]
    for target in targets:
        check_target(target)
    plan = plan_tree(
        build_dir, order_file=order_file, suffix=suffix, check_trailers_when_hashing=True
    )
    order: ByteOrder | None = None
    if root_out is not None:
        order = target_byteorder(kernel=kernel, build_dir=plan.build_dir, byteorder=byteorder)
    with progress("hashing modules", len(plan.modules)) as done:
        merkle = build_tree(plan, workers=workers, progress=done)
    if proofs:
        write_proofs(plan, merkle, workers=workers)
    if root_out is not None and order is not None:
        atomic_write(root_out, merkle.root.encode(order))
    if c_out is not None:
        atomic_write(c_out, root_c_source(merkle.root).encode())
    return tree_result(
        plan,
        merkle,
        proofs=proofs,
        root_out=Path(root_out) if root_out is not None else None,
        c_out=Path(c_out) if c_out is not None else None,
        byteorder=order,
    )
