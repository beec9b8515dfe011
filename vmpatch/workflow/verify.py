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
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from vmpatch.boot.kernel import kernel_model
from vmpatch.errors import EXIT_MISMATCH, InputError, SystemFailure, UsageError, VmpatchError
from vmpatch.frozen import frozen
from vmpatch.ko import kdecompress
from vmpatch.ko.compression import Codec, codec_for_path, decompress, map_plain, read_raw
from vmpatch.ko.kdecompress import LoadPath
from vmpatch.records.root import HasRootRecord, ModuleHashesRoot
from vmpatch.records.trailer import TrailerKind
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
    from vmpatch.records.modorder import Layout
    from vmpatch.workflow.explain import Explainer, Explanation
    from vmpatch.workflow.system import RuntimeState, SystemKernel
    from vmpatch.workflow.tree import Progress

__all__ = [
    "Enforcement",
    "EnforcementMode",
    "LoadPath",
    "ModuleVerdict",
    "VerdictCounts",
    "VerifyReport",
    "assumptions",
    "kernel_model",
    "modules_of_build_dir",
    "run_verify",
    "run_verify_system",
    "unlisted_modules",
    "verify_files",
]


@frozen  # one per module judged: half the construction cost of a dataclass (vmpatch.frozen)
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
    result: str = ""
    """What finit_module returns under the report's enforcement (see :class:`Enforcement`)."""
    explanation: Explanation | None = None  # why it is refused (vmpatch.workflow.explain)

    @classmethod
    def of(
        cls,
        path: Path,
        verdict: Verdict,
        load_path: LoadPath = LoadPath.PLAIN,
        explanation: Explanation | None = None,
        result: str | None = None,
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
            result=verdict.load_result if result is None else result,
            explanation=explanation,
        )

    @property
    def loads(self) -> bool:
        """Whether the module loads (or may: UNCHECKED is not a failure)."""
        return self.verdict is not VerdictKind.REJECT


class EnforcementMode(StrEnum):
    """How the kernel answers a soft authentication failure (kernel/module/signing.c
    module_sig_check(): ENODATA, ENOPKG, ENOKEY; every other errno is fatal anyway)."""

    ENFORCING = "enforcing"  # is_module_sig_enforced(): -EKEYREJECTED
    LOCKDOWN = "lockdown"  # security_locked_down(LOCKDOWN_MODULE_SIGNATURE): -EPERM
    NONE = "none"  # the module loads and taints the kernel (TAINT_UNSIGNED_MODULE)


#: module_sig_check()'s soft errors: refused only under enforcement or lockdown.
_SOFT_ERRNOS = frozenset({"ENODATA", "ENOPKG", "ENOKEY"})
#: security/lockdown/lockdown.c: LOCKDOWN_MODULE_SIGNATURE is below LOCKDOWN_INTEGRITY_MAX,
#: so both levels above "none" lock it down.
_LOCKING_LEVELS = ("integrity", "confidentiality")


