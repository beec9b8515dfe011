# SPDX-License-Identifier: GPL-2.0-or-later
"""What a vmlinux ELF decides about modules, and what its config adds.

The one builder of the kernel model for any image is
:func:`vmpatch.boot.kernel.kernel_model` (a vmlinux, or a boot image through
the boot/ readers); ``vmpatch verify`` and every append checked against a
kernel go through it, so an append never refuses a kernel that ``verify``
would judge, nor judges it differently. This module holds its ELF half and
the config half both kinds share.
"""

from __future__ import annotations

import os

from vmpatch.elf.identify import require_kernel
from vmpatch.elf.reader import ElfReader
from vmpatch.elf.vmlinux import SECTION_NAME, locate_in, root_of
from vmpatch.errors import InputError
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.verdict import KernelModel, Pkcs7Support

__all__ = ["elf_kernel_model", "with_config"]

#: A symbol only a kernel with CONFIG_MODULE_SIG links (kernel/module/signing.c).
#: Not verify_pkcs7_signature: SYSTEM_DATA_VERIFICATION brings it without MODULE_SIG.
_MODULE_SIG_SYMBOLS = ("module_sig_check",)


def elf_kernel_model(reader: ElfReader) -> KernelModel:
    """The root of an open vmlinux and whether it has module signing.

    A module, a program or a core file is refused first (``require_kernel``).
    An image without ``.module_hashes`` is a kernel without MODULE_HASHES:
    it still has a verdict for every module (a Merkle proof is ENOPKG there,
    kernel/module/auth.c). A section that holds no valid root is an error,
    as for ``patch``.
    """
    require_kernel(reader)
    has_hashes = reader.section(SECTION_NAME) is not None
    root = root_of(locate_in(reader)) if has_hashes else ModuleHashesRoot.placeholder()
    if reader.section(".symtab") is None:
        pkcs7 = Pkcs7Support.UNKNOWN
    elif any(reader.find_symbols(name) for name in _MODULE_SIG_SYMBOLS):
        pkcs7 = Pkcs7Support.YES
    else:
        pkcs7 = Pkcs7Support.NO
    return KernelModel(root=root, merkle=has_hashes, pkcs7=pkcs7)


def with_config(
    model: KernelModel, image: str | os.PathLike[str], config: str | os.PathLike[str]
) -> KernelModel:
    """``model`` completed by the kernel's config: MODULE_DECOMPRESS and its codec,
    MODULE_SIG_FORCE, the xz BCJ filters, and MODULE_SIG where the image has no
    symbols. A config that contradicts the image is refused (another kernel's)."""
    from vmpatch.ko.kdecompress import XzFilters
    from vmpatch.records.kconfig import read_config

    cfg = read_config(config)
    if cfg.enabled("CONFIG_MODULE_HASHES") != model.merkle:
        said = "sets" if cfg.enabled("CONFIG_MODULE_HASHES") else "does not set"
        has = "has" if model.merkle else "has no"
        raise InputError(
            cfg.path,
            f"{said} CONFIG_MODULE_HASHES but {image} {has} {SECTION_NAME} section "
            "(is it this kernel's config?)",
        )
    config_sig = Pkcs7Support.YES if cfg.enabled("CONFIG_MODULE_SIG") else Pkcs7Support.NO
    if model.pkcs7 is not Pkcs7Support.UNKNOWN and model.pkcs7 is not config_sig:
        raise InputError(
            cfg.path,
            f"CONFIG_MODULE_SIG is {config_sig.value} but {image} says {model.pkcs7.value} "
            "(is it this kernel's config?)",
        )
    return KernelModel(
        root=model.root,
        merkle=model.merkle,
        pkcs7=config_sig,
        decompress=cfg.module_decompress,
        sig_force=cfg.enabled("CONFIG_MODULE_SIG_FORCE"),
        xz_bcj=XzFilters.from_options(cfg.enabled).bcj,
        config=str(cfg.path),
    )
