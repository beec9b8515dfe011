# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch reroot``: re-root a rebuilt or post-processed kernel in one resumable step.

Distros change module bytes after the build (strip, sign, compress, add
out-of-tree modules), and every change of the kernel-visible bytes changes
what must be hashed. The fix is to re-root once, after the last such step,
over the final bytes: that is this workflow, for two kinds of tree.

* **Install tree** (``lib/modules/KVER`` with the installed ``modules.order``):
  every module's trailers are removed (a tree whose modules carry exactly one
  trailer, their proof, depends on nothing else; ``keep_signatures`` keeps a
  PKCS#7 signature under the proof instead, hashed with it), the
  kernel-visible bytes are hashed, each module gets its proof and is
  recompressed with the codec it had, the root goes into every kernel image,
  and every module is read back from disk and judged as the kernel would.
* **kbuild tree**: ``<module>.merkle`` files and the patched vmlinux, as
  ``vmpatch tree`` + ``vmpatch patch`` do; ``.ko`` files are never touched.

Crash design (ARCHITECTURE.md, "Re-root and recovery"): stage aside and
swap. Every rewritten file is first written in full to a marked temp file
beside it and made durable; only when all are staged are they renamed over
their targets. No journal is needed, because the end state is a pure
function of the trailer-free bytes, which are the same in a module's old
and new version: a re-run after a kill at any moment re-derives the same
root and proofs, leaves finished files alone, rewrites the rest, and removes
the temp files the killed run left. The tree (and each image) is locked with
``flock`` on a descriptor, which creates no file, so a second run on a
re-rooted tree writes nothing at all.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from threading import Lock

from vmpatch.errors import InputError, MismatchError, SystemFailure, UsageError
from vmpatch.fs.atomic import (
    StagedWrite,
    atomic_write,
    check_target,
    fsync_dir,
    open_input,
    remove_stale_temporaries,
)
from vmpatch.fs.lock import locked
from vmpatch.ko.compression import (
    DEFAULT_MAX_DECOMPRESSED,
    MODULE_SUFFIXES,
    Codec,
    compress,
    read_module,
)
from vmpatch.merkle import MerkleTree, default_workers, leaf_digest
from vmpatch.records.leaves import (
    MANIFEST_NAME,
    LeafEntry,
    LeafManifest,
    read_manifest,
    tree_state,
)
from vmpatch.records.modorder import Layout, layout_of
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.records.trailer import SignatureType, find_trailer
from vmpatch.verdict import VerdictKind
from vmpatch.workflow.installed import installed_modules

__all__ = [
    "IMA_XATTRS",
    "Action",
    "KernelOutcome",
    "ModuleOutcome",
    "RerootOptions",
    "RerootReport",
    "boot_images",
    "layout_of",
    "reroot",
    "tree_state",
]

#: IMA/EVM signatures cover the old bytes: a rewritten file must not keep them.
IMA_XATTRS = frozenset({"security.ima", "security.evm"})


class Action(StrEnum):
    """What re-rooting did to one module."""

    PROVED = "proved"  # it had no trailer; now it carries its proof
    UNCHANGED = "unchanged"  # it already carried exactly this proof: not touched
    REPLACED_SIGNATURE = "replaced a signature"  # a PKCS#7 signature gave way to the proof
    REPLACED_PROOF = "replaced a proof"  # a stale proof gave way to the new one
    NOT_IN_TREE = "not in tree"  # a module file nobody listed: left alone, no position


@dataclass(frozen=True)
class RerootOptions:
    """Everything ``reroot`` can be asked; the CLI fills it from its options."""

    kernels: tuple[Path, ...] = ()
    layout: Layout | None = None
    extra: tuple[Path, ...] = ()
    output: Path | None = None
    dry_run: bool = False
    keep_signatures: bool = False
    replace_links: bool = False
    compressor: str = "inprocess"  # or "kbuild": kbuild's own commands
    wait: bool = True
    workers: int | None = None
    max_size: int = DEFAULT_MAX_DECOMPRESSED
    suffix: str | None = None  # kbuild trees: .ko or .ko.stripped


@dataclass(frozen=True)
class ModuleOutcome:
    """One module of the report."""

    position: int | None
    path: str  # DIR-relative
    codec: str
    action: Action
    extra: bool = False
    removed: tuple[str, ...] = ()  # labels of the trailers taken off, last first
    verdict: VerdictKind | None = None  # after writing: the worst over every kernel
    reason: str | None = None


@dataclass(frozen=True)
class KernelOutcome:
    """One image the root went into (``written`` is its ``--output`` copy, or itself)."""

    path: Path
    written: Path
    changed: bool
    #: Whether the image already held the new root (state of the tree; not in --json).
    carries_root: bool = False

    json_skip = ("carries_root",)


