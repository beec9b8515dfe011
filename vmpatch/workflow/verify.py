# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify``: judge module files against a vmlinux, as the kernel will.

Builds the :class:`~vmpatch.verdict.KernelModel` from the image with
:func:`vmpatch.elf.kernel.kernel_model` (the same model every checked append
uses) and runs
:func:`~vmpatch.verdict.kernel_verdict` over each module's kernel-visible bytes
(decompressed for ``.ko.gz``/``.ko.xz``/``.ko.zst``).

A compressed module's bytes depend on the loading path: the kernel's own
decompressor (:func:`vmpatch.ko.kdecompress.kernel_decompress`) or kmod's
userspace one. The kernel's config (``--config``) decides which applies and
what the kernel's decoder takes; without it each verdict says what it assumes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vmpatch.boot.kernel import kernel_model
from vmpatch.errors import EXIT_MISMATCH, InputError, UsageError, VmpatchError
from vmpatch.ko.kdecompress import LoadPath
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.verdict import (
    KernelModel,
    Pkcs7Support,
    Verdict,
    VerdictKind,
    kernel_verdict,
    load_refused,
)
from vmpatch.workflow.results import FileError, most_severe

if TYPE_CHECKING:
    from vmpatch.workflow.tree import Progress

__all__ = [
    "LoadPath",
    "ModuleVerdict",
    "VerdictCounts",
    "VerifyReport",
    "assumptions",
    "kernel_model",
    "modules_of_build_dir",
    "run_verify",
    "verify_files",
]


@dataclass(frozen=True)
class ModuleVerdict:
    """The kernel's verdict on one module file, as ``verify`` reports it."""

    path: Path
    verdict: VerdictKind
    errno: str | None
    load_result: str
    lockdown_result: str
    position: int | None
    trailer: dict[str, object]  # {"kind", "position", "levels"}
    reason: str
    load_path: LoadPath = LoadPath.PLAIN  # how the kernel gets the bytes it judged

    @classmethod
    def of(
        cls, path: Path, verdict: Verdict, load_path: LoadPath = LoadPath.PLAIN
    ) -> ModuleVerdict:
        return cls(
            path=path,
            verdict=verdict.verdict,
            errno=verdict.errno,
            load_result=verdict.load_result,
            lockdown_result=verdict.lockdown_result,
            position=verdict.position,
            trailer={
                "kind": verdict.trailer,
                "position": verdict.position,
                "levels": verdict.proof_levels,
            },
            reason=verdict.reason,
            load_path=load_path,
        )

    @property
    def loads(self) -> bool:
        """Whether the module loads (or may: UNCHECKED is not a failure)."""
        return self.verdict is not VerdictKind.REJECT


@dataclass(frozen=True)
class VerdictCounts:
    """ACCEPT, REJECT and UNCHECKED counted apart, and files that gave an error."""

    accept: int
    reject: int
    unchecked: int
    error: int

    @property
    def checked(self) -> int:
        """Modules whose verdict vmpatch decided (ACCEPT or REJECT)."""
        return self.accept + self.reject


@dataclass(frozen=True)
class VerifyReport:
    """What ``vmpatch verify`` found: the kernel it judged against, then every file.

    ``levels``/``root``/``placeholder`` are None for an image without
    ``.module_hashes``; ``placeholder`` is True for an image whose root is
    still the blank record the build links in (never patched: every proof
    is refused).
    """

    json_skip = ("root_record",)
    json_extra = (
        ("levels", "levels"),
        ("root", "root_hex"),
        ("placeholder", "placeholder"),
        ("nothing_checked", "nothing_checked"),
    )

    kernel: Path
    module_hashes: bool
    root_record: ModuleHashesRoot | None
    pkcs7_support: Pkcs7Support
    modules: tuple[ModuleVerdict | FileError, ...]
    counts: VerdictCounts  # of every module judged, also when only failures are listed
    failures_only: bool = False  # modules lists only what does not load
    config: str | None = None  # the kernel config the verdicts read, if any
    module_decompress: str | None = None  # its in-kernel codec; "" without MODULE_DECOMPRESS
    assumptions: tuple[str, ...] = ()  # what the verdicts take for granted
    tree_state: str | None = None  # with --modules DIR and its modules.leaves: re-rooted for what

    @property
    def levels(self) -> int | None:
        return self.root_record.levels if self.root_record else None

    @property
    def root_hex(self) -> str | None:
        return self.root_record.digest.hex() if self.root_record else None

    @property
    def placeholder(self) -> bool | None:
        return self.root_record.is_placeholder if self.root_record else None

    @property
    def total(self) -> int:
        counts = self.counts
        return counts.checked + counts.unchecked + counts.error

    @property
    def nothing_checked(self) -> bool:
        """True when no module got a verdict vmpatch decided (all UNCHECKED or errors)."""
        return self.total > 0 and self.counts.checked == 0

    @property
    def exit_code(self) -> int:
        """The most severe outcome: an error's code, else 1 for a REJECT, else 0."""
        codes = [m.error.exit_code for m in self.modules if isinstance(m, FileError)]
        if self.counts.reject:
            codes.append(EXIT_MISMATCH)
        return most_severe(codes)

    def failures(self) -> VerifyReport:
        """The same report listing only what does not load (REJECTs and errors); same counts."""
        kept = tuple(m for m in self.modules if isinstance(m, FileError) or not m.loads)
        return replace(self, modules=kept, failures_only=True)