@frozen
class Enforcement:
    """Whether the kernel enforces module authentication, and what told (or what is assumed).

    Enforcing = CONFIG_MODULE_SIG_FORCE or ``module.sig_enforce=Y``
    (kernel/module/signing.c is_module_sig_enforced()); else lockdown at
    integrity or confidentiality refuses with EPERM; else a soft failure
    loads. ``assumed`` is True when a fact was missing and ``mode`` is the
    stricter guess; ``evidence`` says where each fact came from.
    """

    mode: EnforcementMode
    assumed: bool
    sig_force: bool | None  # CONFIG_MODULE_SIG_FORCE, None without a config
    sig_enforce: bool | None  # /sys/module/module/parameters/sig_enforce, None unread
    lockdown: str | None  # /sys/kernel/security/lockdown's current level, None unread
    evidence: tuple[str, ...] = ()

    @classmethod
    def decide(
        cls,
        sig_force: bool | None,
        sig_enforce: bool | None = None,
        lockdown: str | None = None,
        evidence: Sequence[str] = (),
    ) -> Enforcement:
        def made(mode: EnforcementMode, assumed: bool) -> Enforcement:
            return cls(mode, assumed, sig_force, sig_enforce, lockdown, tuple(evidence))

        if sig_force or sig_enforce:
            return made(EnforcementMode.ENFORCING, False)
        if lockdown in _LOCKING_LEVELS:
            return made(EnforcementMode.LOCKDOWN, False)
        if sig_enforce is False and lockdown == "none":
            return made(EnforcementMode.NONE, False)
        if sig_enforce is None:
            return made(EnforcementMode.ENFORCING, True)
        return made(EnforcementMode.LOCKDOWN, True)  # not enforced; lockdown unknown

    def assumption(self) -> str | None:
        """The sentence ``verify`` prints when the mode is a guess."""
        if not self.assumed:
            return None
        if self.mode is EnforcementMode.ENFORCING:
            return (
                "enforcement (module.sig_enforce=1 or MODULE_SIG_FORCE) for load results: "
                "the sig_enforce parameter was not read (a running system's "
                "/sys/module/module/parameters/sig_enforce); without enforcement or "
                "lockdown a soft failure loads with a taint"
            )
        return (
            "lockdown (EPERM for a soft failure): sig_enforce is off and "
            "the lockdown level was not read (/sys/kernel/security/lockdown; Debian "
            "locks down when booted with EFI Secure Boot)"
        )

    def result(self, verdict: ModuleVerdict | Verdict) -> str:
        """What finit_module returns for ``verdict`` under this enforcement."""
        return self.result_of(
            verdict.verdict, verdict.errno, verdict.load_result, verdict.lockdown_result
        )

    def result_of(
        self, kind: VerdictKind, errno: str | None, load_result: str, lockdown_result: str
    ) -> str:
        """:meth:`result` from a verdict's four fields."""
        if kind is not VerdictKind.REJECT or errno not in _SOFT_ERRNOS:
            return load_result
        if self.mode is EnforcementMode.ENFORCING:
            return load_result
        if self.mode is EnforcementMode.LOCKDOWN:
            return lockdown_result
        return "0"


@frozen
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
class VerifyReport(HasRootRecord):
    """What ``vmpatch verify`` found: the kernel it judged against, then every file.

    ``levels``/``root``/``placeholder`` are None for an image without
    ``.module_hashes``; ``placeholder`` is True for an image whose root is
    still the blank record the build links in (never patched: every proof
    is refused).
    """

    json_skip = ("root_record", "modules_dir")
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
    enforcement: Enforcement | None = None
    unlisted: tuple[ModuleVerdict | FileError, ...] = ()
    """Module files of an install tree that its modules.order does not name (out-of-tree,
    DKMS), judged like the rest; not in ``counts``."""
    system: SystemKernel | None = None  # with --system: what was found where
    modules_dir: Path | None = None  # --modules DIR (the unlisted modules are under it)
    tree_state: str | None = None  # with --modules DIR and its modules.leaves: re-rooted for what

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
        every = (*self.modules, *self.unlisted)
        codes = [m.error.exit_code for m in every if isinstance(m, FileError)]
        if self.counts.reject or any(
            isinstance(m, ModuleVerdict) and not m.loads for m in self.unlisted
        ):
            codes.append(EXIT_MISMATCH)
        return most_severe(codes)

    def failures(self) -> VerifyReport:
        """The same report listing only what does not load (REJECTs and errors); same counts."""

        def failing(
            entries: tuple[ModuleVerdict | FileError, ...],
        ) -> tuple[ModuleVerdict | FileError, ...]:
            return tuple(m for m in entries if isinstance(m, FileError) or not m.loads)

        return replace(
            self,
            modules=failing(self.modules),
            unlisted=failing(self.unlisted),
            failures_only=True,
        )


def count_verdicts(results: Sequence[ModuleVerdict | FileError]) -> VerdictCounts:
    kinds = [m.verdict if isinstance(m, ModuleVerdict) else None for m in results]
    return VerdictCounts(
        accept=kinds.count(VerdictKind.ACCEPT),
        reject=kinds.count(VerdictKind.REJECT),
        unchecked=kinds.count(VerdictKind.UNCHECKED),
        error=kinds.count(None),
    )


def assumptions(
    kernel: KernelModel,
    load_path: LoadPath | None = None,
    enforcement: Enforcement | None = None,
) -> list[str]:
    """What the verdicts take for granted that neither the image, a config nor the
    running kernel told."""
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
    decided = enforcement or Enforcement.decide(kernel.sig_force)
    guess = decided.assumption()
    if guess is not None:
        out.append(guess)
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
    path: str | os.PathLike[str],
    kernel: KernelModel,
    *,
    max_size: int,
    load_path: LoadPath | None = None,
) -> tuple[LoadPath, bytes | Verdict]:
    """The bytes the kernel authenticates, or the verdict when it refuses the file first."""
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