@dataclass
class RerootReport:
    """What one run found, did (or, dry, would do), and how the result verified."""

    #: Read by vmpatch.cli.jsonout (docs/json.md, "reroot").
    json_rename = (("directory", "path"),)
    json_extra = (
        ("levels", "levels"),
        ("root", "root_hex"),
        ("state", "state"),
        ("module_count", "module_count"),
    )

    directory: Path
    layout: Layout
    root: ModuleHashesRoot
    dry_run: bool
    modules: list[ModuleOutcome] = field(default_factory=list)
    kernels: list[KernelOutcome] = field(default_factory=list)
    files_rewritten: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    stale_temporaries_removed: int = 0
    dropped_xattrs: list[str] = field(default_factory=list)
    compressor: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: The leaf manifest had to be (re)written (state of the tree; not in --json).
    manifest_changed: bool = False
    #: What the tree held before this run: old root, new root or part-way (see found).
    found: str = ""

    json_skip = ("root", "manifest_changed", "found")

    @property
    def state(self) -> str:
        """``already re-rooted``, ``re-rooted``; in a dry run ``would re-root`` or ``part-way``.

        Part-way is what a run stopped between its first and its last write
        leaves: some modules (or the kernel, or every module but not the
        leaf manifest) already carry the new root, the rest the old.
        """
        changed = (
            self.files_rewritten or any(k.changed for k in self.kernels) or self.manifest_changed
        )
        if not changed:
            return "already re-rooted"
        if self.dry_run:
            return "part-way" if self.found == "part-way" else "would re-root"
        return "re-rooted"

    @property
    def rejected(self) -> int:
        return sum(1 for m in self.modules if m.verdict is VerdictKind.REJECT)

    @property
    def levels(self) -> int:
        return self.root.levels

    @property
    def root_hex(self) -> str:
        return self.root.digest.hex()

    @property
    def module_count(self) -> int:
        """Modules with a position (those of modules.order, then --extra)."""
        return sum(1 for m in self.modules if m.position is not None)


# ---------------------------------------------------------------------------
# Planning


@dataclass
class _Planned:
    """What the planning pass learnt of one module; no module bytes are kept."""

    position: int
    relpath: str
    path: Path
    codec: Codec
    extra: bool
    removed: tuple[str, ...]
    base_sha256: bytes
    leaf: bytes
    base_size: int
    #: What follows the base bytes now: the module is unchanged when this is its new proof.
    tail: bytes
    #: The worst verdict on the bytes as they are, against the kernels as they are (None:
    #: not judged). It stands after the run for a module and kernels that were not rewritten.
    verdict: tuple[VerdictKind, str | None] | None


def _strip_trailers(
    path: Path, data: bytes, keep_signatures: bool
) -> tuple[bytes, tuple[str, ...]]:
    """The bytes to hash: trailers removed, last first, as the policy says."""
    removed: list[str] = []
    while (trailer := find_trailer(data)) is not None:
        if trailer.module_size <= 0 or not trailer.well_formed:
            raise InputError(
                path,
                f"ends with a malformed trailer (id_type {trailer.id_type}, sig_len "
                f"{trailer.sig_len}): cannot tell where the module ends",
            )
        if keep_signatures and trailer.id_type != SignatureType.MERKLE:
            break
        removed.append(trailer.label)
        data = data[: trailer.module_size]
    return data, tuple(removed)


def _inside(path: Path, top: Path) -> bool:
    return path == top or top in path.parents


def _links_out(directory: Path, path: Path) -> bool:
    """Whether ``path``'s real file lies outside the tree's real path."""
    return not _inside(Path(os.path.realpath(path)), Path(os.path.realpath(directory)))


def _check_link(directory: Path, path: Path, replace_links: bool) -> None:
    """Refuse a file whose real path lies outside the tree: it would be written there."""
    real = Path(os.path.realpath(path))
    top = Path(os.path.realpath(directory))
    if not _inside(real, top) and not replace_links:
        raise InputError(
            path,
            f"is a link to {real}, outside {top}: rewriting it would write outside the tree",
            hint="pass --replace-links to make it a regular file inside the tree",
        )


