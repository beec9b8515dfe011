# SPDX-License-Identifier: GPL-2.0-or-later
"""Build small ELF files byte by byte, for both ELF classes and both byte orders.

Tests that need an ELF file no compiler makes (a minimal ET_REL module, a
vmlinux with only ``.module_hashes``, a header about to be forged) build it
here instead of hand-packing offsets, in the spirit of drgn's
``tests/elfwriter.py``. The layout is the one ``include/uapi/linux/elf.h``
defines (``Elf32_Ehdr``/``Elf64_Ehdr``, ``Elf{32,64}_Shdr``, ``Elf{32,64}_Sym``)
and every field's offset is derived from the one table of field formats
below, which :mod:`elfcorrupt` uses too to poke single fields of real images.

``tests/test_elfwriter.py`` checks every output against GNU readelf, so the
builder is independent evidence, not vmpatch's own reading of ELF.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

# e_ident, e_type, e_machine (include/uapi/linux/elf.h)
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_REL, ET_EXEC, ET_DYN = 1, 2, 3
EM_386, EM_PPC, EM_PPC64, EM_S390, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 20, 21, 22, 40, 62, 183

# sh_type, sh_flags
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS = 0, 1, 2, 3, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4

# st_info
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
SHN_UNDEF, SHN_ABS = 0, 0xFFF1

#: Each record's fields in file order, with their ``struct`` codes per class.
FIELDS: dict[str, dict[int, tuple[tuple[str, str], ...]]] = {
    "Ehdr": {
        bits: (
            ("e_ident", "16s"),
            ("e_type", "H"),
            ("e_machine", "H"),
            ("e_version", "I"),
            ("e_entry", word),
            ("e_phoff", word),
            ("e_shoff", word),
            ("e_flags", "I"),
            ("e_ehsize", "H"),
            ("e_phentsize", "H"),
            ("e_phnum", "H"),
            ("e_shentsize", "H"),
            ("e_shnum", "H"),
            ("e_shstrndx", "H"),
        )
        for bits, word in ((32, "I"), (64, "Q"))
    },
    "Shdr": {
        bits: (
            ("sh_name", "I"),
            ("sh_type", "I"),
            ("sh_flags", word),
            ("sh_addr", word),
            ("sh_offset", word),
            ("sh_size", word),
            ("sh_link", "I"),
            ("sh_info", "I"),
            ("sh_addralign", word),
            ("sh_entsize", word),
        )
        for bits, word in ((32, "I"), (64, "Q"))
    },
    "Sym": {
        32: (
            ("st_name", "I"),
            ("st_value", "I"),
            ("st_size", "I"),
            ("st_info", "B"),
            ("st_other", "B"),
            ("st_shndx", "H"),
        ),
        64: (
            ("st_name", "I"),
            ("st_info", "B"),
            ("st_other", "B"),
            ("st_shndx", "H"),
            ("st_value", "Q"),
            ("st_size", "Q"),
        ),
    },
}


def record_format(record: str, bits: int, byteorder: str) -> str:
    """The ``struct`` format of a whole ``Ehdr``/``Shdr``/``Sym`` (no padding)."""
    prefix = "<" if byteorder == "little" else ">"
    return prefix + "".join(code for _name, code in FIELDS[record][bits])


def record_size(record: str, bits: int) -> int:
    return struct.calcsize(record_format(record, bits, "little"))


def field_offset(record: str, bits: int, name: str) -> tuple[int, str]:
    """(offset inside the record, ``struct`` code) of field ``name``."""
    offset = 0
    for field_name, code in FIELDS[record][bits]:
        if field_name == name:
            return offset, code
        offset += struct.calcsize("<" + code)
    raise KeyError(f"{record} has no field {name}")


@dataclass
class Section:
    """One section to write; ``link`` may name another section."""

    name: str
    type: int = SHT_PROGBITS
    data: bytes = b""
    flags: int = 0
    addr: int = 0
    link: int | str = 0
    info: int = 0
    align: int = 1
    entsize: int = 0
    nobits_size: int = 0  # the size of an SHT_NOBITS section (it has no data)


@dataclass
class Symbol:
    """One ``.symtab`` entry; ``section`` names its section (None: SHN_UNDEF)."""

    name: str
    value: int = 0
    size: int = 0
    type: int = STT_OBJECT
    binding: int = STB_GLOBAL
    section: str | None = None


@dataclass(frozen=True)
class Form:
    """An ELF class and byte order, with a machine that uses them."""

    bits: int
    byteorder: str
    machine: int

    @property
    def id(self) -> str:
        return f"elf{self.bits}-{'le' if self.byteorder == 'little' else 'be'}"


#: The four combinations, each with a machine Linux builds for in that form.
FORMS = (
    Form(32, "little", EM_386),
    Form(64, "little", EM_X86_64),
    Form(32, "big", EM_PPC),
    Form(64, "big", EM_S390),
)


@dataclass
class Built:
    """The bytes of a built file and where everything went, for targeted edits."""

    data: bytes
    form: Form
    shoff: int
    sections: dict[str, int] = field(default_factory=dict)  # name -> section index
    offsets: dict[str, int] = field(default_factory=dict)  # name -> file offset of its data
    symbols: dict[str, int] = field(default_factory=dict)  # name -> .symtab index

    def shdr(self, name: str) -> int:
        """File offset of section ``name``'s header."""
        return self.shoff + self.sections[name] * record_size("Shdr", self.form.bits)

    def header_field(self, name: str) -> tuple[int, str]:
        """(file offset, full ``struct`` format) of an ``Ehdr`` field."""
        where, code = field_offset("Ehdr", self.form.bits, name)
        return where, ("<" if self.form.byteorder == "little" else ">") + code

    def section_field(self, section: str, name: str) -> tuple[int, str]:
        """(file offset, full ``struct`` format) of a field of ``section``'s header."""
        where, code = field_offset("Shdr", self.form.bits, name)
        return self.shdr(section) + where, ("<" if self.form.byteorder == "little" else ">") + code

    def with_field(self, offset: int, fmt: str, value: int) -> bytes:
        """A copy of the file with the field at ``offset`` set to ``value``."""
        data = bytearray(self.data)
        struct.pack_into(fmt, data, offset, value)
        return bytes(data)