def modules_of_build_dir(
    build_dir: str | os.PathLike[str], suffix: str | None = None
) -> list[Path]:
    """The module files a tree's modules.order names, in order.

    A build tree (``*.o`` lines) gives ``<stem><suffix>``; an install tree
    (``kernel/...ko`` lines) gives whichever compressed form is installed.
    A module of modules.order that is no file is refused.
    """
    from vmpatch.records.modorder import layout_of

    files, check = _listed_modules(build_dir, suffix, layout_of(Path(build_dir), None))
    check()
    return [Path(file) for file in files]


def _listed_modules(
    build_dir: str | os.PathLike[str], suffix: str | None, layout: Layout
) -> tuple[Sequence[str | os.PathLike[str]], Callable[[], None]]:
    """:func:`modules_of_build_dir`'s files, and the check that refuses a missing one.

    A build tree's modules are not stat'ed here: judging opens each one
    anyway, so ``verify`` runs the check (the first module of modules.order
    that is no file) only when a module could not be judged. Stat'ing
    Debian's 4230 up front was 0.06 s of a 0.85 s ``verify --modules``
    (tmpfs, 2 CPUs). An install tree's listing finds its files as it is made.
    """
    from vmpatch.records.modorder import Layout

    if layout is Layout.INSTALLED:
        from vmpatch.workflow.installed import installed_modules

        if suffix is not None:
            raise UsageError(None, "--suffix is for build trees; an install tree names its files")
        return [path for _entry, path in installed_modules(build_dir)], lambda: None
    from vmpatch.workflow.tree import first_missing, plan_tree

    plan = plan_tree(build_dir, suffix=suffix, refuse_trailers=False, check_files=False)

    def check() -> None:
        missing = first_missing(plan)
        if missing is not None:
            raise missing

    return [m.file for m in plan.modules], check


def verify_files(
    kernel: KernelModel,
    paths: Sequence[str | os.PathLike[str]],
    *,
    max_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    load_path: LoadPath | None = None,
    explainer: Explainer | _LaterExplainer | None = None,
    enforcement: Enforcement | None = None,
) -> list[ModuleVerdict | FileError]:
    """The kernel's verdict for every module file, in the order given.

    A file that cannot be read (not a module, a corrupt ``.ko.xz``) is a
    :class:`FileError` among the verdicts: one bad file hides no other.
    Each result names its file as a Path, made as the result comes in (4230
    Paths made up front were 17 ms in front of the workers).
    ``load_path`` forces the loading path of compressed modules (None: as kmod
    chooses it, see :func:`assumptions`). ``explainer`` is asked why, for
    modules that are not accepted only. Each verdict's ``result`` is what
    finit_module returns under ``enforcement`` (None: its ``load_result``).

    With many modules, and no other thread alive, modules are judged in
    forked workers (:mod:`vmpatch.fs.forkmap`), which map each plain module
    instead of reading it, else in threads; both give the same results for
    every input
    (tests/test_verify_forked.py). Measured on Debian's 4230 modules with
    proofs (510 MB in tmpfs, 2 CPUs, ``vmpatch verify --summary``, 3
    alternated rounds): threads 1.67 s (1.95x ``vmpatch tree``), because the
    per-module Python (open, verdict, the 13-level fold) convoys on the GIL
    between hashes and read() copies every byte once more; forked workers
    1.12 s (1.11x; CPU 1.62 s against 2.17 s). Over the re-rooted ``.ko.xz``
    tree, where liblzma does most of the work, 5.75 s against 6.69 s in
    threads (1.23x against 1.41x of ``xargs -P2 xz -dc``).
    """
    from vmpatch.fs import forkmap
    from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED
    from vmpatch.merkle import default_workers

    limit = DEFAULT_MAX_DECOMPRESSED if max_size is None else max_size
    workers = min(workers or default_workers(), max(1, len(paths)))

    def judged(path: str | os.PathLike[str], *, mapped: bool = False) -> _Judged | VmpatchError:
        return _judge(path, kernel, limit, load_path, explainer, mapped=mapped)

    if workers > 1 and len(paths) >= _FORK_THRESHOLD and forkmap.can_fork():

        def crashed(index: int, why: str) -> _Encoded:
            return SystemFailure(Path(paths[index]), f"cannot read module: {why}")

        decoded = forkmap.fork_map(
            lambda index: _encode(judged(paths[index], mapped=True)),
            len(paths),
            workers=workers,
            crashed=crashed,
            progress=progress,
            convert=lambda index, code: _decode(Path(paths[index]), code, enforcement),
        )
        return decoded  # type: ignore[return-value]  # every one converted

    def judge(name: str | os.PathLike[str]) -> ModuleVerdict | FileError:
        outcome = judged(name)
        path = Path(name)
        if isinstance(outcome, VmpatchError):
            return FileError.of(path, outcome)
        return _module_verdict(path, *outcome, enforcement)

    from concurrent.futures import ThreadPoolExecutor  # 7 ms (logging): only when used

    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, result in enumerate(pool.map(judge, paths), start=1):
            results.append(result)
            if progress:
                progress(done)
    return results