def _extra_relpaths(directory: Path, extra: Sequence[Path]) -> list[str]:
    """DIR-relative paths of the ``--extra`` modules, directories expanded, bytewise order."""
    top = Path(os.path.abspath(directory))
    found: set[str] = set()
    for item in extra:
        path = Path(os.path.abspath(item if item.is_absolute() else Path.cwd() / item))
        if not _inside(path, top):
            candidate = top / item
            if candidate.exists():
                path = Path(os.path.abspath(candidate))
            else:
                raise UsageError(item, f"--extra must name a module inside {directory}")
        if path.is_dir():
            for root, _dirs, files in os.walk(path):
                for name in files:
                    if name.endswith(MODULE_SUFFIXES):
                        found.add(os.path.relpath(Path(root) / name, top))
        elif path.is_file():
            if not path.name.endswith(MODULE_SUFFIXES):
                raise UsageError(
                    item, "--extra names a file that is not a module (.ko[.gz|.xz|.zst])"
                )
            found.add(os.path.relpath(path, top))
        else:
            raise InputError(item, "no such module (--extra)")
    return sorted(found, key=os.fsencode)


def _unlisted_modules(directory: Path, listed: set[str]) -> list[str]:
    """Module files in the tree that no position names (out-of-tree, DKMS, leftovers)."""
    out = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(MODULE_SUFFIXES):
                rel = os.path.relpath(Path(root) / name, directory)
                if rel not in listed:
                    out.append(rel)
    return sorted(out, key=os.fsencode)


def _plan_one(
    directory: Path,
    position: int,
    relpath: str,
    extra: bool,
    options: RerootOptions,
    models: Sequence[object] | None,
) -> _Planned:
    path = directory / relpath
    content = read_module(path, max_size=options.max_size)
    base, removed = _strip_trailers(path, content.data, options.keep_signatures)
    return _Planned(
        position=position,
        relpath=relpath,
        path=path,
        codec=content.codec,
        extra=extra,
        removed=removed,
        base_sha256=hashlib.sha256(base).digest(),
        leaf=leaf_digest(position, base),
        base_size=len(base),
        tail=content.data[len(base) :],
        verdict=None if models is None else _worst(content.data, models),
    )


def _in_parallel(
    work: Callable[[int], object],
    count: int,
    workers: int | None,
    progress: Callable[[str, int, int], None] | None = None,
    what: str = "",
    crashed: Callable[[int, str], BaseException] | None = None,
) -> list[object]:
    """``work(i)`` for every i, in forked workers if ``crashed`` is given, else in threads.

    Threads suit work that releases the GIL and shares state (staging calls
    liblzma and appends to one list). A pure read (``crashed`` says what a
    worker's death on item i means) runs in forked workers when this process
    may fork (:mod:`vmpatch.fs.forkmap`): the per-module Python of reading,
    trailer search and verdict then does not convoy on the GIL. Measured on
    Debian's 4230 re-rooted ``.ko.xz`` in tmpfs (2 CPUs, the no-op re-run's
    planning pass, 6 alternated runs): median 7.4 s (5.6-7.9) in threads,
    6.5 s (6.0-6.6) forked, the same CPU time (liblzma's, mostly).

    On any failure or interruption the work not yet started is cancelled, so
    a refusal or SIGINT does not first finish the whole tree. ``progress``
    hears ``(what, done, count)`` as results come in, in this thread.
    """
    from vmpatch.fs import forkmap

    width = max(1, min(workers or default_workers(), count or 1))
    if crashed is not None and width > 1 and count >= _FORK_THRESHOLD and forkmap.can_fork():

        def counted(done: int) -> None:
            if progress is not None:
                progress(what, done, count)

        results = forkmap.fork_map(work, count, workers=width, crashed=crashed, progress=counted)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results
    from concurrent.futures import ThreadPoolExecutor  # 7 ms (logging): only when used

    pool = ThreadPoolExecutor(max_workers=width)
    try:
        results = []
        for result in pool.map(work, range(count)):
            results.append(result)
            if progress is not None:
                progress(what, len(results), count)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


#: Below this many modules, forking workers costs more than it saves.
_FORK_THRESHOLD = 64


# ---------------------------------------------------------------------------
# Writing


def _mtime_ns() -> int | None:
    """SOURCE_DATE_EPOCH when set (reproducible-builds.org), else None: the time of writing."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise UsageError(None, f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
    return int(value) * 1_000_000_000


def _ima_names(path: Path) -> list[str]:
    try:
        names = os.listxattr(path)
    except OSError:
        return []
    return sorted(n for n in names if n in IMA_XATTRS)


def _compressor_versions(compressor: str) -> dict[str, str]:
    """What makes the recompressed bytes: the libraries in-process, or kbuild's commands."""
    if compressor == "kbuild":
        from vmpatch.ko.kbuildcompress import commands

        return {codec: " ".join(argv) for codec, argv in commands().items()}
    import lzma
    import zlib

    versions = {"zlib": zlib.ZLIB_RUNTIME_VERSION}
    del lzma  # loaded so that /proc/self/maps names the library in use
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                name = line.rsplit("/", 1)[-1].strip()
                if name.startswith("liblzma.so."):
                    versions["liblzma"] = name[len("liblzma.so.") :]
                    break
    except OSError:
        pass
    try:
        import zstandard

        versions["libzstd"] = zstandard.ZSTD_VERSION and ".".join(map(str, zstandard.ZSTD_VERSION))
    except ImportError:
        pass
    return versions


