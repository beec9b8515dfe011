# SPDX-License-Identifier: GPL-2.0-or-later
"""What a vmlinux image decides about modules: the one way to build its kernel model.

``vmpatch verify`` and every append that is checked against a kernel
(``ko append --kernel``, ``ko append-tree --kernel``, ``vmpatch-ko-append
--kernel``) judge modules through :func:`kernel_model`, so an append never
refuses a kernel that ``verify`` would judge, nor judges it differently.
"""

from __future__ import annotations

import os

from vmpatch.elf.reader import open_elf
from vmpatch.elf.vmlinux import SECTION_NAME, locate_in, root_of
from vmpatch.errors import InputError
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.verdict import KernelModel, Pkcs7Support

__all__ = ["kernel_model"]

#: A symbol only a kernel with CONFIG_MODULE_SIG links (kernel/module/signing.c).
#: Not verify_pkcs7_signature: SYSTEM_DATA_VERIFICATION brings it without MODULE_SIG.
_MODULE_SIG_SYMBOLS = ("module_sig_check",)


def kernel_model(
    vmlinux: str | os.PathLike[str], config: str | os.PathLike[str] | None = None
) -> KernelModel:
    """The root of ``vmlinux``, whether it has module signing, and what ``config`` says.

    An image without ``.module_hashes`` is a kernel without MODULE_HASHES:
    it still has a verdict for every module (a Merkle proof is ENOPKG there,
    kernel/module/auth.c). A section that holds no valid root is an error,
    as for ``patch``. ``config`` (a .config, /boot/config-*, or a build
    tree) adds MODULE_DECOMPRESS and its codec, MODULE_SIG_FORCE and the xz
    BCJ filters, and answers MODULE_SIG where the image has no symbols.
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