#: Below this many modules, forking workers costs more than it saves.
_FORK_THRESHOLD = 64

#: A module's verdict, its loading path and its explanation (ModuleVerdict.of's arguments).
_Judged = tuple[Verdict, LoadPath, "Explanation | None"]


def _judge(
    path: str | os.PathLike[str],
    kernel: KernelModel,
    max_size: int,
    load_path: LoadPath | None,
    explainer: Explainer | _LaterExplainer | None,
    *,
    mapped: bool,
) -> _Judged | VmpatchError:
    """One module's verdict, or the error that stopped it; ``mapped`` (only in a
    single-threaded process) maps a plain module instead of reading it."""
    if mapped and codec_for_path(path) is Codec.NONE:
        try:
            module = map_plain(path, max_size=max_size)
        except VmpatchError as err:
            return err
        with module:
            return _verdict_on(path, LoadPath.PLAIN, module.data, kernel, explainer, copy=True)
    try:
        chosen, view = kernel_view(path, kernel, max_size=max_size, load_path=load_path)
    except VmpatchError as err:
        return err
    return _verdict_on(path, chosen, view, kernel, explainer)


def _verdict_on(
    path: str | os.PathLike[str],
    chosen: LoadPath,
    view: bytes | memoryview | Verdict,
    kernel: KernelModel,
    explainer: Explainer | _LaterExplainer | None,
    *,
    copy: bool = False,
) -> _Judged:
    verdict = view if isinstance(view, Verdict) else kernel_verdict(view, kernel)
    why = None
    if explainer is not None and verdict.verdict is not VerdictKind.ACCEPT:
        data = None if isinstance(view, Verdict) else bytes(view) if copy else view
        why = explainer(Path(path), data, verdict.verdict, verdict.reason)  # type: ignore[arg-type]
    return verdict, chosen, why


#: What a worker process sends back for one module: the error, or the verdict's
#: fields as plain values (unpickling 4230 ModuleVerdicts with their paths and
#: enums took 84 ms of the caller's time; the caller knows the paths).
_Encoded = VmpatchError | tuple[object, ...]
_KINDS = {kind.value: kind for kind in VerdictKind}
_LOAD_PATHS = {path.value: path for path in LoadPath}
_TRAILERS = {kind.value: kind for kind in TrailerKind}


def _encode(outcome: _Judged | VmpatchError) -> _Encoded:
    if isinstance(outcome, VmpatchError):
        return outcome
    v, chosen, why = outcome
    return (
        v.verdict.value,
        v.errno,
        v.load_result,
        v.lockdown_result,
        v.reason,
        v.trailer.value,
        v.position,
        v.proof_levels,
        chosen.value,
        why,
    )


def _module_verdict(
    path: Path,
    verdict: Verdict,
    chosen: LoadPath,
    why: Explanation | None,
    enforcement: Enforcement | None,
) -> ModuleVerdict:
    result = None if enforcement is None else enforcement.result(verdict)
    return ModuleVerdict.of(path, verdict, chosen, why, result)