def _require_kbuild_programs(codecs: set[Codec]) -> None:
    """Refuse a missing kbuild compressor in the planning pass, not half-way through staging."""
    import shutil

    from vmpatch.errors import ToolError
    from vmpatch.ko.kbuildcompress import commands

    argvs = commands()
    for codec in sorted(codecs - {Codec.NONE}, key=lambda c: c.label):
        program = argvs[codec.label][0]
        if shutil.which(program) is None:
            variable = {Codec.GZIP: "KGZIP", Codec.XZ: "XZ", Codec.ZSTD: "ZSTD"}[codec]
            raise ToolError(program, "not found", hint=f"install it or set ${variable}")


def _recompress(data: bytes, codec: Codec, compressor: str) -> bytes:
    if compressor == "kbuild" and codec is not Codec.NONE:
        from vmpatch.ko.kbuildcompress import compress_with_kbuild

        return compress_with_kbuild(data, codec)
    return compress(data, codec)


# ---------------------------------------------------------------------------
# The workflow


def _kernel_model(path: Path) -> object:
    from vmpatch.boot.kernel import kernel_model

    return kernel_model(path)


def _worst(data: bytes, models: Sequence[object]) -> tuple[VerdictKind, str | None]:
    """The verdict on ``data`` against every kernel; a rejection by any one wins."""
    from vmpatch.verdict import kernel_verdict

    worst: tuple[VerdictKind, str | None] = (VerdictKind.ACCEPT, None)
    for model in models:
        verdict = kernel_verdict(data, model)  # type: ignore[arg-type]
        if verdict.verdict is not VerdictKind.ACCEPT:
            worst = (verdict.verdict, verdict.reason)
            if verdict.verdict is VerdictKind.REJECT:
                break
    return worst


def _judge(path: Path, models: Sequence[object], max_size: int) -> tuple[VerdictKind, str | None]:
    """The verdict of the module as it is on disk now (read back, decompressed)."""
    return _worst(read_module(path, max_size=max_size).data, models)


def _default_kernels(directory: Path, layout: Layout, given: Sequence[Path]) -> list[Path]:
    if given:
        return list(given)
    if layout is Layout.KBUILD:
        return [directory / "vmlinux"]
    raise UsageError(
        directory,
        "an install tree holds no vmlinux: pass --kernel VMLINUX (the build's vmlinux, or the "
        "-dbg package's; repeat it for vmlinux.unstripped)",
    )


def _check_kernels(kernels: Sequence[Path]) -> None:
    """Refuse what is not a patchable vmlinux before anything is copied or hashed.

    A module or a program is named as what it is, a boot image as one to
    rebuild; :func:`vmpatch.workflow.patch.plan_patches` checks the rest
    once the root is known.
    """
    from vmpatch.boot.kernel import is_elf_file
    from vmpatch.elf.identify import require_kernel
    from vmpatch.elf.reader import open_elf
    from vmpatch.elf.vmlinux import locate

    for kernel in kernels:
        if not kernel.is_file():
            raise InputError(kernel, "no such kernel image (--kernel)")
        if is_elf_file(kernel):
            with open_elf(kernel) as reader:
                require_kernel(reader)
        else:
            from vmpatch.boot import format_of

            kind = format_of(kernel)
            if kind is not None:
                raise InputError(
                    kernel,
                    f"is a boot image ({kind}), which vmpatch only reads: pass the vmlinux "
                    "it was built from (and rebuild the image from it afterwards)",
                )
        locate(kernel).check_patchable()


def _remove_copy(target: Path, keep_dir: bool) -> None:
    """Remove what ``_copy_tree`` made at ``target`` (the directory too, unless it existed)."""
    import shutil

    if not target.is_dir():
        return
    if not keep_dir:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _copy_tree(source: Path, target: Path) -> None:
    """``--output``: the tree copied (links made regular files), with copy offload."""
    from vmpatch.fs.atomic import atomic_copy

    if not target.is_dir():  # new (an empty one, reroot() checked, is written into)
        check_target(target)
    for root, dirs, files in os.walk(source, followlinks=False):
        rel = Path(root).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in dirs:
            if (Path(root) / name).is_symlink():
                raise InputError(Path(root) / name, "--output cannot copy a linked directory")
        for name in files:
            if name.startswith(".") and name.endswith(".vmpatch-tmp"):
                continue
            atomic_copy(Path(root) / name, target / rel / name)