def count_verdicts(results: Sequence[ModuleVerdict | FileError]) -> VerdictCounts:
    kinds = [m.verdict if isinstance(m, ModuleVerdict) else None for m in results]
    return VerdictCounts(
        accept=kinds.count(VerdictKind.ACCEPT),
        reject=kinds.count(VerdictKind.REJECT),
        unchecked=kinds.count(VerdictKind.UNCHECKED),
        error=kinds.count(None),
    )


def assumptions(kernel: KernelModel, load_path: LoadPath | None = None) -> list[str]:
    """What the verdicts take for granted that neither the image nor a config told."""
    out = []
    if kernel.config is None:
        out.append(
            "no kernel config: compressed modules are judged as a kernel with "
            "MODULE_DECOMPRESS for their own codec (and every xz BCJ filter) would "
            "decompress them in-kernel; pass --config to decide"
        )
    if load_path is None:
        out.append(
            "loading path as kmod chooses it: in-kernel decompression when the kernel "
            "decompresses the module's codec, else userspace decompression"
        )
    if kernel.sig_force is not True:
        out.append(
            "load_result assumes enforcement (module.sig_enforce=1 or MODULE_SIG_FORCE); "
            "without it a soft failure loads with a taint"
        )
    return out


def _path_for(codec: str, kernel: KernelModel, requested: LoadPath | None) -> LoadPath:
    """The loading path of a compressed module.

    kmod's do_finit_module() (libkmod/libkmod-module.c) passes
    MODULE_INIT_COMPRESSED_FILE only when /sys/module/compression names the
    file's codec, and otherwise decompresses the file itself.
    """
    if requested is not None:
        return requested
    if kernel.decompress is None or kernel.decompress == codec:
        return LoadPath.IN_KERNEL
    return LoadPath.USERSPACE


def kernel_view(
    path: Path, kernel: KernelModel, *, max_size: int, load_path: LoadPath | None = None
) -> tuple[LoadPath, bytes | Verdict]:
    """The bytes the kernel authenticates, or the verdict when it refuses the file first."""
    from vmpatch.ko import kdecompress
    from vmpatch.ko.compression import Codec, decompress, read_raw

    codec, raw = read_raw(path, max_size=max_size)
    if codec is Codec.NONE:
        return LoadPath.PLAIN, decompress(raw, codec, path=path, max_size=max_size)
    chosen = _path_for(codec.label, kernel, load_path)
    try:
        if chosen is LoadPath.USERSPACE:
            return chosen, kdecompress.userspace_decompress(
                raw, codec.label, max_size=max_size
            ).data
        if kernel.decompress == "":
            # kernel/module/internal.h: module_decompress() without MODULE_DECOMPRESS.
            return chosen, load_refused(
                "EOPNOTSUPP",
                "the kernel has no MODULE_DECOMPRESS: it refuses MODULE_INIT_COMPRESSED_FILE",
            )
        filters = None if kernel.xz_bcj is None else kdecompress.XzFilters(kernel.xz_bcj)
        decoded = kdecompress.kernel_decompress(
            raw, kernel.decompress or codec.label, max_size=max_size, xz_filters=filters
        )
        return chosen, decoded.data
    except kdecompress.KernelRefusal as refusal:
        if chosen is LoadPath.USERSPACE:
            raise InputError(path, refusal.reason) from None
        log = f" (kernel log: {refusal.message})" if refusal.message else ""
        return chosen, load_refused(refusal.errno, f"{refusal.reason}{log}")
    except kdecompress.LimitExceeded:
        raise InputError(
            path,
            f"decompressed size exceeds {max_size} bytes (limit, raise with --max-decompressed)",
        ) from None
    except kdecompress.Unmodelled as err:
        raise InputError(path, str(err)) from None


def _is_elf(path: str | os.PathLike[str]) -> bool:
    from vmpatch.errors import SystemFailure
    from vmpatch.fs.atomic import open_input

    try:
        with open_input(Path(path)) as probe:
            return probe.read(4) == b"\x7fELF"
    except OSError as err:
        raise SystemFailure.from_oserror(Path(path), err, "read") from err