def _decode(
    path: Path, code: _Encoded, enforcement: Enforcement | None
) -> ModuleVerdict | FileError:
    """The result :func:`_judge` gave in a worker, as ModuleVerdict.of builds it here.

    Built directly from the fields: through Verdict and ModuleVerdict.of it
    was 11.5 us a module, a twentieth of verify's time over Debian's 4230
    (timeit; the worker processes are busy meanwhile, so this is on top).
    """
    if isinstance(code, VmpatchError):
        return FileError.of(path, code)
    name, errno, load, lockdown, reason, trailer, position, levels, chosen, why = code
    kind = _KINDS[name]  # type: ignore[index]
    result = (
        load if enforcement is None else enforcement.result_of(kind, errno, load, lockdown)  # type: ignore[arg-type]
    )
    return ModuleVerdict(
        path,
        kind,
        errno,  # type: ignore[arg-type]
        load,  # type: ignore[arg-type]
        lockdown,  # type: ignore[arg-type]
        position,  # type: ignore[arg-type]
        {"kind": _TRAILERS[trailer], "position": position, "levels": levels},  # type: ignore[index]
        reason,  # type: ignore[arg-type]
        _LOAD_PATHS[chosen],  # type: ignore[index]
        result,  # type: ignore[arg-type]
        why,  # type: ignore[arg-type]
    )


def unlisted_modules(
    tree: str | os.PathLike[str], listed: Sequence[str | os.PathLike[str]]
) -> list[Path]:
    """Module files under an install tree that its modules.order does not name, sorted.

    Out-of-tree and DKMS modules (``updates/``, ``extra/``) are installed
    beside the tree's own but never enter its modules.order. Directory links
    (``build``, ``source``) are not followed.
    """
    from vmpatch.ko.compression import MODULE_SUFFIXES

    named = {os.path.normpath(p) for p in listed}
    found = []
    for directory, _dirs, names in os.walk(tree):
        for name in names:  # text, not Paths: 0.1 s of Debian's 4230 modules was pathlib
            if not name.endswith(MODULE_SUFFIXES):
                continue
            where = os.path.join(directory, name)
            if os.path.normpath(where) not in named and (path := Path(where)).is_file():
                found.append(path)
    return sorted(found)


def _enforcement(model: KernelModel, runtime: RuntimeState | None) -> Enforcement:
    evidence = []
    if model.sig_force is not None:
        value = "y" if model.sig_force else "not set"
        evidence.append(f"CONFIG_MODULE_SIG_FORCE {value} in {model.config}")
    if runtime is None:
        return Enforcement.decide(model.sig_force, evidence=evidence)
    if runtime.sig_enforce is not None:
        flag = "Y" if runtime.sig_enforce else "N"
        evidence.append(f"module.sig_enforce={flag} in {runtime.sig_enforce_file}")
    if runtime.lockdown is not None:
        evidence.append(f"lockdown {runtime.lockdown} in {runtime.lockdown_file}")
    return Enforcement.decide(model.sig_force, runtime.sig_enforce, runtime.lockdown, evidence)


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
    runtime: RuntimeState | None = None,
    tree: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    other_kernels: Sequence[str | os.PathLike[str]] = (),
) -> VerifyReport:
    """``vmpatch verify``: the modules named and those of ``modules_dir``, judged by ``kernel``.

    For an install tree, the module files its modules.order does not name are
    judged too and reported apart (``unlisted``). ``runtime`` is the running
    kernel's enforcement state (``--system``). Each module that is not
    accepted gets an explanation (:mod:`vmpatch.workflow.explain`), from the
    expected leaves of ``tree`` or ``manifest`` (or ``modules_dir``'s own
    modules.leaves) when given; ``other_kernels`` are images whose roots a
    foreign proof is matched against. Errors about the whole command (no
    modules, a bad kernel, a bad modules.order) are raised; an unreadable
    module is one entry of the report.
    """
    from vmpatch.errors import UsageError
    from vmpatch.records.modorder import Layout, layout_of
    from vmpatch.workflow.tree import no_progress

    files: list[str | os.PathLike[str]] = [Path(p) for p in paths]
    extra: list[Path] = []
    check_listed: Callable[[], None] = lambda: None  # noqa: E731
    if modules_dir is not None:
        layout = layout_of(Path(modules_dir), None)
        listed, check_listed = _listed_modules(modules_dir, suffix, layout)
        files += listed
        if layout is Layout.INSTALLED:
            extra = unlisted_modules(modules_dir, listed)
    if not files:
        raise UsageError(None, "no modules given: name them, or use --modules DIR")
    model = kernel_model(kernel, config)
    enforcement = _enforcement(model, runtime)
    explainer = _explainer(model, tree, manifest, modules_dir, other_kernels)

    def judged(
        paths: Sequence[str | os.PathLike[str]], done: Callable[[int], None] | None
    ) -> tuple[ModuleVerdict | FileError, ...]:
        results = verify_files(
            model,
            paths,
            max_size=max_size,
            workers=workers,
            progress=done,
            load_path=load_path,
            explainer=explainer,
            enforcement=enforcement,
        )
        return tuple(results)

    with (progress or no_progress)("verifying modules", len(files) + len(extra)) as done:
        results = judged(files, done)
        if any(isinstance(r, FileError) for r in results):
            check_listed()  # a module of modules.order that is no file refuses the run
        offset = len(files)
        tick = (lambda n: done(offset + n)) if done is not None else None
        unlisted = judged(extra, tick) if extra else ()
    return VerifyReport(
        kernel=Path(kernel),
        module_hashes=model.merkle,
        root_record=model.root if model.merkle else None,
        pkcs7_support=model.pkcs7,
        modules=results,
        counts=count_verdicts(results),
        config=model.config,
        module_decompress=model.decompress,
        assumptions=tuple(assumptions(model, load_path, enforcement)),
        enforcement=enforcement,
        unlisted=unlisted,
        modules_dir=None if modules_dir is None else Path(modules_dir),
        tree_state=None if modules_dir is None else _tree_state(modules_dir, model, results),
    )