def _found(done: int, todo: int, kernels: Sequence[KernelOutcome], manifest_changed: bool) -> str:
    """Which state the tree is in: ``old root``, ``new root`` or ``part-way``.

    A module that already carries exactly its new proof, or an image that
    already carries the new root, is the trace of a run that wrote before it
    stopped; a tree with both such traces and work left is part-way.
    """
    kernels_done = [k.carries_root for k in kernels]
    if not todo and all(kernels_done) and not manifest_changed:
        return "new root"
    if not done and not any(kernels_done):
        return "old root"
    return "part-way"


#: Where kbuild leaves the boot images it makes from vmlinux (arch/*/boot/).
KBUILD_BOOT_IMAGES = ("bzImage", "Image", "Image.gz", "zImage", "vmlinuz.efi")


def boot_images(directory: Path, layout: Layout) -> list[Path]:
    """The boot images that belong with the tree at ``directory`` and exist.

    kbuild tree: ``arch/*/boot/{bzImage,Image,Image.gz,zImage,vmlinuz.efi}``.
    Install tree ``[usr/]lib/modules/KVER``: the package root's
    ``boot/vmlinuz-KVER`` (three levels above ``lib/modules/KVER``, four above
    ``usr/lib/modules/KVER``), and ``vmlinuz`` in the tree itself, where Arch
    and Fedora ship it.
    """
    top = Path(os.path.abspath(directory))
    found: list[Path] = []
    if layout is Layout.KBUILD:
        for arch in sorted((top / "arch").glob("*/boot")):
            found += [arch / name for name in KBUILD_BOOT_IMAGES if (arch / name).is_file()]
        return found
    kver = top.name
    if top.parent.name == "modules" and top.parent.parent.name == "lib":
        package = top.parents[2]
        if package.name == "usr":
            package = package.parent
        candidate = package / "boot" / f"vmlinuz-{kver}"
        if candidate.is_file():
            found.append(candidate)
    if (top / "vmlinuz").is_file():
        found.append(top / "vmlinuz")
    return found


def _boot_image_warnings(images: Sequence[Path], root: ModuleHashesRoot) -> list[str]:
    """A warning for each boot image whose root (read from it, not its mtime) is not ``root``.

    A boot image is made from vmlinux before re-rooting and is never written
    by vmpatch (it may be compressed and signed): it must be rebuilt.
    """
    from vmpatch.boot.kernel import read_kernel
    from vmpatch.errors import VmpatchError

    then = (
        "rebuild it from the patched vmlinux (e.g. `make bzImage`), then any initramfs "
        "that carries modules, then its Secure Boot signature"
    )
    warnings = []
    for image in images:
        try:
            facts = read_kernel(image)
        except VmpatchError as err:
            warnings.append(
                f"{image}: cannot read the root this boot image carries ({err.reason}); "
                f"if it was built from the old vmlinux, {then}"
            )
            continue
        if facts.hashes == "unknown":
            warnings.append(
                f"{image}: cannot tell which root this boot image carries "
                f"({facts.evidence}); if it was built from the old vmlinux, {then}"
            )
        elif facts.root_record is None:
            warnings.append(
                f"{image}: this boot image carries no root ({facts.evidence}), "
                f"the tree's is {root.digest.hex()}: {then}"
            )
        elif facts.root_record != root:
            warnings.append(
                f"{image}: this boot image carries the old root "
                f"{facts.root_record.digest.hex()} (levels {facts.root_record.levels}), the tree's "
                f"is {root.digest.hex()} (levels {root.levels}): {then}"
            )
    return warnings


def reroot(
    directory: str | os.PathLike[str],
    options: RerootOptions = RerootOptions(),
    *,
    progress: Callable[[str, int, int], None] | None = None,
    waiting: Callable[[str], None] | None = None,
) -> RerootReport:
    """Re-root the tree at ``directory`` (see the module docstring); returns the report.

    Everything is read and checked before the first write: a bad module,
    an unpatchable kernel or an unwritable file changes nothing. A kbuild
    tree or an install tree is told from ``modules.order`` unless
    ``options.layout`` says which.
    """
    started = time.monotonic()
    source = Path(directory)
    if not source.is_dir():
        raise InputError(source, "not a directory")
    layout = layout_of(source, options.layout)
    kernels = _default_kernels(source, layout, options.kernels)
    _check_kernels(kernels)
    work = source
    made: Path | None = None  # the --output copy, removed again if the run fails
    if options.output is not None and not options.dry_run:
        made = options.output
        existed = made.exists()
        if existed and (not made.is_dir() or any(made.iterdir())):
            raise UsageError(made, "--output must be a new or empty directory")
        try:
            _copy_tree(source, made)
        except BaseException:
            _remove_copy(made, keep_dir=existed)
            raise
        work = made
    try:
        with locked([work, *kernels], wait=options.wait, waiting=waiting):
            stale = 0 if options.dry_run else len(remove_stale_temporaries(work))
            if layout is Layout.KBUILD:
                report = _reroot_kbuild(work, kernels, options, progress)
            else:
                report = _reroot_installed(work, kernels, options, progress)
    except BaseException:
        # A refused or interrupted run into --output leaves no half copy behind:
        # the copy is this run's own, and DIR was never written.
        if made is not None:
            _remove_copy(made, keep_dir=existed)
        raise
    report.stale_temporaries_removed = stale
    report.warnings += _boot_image_warnings(boot_images(source, layout), report.root)
    report.seconds = time.monotonic() - started
    if report.rejected:
        raise MismatchError(
            work,
            f"{report.rejected} of {len(report.modules)} modules would be rejected by the "
            "kernel after re-rooting",
        )
    return report


