# SPDX-License-Identifier: GPL-2.0-or-later
"""The ELF constants vmpatch uses, once, as enums (include/uapi/linux/elf.h).

Members are named exactly as the ELF specification, readelf and pyelftools
spell them (``ET_REL``, ``SHT_NOBITS``, ``SHF_ALLOC``), so ``.name`` is the
text a report shows and ``int()`` the value a header holds: one definition
for comparisons with raw header fields and for what ``inspect`` prints.
Standard library only: the lean ``ko/`` layer may import it.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = ["ELF_MAGIC", "ElfType", "SectionFlag", "SectionType", "section_type_name"]

#: ``ELFMAG``: the four bytes every ELF file starts with (``e_ident[EI_MAG0..3]``).
ELF_MAGIC = b"\x7fELF"


class ElfType(IntEnum):
    """``e_type``: what kind of object the file is."""

    ET_NONE = 0
    ET_REL = 1  # every .ko
    ET_EXEC = 2  # vmlinux
    ET_DYN = 3
    ET_CORE = 4


class SectionType(IntEnum):
    """``sh_type`` values of the generic ABI (processor- and OS-specific ones are not named)."""

    SHT_NULL = 0
    SHT_PROGBITS = 1
    SHT_SYMTAB = 2
    SHT_STRTAB = 3
    SHT_RELA = 4
    SHT_HASH = 5
    SHT_DYNAMIC = 6
    SHT_NOTE = 7
    SHT_NOBITS = 8  # no bytes in the file: nothing to patch
    SHT_REL = 9
    SHT_SHLIB = 10
    SHT_DYNSYM = 11
    SHT_INIT_ARRAY = 14
    SHT_FINI_ARRAY = 15
    SHT_PREINIT_ARRAY = 16
    SHT_GROUP = 17
    SHT_SYMTAB_SHNDX = 18


class SectionFlag(IntFlag):
    """The ``sh_flags`` bits vmpatch looks at (readelf's W, A and X)."""

    SHF_WRITE = 0x1
    SHF_ALLOC = 0x2
    SHF_EXECINSTR = 0x4


def section_type_name(value: int) -> str:
    """``SHT_PROGBITS`` for a generic type, else the value in hex (``0x6ffffff6``)."""
    try:
        return SectionType(value).name
    except ValueError:
        return f"{value:#x}"
