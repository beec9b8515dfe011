# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify``: judge module files against a vmlinux, as the kernel will.

Builds the :class:`~vmpatch.verdict.KernelModel` from the image (its root, and
whether it can check PKCS#7 signatures at all) and runs
:func:`~vmpatch.verdict.kernel_verdict` over each module's kernel-visible bytes
(decompressed for ``.ko.gz``/``.ko.xz``/``.ko.zst``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vmpatch.elf.reader import open_elf
from vmpatch.elf.vmlinux import SECTION_NAME, locate_in, root_of
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.verdict import KernelModel, Pkcs7Support, Verdict, kernel_verdict

__all__ = ["FileVerdict", "kernel_model", "modules_of_build_dir", "verify_files"]

#: A symbol only a kernel with CONFIG_MODULE_SIG links (kernel/module/signing.c).
#: Not verify_pkcs7_signature: SYSTEM_DATA_VERIFICATION brings it without MODULE_SIG.
_MODULE_SIG_SYMBOLS = ("module_sig_check",)


@dataclass(frozen=True)
class FileVerdict:
    path: Path
    verdict: Verdict


def kernel_model(vmlinux: str | os.PathLike[str]) -> KernelModel:
    """The root of ``vmlinux`` and whether it has module signing.

    An image without ``.module_hashes`` is a kernel without MODULE_HASHES:
    it still has a verdict for every module (a Merkle proof is ENOPKG there).
    """
    from vmpatch.elf.kernel import require_kernel

    if not _is_elf(vmlinux):
        return _boot_image_model(vmlinux)
    with open_elf(vmlinux) as reader:  # one open: root and symbols from the same file
        require_kernel(reader)  # a module or a program given as --kernel is refused
        has_hashes = reader.section(SECTION_NAME) is not None
        root = root_of(locate_in(reader)) if has_hashes else ModuleHashesRoot.placeholder()
        if reader.section(".symtab") is None:
            pkcs7 = Pkcs7Support.UNKNOWN
        elif any(reader.find_symbols(name) for name in _MODULE_SIG_SYMBOLS):
            pkcs7 = Pkcs7Support.YES
        else:
            pkcs7 = Pkcs7Support.NO
    return KernelModel(root=root, merkle=has_hashes, pkcs7=pkcs7)


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
) -> list[FileVerdict]:
    """The kernel's verdict for every module file, in the order given."""
    from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED, read_module
    from vmpatch.merkle import default_workers

    limit = DEFAULT_MAX_DECOMPRESSED if max_size is None else max_size

    def judge(path: Path) -> FileVerdict:
        content = read_module(path, max_size=limit)
        return FileVerdict(path, kernel_verdict(content.data, kernel))

    results = []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done, result in enumerate(pool.map(judge, paths), start=1):
            results.append(result)
            if progress:
                progress(done)
    return results