def _kernel_outputs(
    kernels: Sequence[Path], source: Path, output: Path | None
) -> list[Path] | None:
    """With ``--output``, where each patched image goes: its place in the copy, or beside it."""
    if output is None:
        return None
    outputs: list[Path] = []
    for kernel in kernels:
        absolute = Path(os.path.abspath(kernel))
        top = Path(os.path.abspath(source))
        target = (
            output / absolute.relative_to(top) if _inside(absolute, top) else output / kernel.name
        )
        if target in outputs:
            raise UsageError(kernel, f"two --kernel images would both be written to {target}")
        outputs.append(target)
    return outputs


def _plan_kernels(
    kernels: Sequence[Path], root: ModuleHashesRoot, source: Path, options: RerootOptions
) -> tuple[list[object], list[KernelOutcome]]:
    from vmpatch.workflow.patch import RootSource, plan_patches

    outputs = _kernel_outputs(kernels, source, options.output)
    plans = plan_patches(
        kernels, RootSource(root=root, origin="the re-rooted tree"), outputs=outputs
    )
    outcomes = []
    for plan in plans:
        changed = plan.location.content != plan.payload
        written = plan.output if plan.output is not None else plan.location.path
        outcomes.append(
            KernelOutcome(
                plan.location.path,
                written,
                changed or plan.output is not None,
                carries_root=not changed,
            )
        )
    return list(plans), outcomes


def _reroot_installed(
    directory: Path,
    kernels: Sequence[Path],
    options: RerootOptions,
    progress: Callable[[str, int, int], None] | None,
) -> RerootReport:
    entries = installed_modules(directory)
    names = [(os.path.relpath(path, directory), False) for _entry, path in entries]
    extras = _extra_relpaths(directory, options.extra)
    manifest_path = directory / MANIFEST_NAME
    previous = read_manifest(manifest_path) if manifest_path.exists() else None
    if not options.extra and previous is not None:
        extras = [e.path for e in previous.entries[len(entries) :]]  # the positions they had
    listed = {relpath for relpath, _ in names}
    for rel in extras:
        if rel in listed:
            raise UsageError(directory / rel, "--extra names a module modules.order already lists")
        listed.add(rel)
        names.append((rel, True))
    for relpath, _ in names:
        _check_link(directory, directory / relpath, options.replace_links)

    models_before = None if options.dry_run else _models_before(kernels)

    def plan(i: int) -> _Planned:
        relpath, extra = names[i]
        return _plan_one(directory, i, relpath, extra, options, models_before)

    def plan_crashed(i: int, why: str) -> BaseException:
        return SystemFailure(directory / names[i][0], f"cannot read module: {why}")

    planned: list[_Planned] = _in_parallel(  # type: ignore[assignment]
        plan, len(names), options.workers, progress, "hashing modules", plan_crashed
    )
    tree = MerkleTree.from_leaves([p.leaf for p in planned])
    root = tree.root
    kernel_plans, kernel_outcomes = _plan_kernels(kernels, root, directory, options)
    report = RerootReport(
        directory=directory,
        layout=Layout.INSTALLED,
        root=root,
        dry_run=options.dry_run,
        kernels=kernel_outcomes,
        bytes_hashed=sum(p.base_size for p in planned),
        compressor=_compressor_versions(options.compressor),
    )
    rewrite: list[tuple[_Planned, bytes]] = []
    actions: list[Action] = []
    for p in planned:
        trailer = tree.trailer(p.position)
        if p.tail == trailer:
            actions.append(Action.UNCHANGED)
            continue
        if "pkcs7" in p.removed:
            actions.append(Action.REPLACED_SIGNATURE)
        elif p.removed:
            actions.append(Action.REPLACED_PROOF)
        else:
            actions.append(Action.PROVED)
        rewrite.append((p, trailer))
    manifest = LeafManifest(
        root,
        tuple(LeafEntry(p.position, p.relpath, p.base_sha256, p.leaf) for p in planned),
    ).encode()
    manifest_changed = previous is None or previous.encode() != manifest
    if not options.dry_run:
        for p, _ in rewrite:
            if not os.access(p.path, os.W_OK) or not os.access(p.path.parent, os.W_OK | os.X_OK):
                raise SystemFailure(p.path, "cannot rewrite: file or directory not writable")
        if manifest_changed:
            check_target(manifest_path)
        if options.compressor == "kbuild":
            _require_kbuild_programs({p.codec for p, _ in rewrite})

        def write_manifest() -> None:
            if manifest_changed:
                atomic_write(manifest_path, manifest)

        _apply_installed(
            directory, rewrite, kernel_plans, options, report, progress, write_manifest
        )
    report.files_rewritten = len(rewrite)
    report.manifest_changed = manifest_changed
    report.found = _found(
        actions.count(Action.UNCHANGED), len(rewrite), kernel_outcomes, manifest_changed
    )
    unlisted = _unlisted_modules(directory, {p.relpath for p in planned})
    verdicts: list[tuple[VerdictKind, str | None]] | None = None
    if not options.dry_run:
        verdicts = _verdicts_after(
            planned, actions, kernel_outcomes, models_before, options, progress
        )
    for i, (p, action) in enumerate(zip(planned, actions, strict=True)):
        verdict, reason = verdicts[i] if verdicts is not None else (None, None)
        report.modules.append(
            ModuleOutcome(
                position=p.position,
                path=p.relpath,
                codec=p.codec.label,
                action=action,
                extra=p.extra,
                removed=p.removed,
                verdict=verdict,
                reason=reason,
            )
        )
    for rel in unlisted:
        codec = next((c for c in Codec if c.suffix and rel.endswith(c.suffix)), Codec.NONE)
        report.modules.append(ModuleOutcome(None, rel, codec.label, Action.NOT_IN_TREE))
    return report


