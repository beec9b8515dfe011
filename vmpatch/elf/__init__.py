# SPDX-License-Identifier: GPL-2.0-or-later
"""ELF images: their header tables, and where vmlinux keeps its root.

``reader`` opens any ELF read-only and decodes its header, section table
and ``.symtab`` (with struct: faster to start than pyelftools);
``vmlinux`` finds ``.module_hashes`` and its symbol and decides whether an
image may be patched.
"""
