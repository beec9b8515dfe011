# SPDX-License-Identifier: GPL-2.0-or-later
"""vmpatch: post-build vmlinux patcher and ELF toolkit for hash-based module authentication.

The library does the work; :mod:`vmpatch.cli` is a thin client of it. Submodules
are imported on use so that ``import vmpatch`` stays cheap (the modules_install
hook runs once per module, thousands of times per kernel).
"""

__version__ = "0.1.0"

#: The on-disk format this version reads and writes: the v5 series
#: "module: Introduce hash-based integrity checking", SHA-256 only.
FORMAT_VERSION = "module-hashes-v5-sha256"

__all__ = ["FORMAT_VERSION", "__version__"]