def _models_before(kernels: Sequence[Path]) -> list[object] | None:
    """The kernels as they are before the run, or None when one cannot be modelled yet.

    A kernel that will not be rewritten judges the same after the run, so
    planning can already give the final verdict of every module that is not
    rewritten either: a no-op re-run then reads each module once, not twice.
    A kernel that cannot be modelled here is refused later, where it was.
    """
    from vmpatch.errors import VmpatchError

    try:
        return [_kernel_model(k) for k in kernels]
    except VmpatchError:
        return None


def _verdicts_after(
    planned: Sequence[_Planned],
    actions: Sequence[Action],
    kernels: Sequence[KernelOutcome],
    models_before: Sequence[object] | None,
    options: RerootOptions,
    progress: Callable[[str, int, int], None] | None,
) -> list[tuple[VerdictKind, str | None]]:
    """Every module's verdict as the run leaves it, against every kernel as written.

    A module that was rewritten, or any module when a kernel was, is read
    back from disk and judged again; the rest keep the verdict planning gave
    their unchanged bytes under the unchanged kernels.
    """
    if models_before is not None and all(k.carries_root for k in kernels):
        kept, models = True, models_before
    else:
        kept, models = False, [_kernel_model(k.written) for k in kernels]
    verdicts: list[tuple[VerdictKind, str | None] | None] = [
        p.verdict if kept and a is Action.UNCHANGED else None
        for p, a in zip(planned, actions, strict=True)
    ]
    again = [i for i, v in enumerate(verdicts) if v is None]

    def judge(n: int) -> tuple[VerdictKind, str | None]:
        return _judge(planned[again[n]].path, models, options.max_size)

    def crashed(n: int, why: str) -> BaseException:
        return SystemFailure(planned[again[n]].path, f"cannot read module: {why}")

    if again:
        judged = _in_parallel(
            judge, len(again), options.workers, progress, "verifying modules", crashed
        )
        for i, verdict in zip(again, judged, strict=True):
            verdicts[i] = verdict  # type: ignore[call-overload]  # a (kind, reason) pair
    return verdicts  # type: ignore[return-value]  # every slot is filled