def _explainer(
    model: KernelModel,
    tree: str | os.PathLike[str] | None,
    manifest: str | os.PathLike[str] | None,
    modules_dir: str | os.PathLike[str] | None,
    other_kernels: Sequence[str | os.PathLike[str]],
) -> Explainer | _LaterExplainer:
    """What explains the rejections: built now when a reference or another kernel is
    to be read (a bad one refuses the run before any module is judged), else
    only once a module is refused (importing vmpatch.workflow.explain was 11 ms
    of every ``verify``, most of them accepting every module)."""
    from vmpatch.records.leaves import own_manifest

    base = Path(modules_dir) if modules_dir is not None else None
    nothing_to_read = tree is None and manifest is None and not other_kernels
    if nothing_to_read and (base is None or own_manifest(base) is None):
        return _LaterExplainer(model, base)
    from vmpatch.workflow.explain import Explainer, find_reference, other_roots

    return Explainer(
        model,
        find_reference(tree, manifest, modules_dir),
        other_roots([Path(k) for k in other_kernels]),
        base,
    )


class _LaterExplainer:
    """An :class:`~vmpatch.workflow.explain.Explainer` with no reference and no other
    kernel, made when first asked (in whichever worker process asks)."""

    def __init__(self, model: KernelModel, base: Path | None) -> None:
        self._model = model
        self._base = base
        self._explainer: Explainer | None = None

    def __call__(
        self, path: Path, data: bytes | None, verdict: VerdictKind, reason: str
    ) -> Explanation | None:
        if self._explainer is None:
            from vmpatch.workflow.explain import Explainer

            self._explainer = Explainer(self._model, None, {}, self._base)
        return self._explainer(path, data, verdict, reason)


def run_verify_system(
    root: str | os.PathLike[str] | None = None,
    kver: str | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    **options: object,
) -> VerifyReport:
    """``vmpatch verify --system``: an installed kernel (running, or under ``root``) and
    its modules, found as :func:`vmpatch.workflow.system.find_system` finds them."""
    from vmpatch.workflow.system import find_system

    found = find_system(root, kver)
    report = run_verify(
        found.image,
        modules_dir=found.modules,
        config=config if config is not None else found.config,
        runtime=found.runtime,
        **options,  # type: ignore[arg-type]
    )
    notes = list(report.assumptions)
    if found.other_images:
        others = ", ".join(str(p) for p in found.other_images)
        notes.append(f"the machine boots {found.image} (also installed for {found.kver}: {others})")
    return replace(report, system=found, assumptions=tuple(notes))


def _tree_state(
    directory: str | os.PathLike[str],
    model: KernelModel,
    results: Sequence[ModuleVerdict | FileError],
) -> str | None:
    """How far the tree was re-rooted for this kernel (vmpatch.records.leaves.tree_state)."""
    from vmpatch.records.leaves import tree_state

    proved = sum(
        1
        for r in results
        if isinstance(r, ModuleVerdict)
        and r.verdict is VerdictKind.ACCEPT
        and r.trailer.get("kind") == TrailerKind.MERKLE
    )
    return tree_state(directory, model.root if model.merkle else None, proved)