class _StringTable:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self.at: dict[str, int] = {"": 0}

    def add(self, name: str) -> int:
        if name not in self.at:
            self.at[name] = len(self.data)
            self.data += name.encode() + b"\0"
        return self.at[name]


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment if alignment > 1 else value


def build_elf(
    sections: Sequence[Section],
    symbols: Sequence[Symbol] = (),
    *,
    form: Form = FORMS[1],
    e_type: int = ET_REL,
    e_machine: int | None = None,
    e_entry: int = 0,
) -> Built:
    """An ELF file of ``form`` with ``sections`` (after the null section) and ``symbols``.

    ``.symtab`` and ``.strtab`` are added when there are symbols, ``.shstrtab``
    always; locals come first in ``.symtab`` as the gABI requires. No program
    headers: readelf, pyelftools and vmpatch read sections only.
    """
    bits, order = form.bits, form.byteorder
    prefix = "<" if order == "little" else ">"
    all_sections = list(sections)
    symtab_rows: list[tuple[str, int, int, int, int]] = []  # name, value, size, info, shndx
    strtab = _StringTable()
    ordered = sorted(symbols, key=lambda s: s.binding != STB_LOCAL)
    if symbols:
        all_sections += [
            Section(".symtab", SHT_SYMTAB, link=".strtab", align=8 if bits == 64 else 4),
            Section(".strtab", SHT_STRTAB),
        ]
    all_sections.append(Section(".shstrtab", SHT_STRTAB))
    index = {s.name: i + 1 for i, s in enumerate(all_sections)}
    assert len(index) == len(all_sections), "section names must be unique"

    built = Built(b"", form, 0, sections=index)
    for number, symbol in enumerate(ordered, start=1):
        shndx = SHN_UNDEF if symbol.section is None else index[symbol.section]
        info = (symbol.binding << 4) | symbol.type
        symtab_rows.append((symbol.name, symbol.value, symbol.size, info, shndx))
        built.symbols[symbol.name] = number
    shstrtab = _StringTable()
    names = [shstrtab.add(s.name) for s in all_sections]

    sym_fmt = record_format("Sym", bits, order)
    symtab_data = bytes(record_size("Sym", bits))
    for name, value, size, info, shndx in symtab_rows:
        st_name = strtab.add(name)
        row = {"st_name": st_name, "st_value": value, "st_size": size, "st_info": info}
        row |= {"st_other": 0, "st_shndx": shndx}
        symtab_data += struct.pack(sym_fmt, *(row[n] for n, _c in FIELDS["Sym"][bits]))
    first_global = 1 + sum(1 for s in ordered if s.binding == STB_LOCAL)

    body = bytearray()
    ehsize = record_size("Ehdr", bits)
    headers = [bytes(record_size("Shdr", bits))]
    shdr_fmt = record_format("Shdr", bits, order)
    for section, sh_name in zip(all_sections, names, strict=True):
        data, info, entsize = section.data, section.info, section.entsize
        if section.name == ".symtab":
            data, info, entsize = symtab_data, first_global, record_size("Sym", bits)
        elif section.name == ".strtab" and symbols:
            data = bytes(strtab.data)
        elif section.name == ".shstrtab":
            data = bytes(shstrtab.data)
        offset = _align(ehsize + len(body), section.align)
        body += bytes(offset - ehsize - len(body))
        built.offsets[section.name] = offset
        if section.type == SHT_NOBITS:
            size = section.nobits_size
        else:
            body += data
            size = len(data)
        link = index[section.link] if isinstance(section.link, str) else section.link
        values = {
            "sh_name": sh_name,
            "sh_type": section.type,
            "sh_flags": section.flags,
            "sh_addr": section.addr,
            "sh_offset": offset,
            "sh_size": size,
            "sh_link": link,
            "sh_info": info,
            "sh_addralign": section.align,
            "sh_entsize": entsize,
        }
        headers.append(struct.pack(shdr_fmt, *(values[n] for n, _c in FIELDS["Shdr"][bits])))
    shoff = _align(ehsize + len(body), 8 if bits == 64 else 4)
    body += bytes(shoff - ehsize - len(body))
    ident = b"\x7fELF" + bytes(
        [
            ELFCLASS64 if bits == 64 else ELFCLASS32,
            ELFDATA2LSB if order == "little" else ELFDATA2MSB,
        ]
    )
    ident += bytes([1])  # EI_VERSION: EV_CURRENT
    header = {
        "e_ident": ident.ljust(16, b"\0"),
        "e_type": e_type,
        "e_machine": form.machine if e_machine is None else e_machine,
        "e_version": 1,
        "e_entry": e_entry,
        "e_phoff": 0,
        "e_shoff": shoff,
        "e_flags": 0,
        "e_ehsize": ehsize,
        "e_phentsize": 0,
        "e_phnum": 0,
        "e_shentsize": record_size("Shdr", bits),
        "e_shnum": len(headers),
        "e_shstrndx": index[".shstrtab"],
    }
    ehdr = struct.pack(
        prefix + "".join(c for _n, c in FIELDS["Ehdr"][bits]),
        *(header[n] for n, _c in FIELDS["Ehdr"][bits]),
    )
    built.data = ehdr + bytes(body) + b"".join(headers)
    built.shoff = shoff
    return built
