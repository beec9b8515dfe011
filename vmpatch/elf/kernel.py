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
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.verdict import KernelModel, Pkcs7Support

__all__ = ["kernel_model"]

#: A symbol only a kernel with CONFIG_MODULE_SIG links (kernel/module/signing.c).
#: Not verify_pkcs7_signature: SYSTEM_DATA_VERIFICATION brings it without MODULE_SIG.
_MODULE_SIG_SYMBOLS = ("module_sig_check",)


def kernel_model(vmlinux: str | os.PathLike[str]) -> KernelModel:
    """The root of ``vmlinux`` and whether it has module signing.

    An image without ``.module_hashes`` is a kernel without MODULE_HASHES:
    it still has a verdict for every module (a Merkle proof is ENOPKG there,
    kernel/module/auth.c). A section that holds no valid root is an error,
    as for ``patch``.
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
    return KernelModel(root=root, merkle=has_hashes, pkcs7=pkcs7)
