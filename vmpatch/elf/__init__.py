# SPDX-License-Identifier: GPL-2.0-or-later
"""ELF images: the one place pyelftools is used, and where vmlinux keeps its root.

``reader`` opens any ELF read-only and translates pyelftools' exceptions;
``vmlinux`` finds ``.module_hashes`` and its symbol and decides whether an
image may be patched.
"""