def _apply_installed(
    directory: Path,
    rewrite: Sequence[tuple[_Planned, bytes]],
    kernel_plans: Sequence[object],
    options: RerootOptions,
    report: RerootReport,
    progress: Callable[[str, int, int], None] | None,
    staged_all: Callable[[], None],
) -> None:
    """Stage every module, then patch the images, then rename: old or new, never partial.

    ``staged_all`` runs once every module is staged, before the first image
    or module changes: the leaf manifest is written there, so that a run
    stopped part-way leaves the manifest naming the root it was heading for
    (its content is the same before and after: the trailer-free bytes), and
    ``vmpatch verify`` can say how far the tree got.
    """
    from vmpatch.workflow.patch import apply_patches

    mtime = _mtime_ns()
    staged: list[StagedWrite] = []
    guard = Lock()
    done = [0]
    cancelled = False

    def stage(i: int) -> None:
        p, trailer = rewrite[i]
        data = read_module(p.path, max_size=options.max_size).data
        base, _ = _strip_trailers(p.path, data, options.keep_signatures)
        if hashlib.sha256(base).digest() != p.base_sha256:
            raise InputError(p.path, "changed while being re-rooted; nothing renamed")
        dropped = _ima_names(p.path)
        write = StagedWrite(
            p.path,
            _recompress(base + trailer, p.codec, options.compressor),
            drop_xattrs=IMA_XATTRS,
            mtime_ns=mtime,
            follow_links=not _links_out(directory, p.path),  # only with --replace-links
        )
        with guard:
            if cancelled:  # the run stopped while this file was being staged
                write.abort()
                return
            staged.append(write)
            report.dropped_xattrs.extend(f"{p.relpath}: {name}" for name in dropped)
            done[0] += 1
            if progress is not None:  # under the lock: one thread at a time draws
                progress("rewriting modules", done[0], len(rewrite))

    try:
        _in_parallel(stage, len(rewrite), options.workers)
        staged_all()
        apply_patches(kernel_plans)  # type: ignore[arg-type]
        directories = set()
        for write in sorted(staged, key=lambda w: str(w.target)):
            write.commit()
            directories.add(write.target.parent)
        staged.clear()
        for directory in sorted(directories):
            fsync_dir(directory)
    finally:
        # A signal can land while a worker thread is being started, and such a
        # thread is not among those the pool waits for: it aborts its own
        # file when it sees the flag (the interpreter joins it before exit).
        with guard:
            cancelled = True
            leftover = list(staged)
        for write in leftover:
            write.abort()
    report.dropped_xattrs.sort()


def _reroot_kbuild(
    directory: Path,
    kernels: Sequence[Path],
    options: RerootOptions,
    progress: Callable[[str, int, int], None] | None,
) -> RerootReport:
    """``.merkle`` files and the patched vmlinux; the ``.ko`` files are never touched."""
    from vmpatch.workflow.tree import build_tree, plan_tree

    if options.extra:
        raise UsageError(
            None, "--extra is for install trees: a kbuild tree's modules.order is the tree"
        )
    plan = plan_tree(directory, suffix=options.suffix)  # refuses modules with trailers
    count = len(plan.modules)

    def hashed(done: int) -> None:
        if progress is not None:
            progress("hashing modules", done, count)

    tree = build_tree(plan, workers=options.workers, progress=hashed)
    root = tree.root
    kernel_plans, kernel_outcomes = _plan_kernels(kernels, root, directory, options)
    report = RerootReport(
        directory=directory,
        layout=Layout.KBUILD,
        root=root,
        dry_run=options.dry_run,
        kernels=kernel_outcomes,
        bytes_hashed=sum(os.stat(m.file).st_size for m in plan.modules),
    )
    writes = []
    for module in plan.modules:
        proof = tree.trailer(module.entry.index)
        try:
            with open_input(module.proof) as stream:
                current = stream.read(len(proof) + 1)
        except FileNotFoundError:
            current = None
        writes.append((module, proof, current != proof))
    if not options.dry_run:
        from vmpatch.workflow.patch import apply_patches

        for module, _proof, changed in writes:
            if changed:
                check_target(module.proof)
        for module, proof, changed in writes:
            if changed:
                atomic_write(module.proof, proof, mode=0o644)
        apply_patches(kernel_plans)  # type: ignore[arg-type]
    report.files_rewritten = sum(1 for *_, changed in writes if changed)
    report.found = _found(
        len(writes) - report.files_rewritten, report.files_rewritten, kernel_outcomes, False
    )
    models = [] if options.dry_run else [_kernel_model(k.written) for k in kernel_outcomes]
    for module, _proof, changed in writes:
        verdict: VerdictKind | None = None
        reason: str | None = None
        if models:  # read back from disk: the module as built, then its proof as written
            with open_input(module.module) as stream, open_input(module.proof) as proof_file:
                verdict, reason = _worst(stream.read() + proof_file.read(), models)
        report.modules.append(
            ModuleOutcome(
                position=module.entry.index,
                path=os.path.relpath(module.file, directory),
                codec="none",
                action=Action.PROVED if changed else Action.UNCHANGED,
                verdict=verdict,
                reason=reason,
            )
        )
    return report