def _boot_image_model(image: str | os.PathLike[str]) -> KernelModel:
    """The model of a boot image, read through :mod:`vmpatch.boot` (its symbols are gone)."""
    from vmpatch.boot.kernel import read_kernel
    from vmpatch.errors import InputError

    facts = read_kernel(image)
    if facts.hashes == "unknown":
        raise InputError(image, f"cannot tell whether it authenticates modules: {facts.evidence}")
    if facts.hashes == "present" and facts.root is None:
        raise InputError(image, facts.evidence)
    root = facts.root or ModuleHashesRoot.placeholder()
    return KernelModel(root=root, merkle=facts.hashes == "present", pkcs7=Pkcs7Support.UNKNOWN)


def modules_of_build_dir(
    build_dir: str | os.PathLike[str], suffix: str | None = None
) -> list[Path]:
    """The module files a tree's modules.order names, in order.

    A build tree (``*.o`` lines) gives ``<stem><suffix>``; an install tree
    (``kernel/...ko`` lines) gives whichever compressed form is installed.
    """
    from vmpatch.records.modorder import Layout
    from vmpatch.workflow.reroot import layout_of

    if layout_of(Path(build_dir), None) is Layout.INSTALLED:
        from vmpatch.workflow.installed import installed_modules

        if suffix is not None:
            raise UsageError(None, "--suffix is for build trees; an install tree names its files")
        return [path for _entry, path in installed_modules(build_dir)]
    from vmpatch.workflow.tree import plan_tree

    plan = plan_tree(build_dir, suffix=suffix, refuse_trailers=False)  # proofs expected
    return [m.module for m in plan.modules]


def verify_files(
    kernel: KernelModel,
    paths: Sequence[Path],
    *,
    max_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    load_path: LoadPath | None = None,
) -> list[ModuleVerdict | FileError]:
    """The kernel's verdict for every module file, in the order given.

    A file that cannot be read (not a module, a corrupt ``.ko.xz``) is a
    :class:`FileError` among the verdicts: one bad file hides no other.
    ``load_path`` forces the loading path of compressed modules (None: as kmod
    chooses it, see :func:`assumptions`).
    """
    from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED
    from vmpatch.merkle import default_workers

    limit = DEFAULT_MAX_DECOMPRESSED if max_size is None else max_size

    def judge(path: Path) -> ModuleVerdict | FileError:
        try:
            chosen, view = kernel_view(path, kernel, max_size=limit, load_path=load_path)
        except VmpatchError as err:
            return FileError.of(path, err)
        if isinstance(view, Verdict):
            return ModuleVerdict.of(path, view, chosen)
        return ModuleVerdict.of(path, kernel_verdict(view, kernel), chosen)

    results = []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done, result in enumerate(pool.map(judge, paths), start=1):
            results.append(result)
            if progress:
                progress(done)
    return results


def run_verify(
    kernel: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    modules_dir: str | os.PathLike[str] | None = None,
    suffix: str | None = None,
    max_size: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    config: str | os.PathLike[str] | None = None,
    load_path: LoadPath | None = None,
) -> VerifyReport:
    """``vmpatch verify``: the modules named and those of ``modules_dir``, judged by ``kernel``.

    Errors about the whole command (no modules, a bad kernel, a bad
    modules.order) are raised; an unreadable module is one entry of the report.
    """
    from vmpatch.errors import UsageError
    from vmpatch.workflow.tree import no_progress

    files = [Path(p) for p in paths]
    if modules_dir is not None:
        files += modules_of_build_dir(modules_dir, suffix)
    if not files:
        raise UsageError(None, "no modules given: name them, or use --modules DIR")
    model = kernel_model(kernel, config)
    with (progress or no_progress)("verifying modules", len(files)) as done:
        results = verify_files(
            model, files, max_size=max_size, workers=workers, progress=done, load_path=load_path
        )
    return VerifyReport(
        kernel=Path(kernel),
        module_hashes=model.merkle,
        root_record=model.root if model.merkle else None,
        pkcs7_support=model.pkcs7,
        modules=tuple(results),
        counts=count_verdicts(results),
        config=model.config,
        module_decompress=model.decompress,
        assumptions=tuple(assumptions(model, load_path)),
        tree_state=None if modules_dir is None else _tree_state(modules_dir, model, results),
    )


def _tree_state(
    directory: str | os.PathLike[str],
    model: KernelModel,
    results: Sequence[ModuleVerdict | FileError],
) -> str | None:
    """How far the tree was re-rooted for this kernel (vmpatch.workflow.reroot.tree_state)."""
    from vmpatch.records.trailer import TrailerKind
    from vmpatch.workflow.reroot import tree_state

    proved = sum(
        1
        for r in results
        if isinstance(r, ModuleVerdict)
        and r.verdict is VerdictKind.ACCEPT
        and r.trailer.get("kind") == TrailerKind.MERKLE
    )
    return tree_state(directory, model.root if model.merkle else None, proved)
