# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify``: judge module files against a vmlinux, as the kernel will.

Builds the :class:`~vmpatch.verdict.KernelModel` from the image (its root, and
whether it can check PKCS#7 signatures at all) and runs
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
from dataclasses import dataclass
from pathlib import Path

from vmpatch.elf.reader import open_elf
from vmpatch.elf.vmlinux import SECTION_NAME, locate_in, root_of
from vmpatch.errors import InputError
from vmpatch.ko.kdecompress import LoadPath
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.verdict import KernelModel, Pkcs7Support, Verdict, kernel_verdict, load_refused

__all__ = [
    "FileVerdict",
    "LoadPath",
    "assumptions",
    "kernel_model",
    "modules_of_build_dir",
    "verify_files",
]

#: A symbol only a kernel with CONFIG_MODULE_SIG links (kernel/module/signing.c).
#: Not verify_pkcs7_signature: SYSTEM_DATA_VERIFICATION brings it without MODULE_SIG.
_MODULE_SIG_SYMBOLS = ("module_sig_check",)


@dataclass(frozen=True)
class FileVerdict:
    path: Path
    verdict: Verdict
    load_path: LoadPath = LoadPath.PLAIN


def kernel_model(
    vmlinux: str | os.PathLike[str], config: str | os.PathLike[str] | None = None
) -> KernelModel:
    """The root of ``vmlinux``, whether it has module signing, and what ``config`` says.

    An image without ``.module_hashes`` is a kernel without MODULE_HASHES:
    it still has a verdict for every module (a Merkle proof is ENOPKG there).
    ``config`` (a .config, /boot/config-*, or a build tree) adds
    MODULE_DECOMPRESS and its codec, MODULE_SIG_FORCE and the xz BCJ filters,
    and answers MODULE_SIG where the image has no symbols.
    """
    with open_elf(vmlinux) as reader:  # one open: root and symbols from the same file
        has_hashes = reader.section(SECTION_NAME) is not None
        root = root_of(locate_in(reader)) if has_hashes else ModuleHashesRoot.placeholder()
        if reader.section(".symtab") is None:
            pkcs7 = Pkcs7Support.UNKNOWN
        elif any(reader.find_symbols(name) for name in _MODULE_SIG_SYMBOLS):
            pkcs7 = Pkcs7Support.YES
        else:
            pkcs7 = Pkcs7Support.NO
    if config is None:
        return KernelModel(root=root, merkle=has_hashes, pkcs7=pkcs7)
    from vmpatch.ko.kdecompress import XzFilters
    from vmpatch.records.kconfig import read_config

    cfg = read_config(config)
    if cfg.enabled("CONFIG_MODULE_HASHES") != has_hashes:
        said = "sets" if cfg.enabled("CONFIG_MODULE_HASHES") else "does not set"
        has = "has" if has_hashes else "has no"
        raise InputError(
            cfg.path,
            f"{said} CONFIG_MODULE_HASHES but {vmlinux} {has} {SECTION_NAME} section "
            "(is it this kernel's config?)",
        )
    config_sig = Pkcs7Support.YES if cfg.enabled("CONFIG_MODULE_SIG") else Pkcs7Support.NO
    if pkcs7 is not Pkcs7Support.UNKNOWN and pkcs7 is not config_sig:
        raise InputError(
            cfg.path,
            f"CONFIG_MODULE_SIG is {config_sig.value} but {vmlinux} says {pkcs7.value} "
            "(is it this kernel's config?)",
        )
    return KernelModel(
        root=root,
        merkle=has_hashes,
        pkcs7=config_sig,
        decompress=cfg.module_decompress,
        sig_force=cfg.enabled("CONFIG_MODULE_SIG_FORCE"),
        xz_bcj=XzFilters.from_options(cfg.enabled).bcj,
        config=str(cfg.path),
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


def modules_of_build_dir(
    build_dir: str | os.PathLike[str], suffix: str | None = None
) -> list[Path]:
    """The module files a build tree's modules.order names, in order."""
    from vmpatch.workflow.tree import plan_tree

    plan = plan_tree(build_dir, suffix=suffix)
    return [m.module for m in plan.modules]


def verify_files(
    kernel: KernelModel,
    paths: Sequence[Path],
    *,
    max_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    load_path: LoadPath | None = None,
) -> list[FileVerdict]:
    """The kernel's verdict for every module file, in the order given.

    ``load_path`` forces the loading path of compressed modules (None: as kmod
    chooses it, see :func:`assumptions`).
    """
    from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED
    from vmpatch.merkle import default_workers

    limit = DEFAULT_MAX_DECOMPRESSED if max_size is None else max_size

    def judge(path: Path) -> FileVerdict:
        chosen, view = kernel_view(path, kernel, max_size=limit, load_path=load_path)
        if isinstance(view, Verdict):
            return FileVerdict(path, view, chosen)
        return FileVerdict(path, kernel_verdict(view, kernel), chosen)

    results = []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done, result in enumerate(pool.map(judge, paths), start=1):
            results.append(result)
            if progress:
                progress(done)
    return results
