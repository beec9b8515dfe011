# SPDX-License-Identifier: GPL-2.0-or-later
"""Read-only ELF access for vmlinux images: header, section table and ``.symtab``.

The three tables vmpatch reads have fixed layouts (``Elf32_Ehdr``/``Elf64_Ehdr``,
``Elf*_Shdr`` and ``Elf*_Sym`` of include/uapi/linux/elf.h), so they are
decoded here with :mod:`struct`, every field bounded by the file before it is
used. pyelftools did this until a measurement showed it was the bottleneck of
``vmpatch patch``: importing ``elftools.elf.elffile`` took 35-48 ms
(``python -X importtime``; it loads construct, the DWARF decoders and pdb)
of a run whose whole budget is a tenth of ``objcopy --update-section`` on a
400 MB vmlinux (issue 12), and its per-name symbol lookup decodes every
symbol through construct (over a second for a real vmlinux with ~28,000
symbols). pyelftools stays the authority for what it knows best, the names
of ``e_machine`` values, loaded only when a report asks for the machine;
``tests/test_elf_reader.py`` checks every decoded field against readelf and
pyelftools on real images of every class and byte order.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from vmpatch.elf.constants import ELF_MAGIC, ElfType, SectionFlag, section_type_name
from vmpatch.errors import InputError, SystemFailure
from vmpatch.frozen import frozen
from vmpatch.records.root import ByteOrder

__all__ = [
    "ElfIdentity",
    "ElfReader",
    "SectionInfo",
    "SymbolInfo",
    "machine_name",
    "open_elf",
    "open_elf_bytes",
]

#: Elf32_Ehdr / Elf64_Ehdr after e_ident: e_type, e_machine, e_version, e_entry,
#: e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize,
#: e_shnum, e_shstrndx.
_EHDR = {32: "HHIIIIIHHHHHH", 64: "HHIQQQIHHHHHH"}
#: Elf32_Shdr / Elf64_Shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset,
#: sh_size, sh_link, sh_info, sh_addralign, sh_entsize.
_SHDR = {32: "IIIIIIIIII", 64: "IIQQQQIIQQ"}
#: Elf32_Sym: st_name, st_value, st_size, st_info, st_other, st_shndx;
#: Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size.
_SYM_LAYOUT = {32: "IIIBBH", 64: "IBBHQQ"}
_EI_NIDENT = 16
#: e_shstrndx when the real index is in section 0's sh_link (include/uapi/linux/elf.h).
_SHN_XINDEX = 0xFFFF


@frozen
class ElfIdentity:
    """What kind of ELF file this is: the facts `inspect` reports."""

    machine_value: int  # e_machine
    elfclass: int  # 32 or 64
    byteorder: ByteOrder
    elftype: ElfType | int  # an int only for an e_type the specification does not name

    @property
    def machine(self) -> str:
        """pyelftools' name of ``e_machine`` (``EM_X86_64``), or the number unnamed."""
        return machine_name(self.machine_value)


def machine_name(value: int) -> str:
    """The ``EM_*`` name pyelftools gives ``e_machine`` ``value``; the number if it has none."""
    from elftools.elf.enums import ENUM_E_MACHINE

    for name, number in ENUM_E_MACHINE.items():
        if number == value and name != "_default_":
            return name
    return str(value)


@frozen
class SectionInfo:
    """One section header, decoded."""

    index: int
    name: str
    type_value: int  # sh_type; SectionType names the generic ones
    flags: int
    addr: int
    offset: int
    size: int
    addralign: int
    link: int = 0

    @property
    def type(self) -> str:
        """``SHT_PROGBITS`` and the like, or the value in hex for a type without a name."""
        return section_type_name(self.type_value)

    @property
    def flags_text(self) -> str:
        """readelf's letters for the common flags (W, A, X)."""
        letters = [
            ("W", SectionFlag.SHF_WRITE),
            ("A", SectionFlag.SHF_ALLOC),
            ("X", SectionFlag.SHF_EXECINSTR),
        ]
        return "".join(letter for letter, bit in letters if self.flags & bit)


@frozen
class SymbolInfo:
    """One symbol table entry, decoded."""

    name: str
    value: int
    size: int
    type: int  # STT_*
    shndx: int


def _elf_type(value: int) -> ElfType | int:
    try:
        return ElfType(value)
    except ValueError:
        return value


class ElfReader:
    """An open ELF file: identity, sections, and fast symbol lookup.

    The constructor decodes the ELF header and the whole section header table
    (a vmlinux has about fifty entries); names come from the section name
    table when asked for.
    """

    def __init__(self, path: Path, stream: BinaryIO) -> None:
        self.path = path
        self._stream = stream
        self.file_size = _stream_size(stream)
        ident = self.read(0, min(_EI_NIDENT, self.file_size), what="the ELF identification")
        if ident[: len(ELF_MAGIC)] != ELF_MAGIC:
            raise InputError(path, "not an ELF file")
        if len(ident) < _EI_NIDENT:
            raise InputError(
                path, f"truncated: {self.file_size} bytes, not even an ELF identification"
            )
        if ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise InputError(path, f"malformed ELF: class {ident[4]}, data encoding {ident[5]}")
        elfclass = 32 if ident[4] == 1 else 64
        byteorder: ByteOrder = "little" if ident[5] == 1 else "big"
        self._prefix = "<" if byteorder == "little" else ">"
        ehdr = struct.Struct(self._prefix + _EHDR[elfclass])
        if self.file_size < _EI_NIDENT + ehdr.size:
            raise InputError(
                path,
                f"truncated: the ELF header needs {_EI_NIDENT + ehdr.size} bytes, "
                f"file has {self.file_size}",
            )
        fields = ehdr.unpack(self.read(_EI_NIDENT, ehdr.size))
        self.identity = ElfIdentity(
            machine_value=fields[1],
            elfclass=elfclass,
            byteorder=byteorder,
            elftype=_elf_type(fields[0]),
        )
        self._headers = self._section_headers(
            elfclass, fields[5], fields[10], fields[11], fields[12]
        )
        self._names: bytes | None = None

    def _section_headers(
        self, elfclass: int, shoff: int, shentsize: int, shnum: int, shstrndx: int
    ) -> list[tuple[int, ...]]:
        """Every ``Elf*_Shdr`` as a tuple; sets the index of the section name table.

        With 0xff00 sections or more, ``e_shnum`` is 0 and the count is section
        0's ``sh_size``, and ``e_shstrndx`` is SHN_XINDEX with the index in its
        ``sh_link`` (the ELF gABI's extended numbering, include/uapi/linux/elf.h).
        """
        shdr = struct.Struct(self._prefix + _SHDR[elfclass])
        self._shdr_at = shoff
        self._shentsize = shentsize
        if shoff == 0 or (shnum == 0 and shstrndx != _SHN_XINDEX and shentsize < shdr.size):
            self._shstrndx = 0  # no section header table to read
            return []
        if shentsize < shdr.size:
            raise InputError(
                self.path, f"malformed ELF: section header entries of {shentsize} bytes"
            )
        if shnum == 0 or shstrndx == _SHN_XINDEX:
            first = shdr.unpack(self.read(shoff, shdr.size, what="section header 0"))
            shnum = shnum or first[5]
            shstrndx = first[6] if shstrndx == _SHN_XINDEX else shstrndx
        end = shoff + shentsize * shnum
        if end > self.file_size:
            raise InputError(
                self.path,
                f"truncated: section headers end at {end:#x}, file has {self.file_size:#x} bytes",
            )
        table = self.read(shoff, shentsize * shnum)
        headers = [shdr.unpack_from(table, i * shentsize) for i in range(shnum)]
        if shstrndx >= shnum:
            raise InputError(
                self.path, f"malformed ELF: e_shstrndx {shstrndx} names no section (of {shnum})"
            )
        self._shstrndx = shstrndx
        if shstrndx:
            names = headers[shstrndx]
            if names[4] + names[5] > self.file_size:
                raise InputError(self.path, "truncated: the section name table lies beyond the end")
        return headers

    @property
    def section_count(self) -> int:
        return len(self._headers)

    def _name(self, index: int) -> str:
        """Section ``index``'s name from the section name table ("" when there is none)."""
        if not self._shstrndx:
            return ""
        if self._names is None:
            names = self._headers[self._shstrndx]
            self._names = self.read(names[4], names[5], what="the section name table")
        at = self._headers[index][0]
        if at >= len(self._names):
            raise InputError(
                self.path,
                f"malformed ELF: section {index}'s name (at {at}) lies outside the "
                f"section name table ({len(self._names)} bytes)",
            )
        end = self._names.find(b"\0", at)
        return self._names[at : end if end >= 0 else len(self._names)].decode("utf-8", "replace")

    def section(self, name: str) -> SectionInfo | None:
        """The first section called ``name``, or None."""
        for index in range(len(self._headers)):
            if self._name(index) == name:
                return self.section_at(index)
        return None

    def section_at(self, index: int) -> SectionInfo:
        """Section header ``index``; InputError if the table has no such entry."""
        if not 0 <= index < len(self._headers):
            raise InputError(
                self.path, f"malformed ELF: no section {index} (of {len(self._headers)})"
            )
        fields = self._headers[index]
        return SectionInfo(
            index=index,
            name=self._name(index),
            type_value=fields[1],
            flags=fields[2],
            addr=fields[3],
            offset=fields[4],
            size=fields[5],
            addralign=fields[8],
            link=fields[6],
        )

    def read(self, offset: int, size: int, *, what: str | None = None) -> bytes:
        """``size`` bytes at file ``offset``; InputError if the file is shorter.

        The bound is checked before reading: header fields are untrusted, and
        a forged size must not become a huge allocation.
        """
        if offset < 0 or size < 0 or offset + size > self.file_size:
            raise InputError(
                self.path,
                f"truncated or malformed: {size} bytes at offset {offset:#x}"
                + (f" ({what})" if what else "")
                + f" lie beyond the end of the file ({self.file_size:#x} bytes)",
            )
        if isinstance(self._stream, io.BytesIO):  # an ELF unpacked from a boot image
            data = self._stream.getbuffer()[offset : offset + size].tobytes()
        else:
            try:
                data = os.pread(self._stream.fileno(), size, offset)
            except OSError as err:
                raise SystemFailure.from_oserror(self.path, err, "read") from err
        if len(data) != size:
            raise InputError(self.path, f"truncated: {size} bytes at offset {offset:#x} needed")
        return data

    def find_symbols(self, name: str) -> list[SymbolInfo]:
        """Every ``.symtab`` entry called ``name`` (usually zero or one).

        Searches the raw bytes: each offset of the name in the string table,
        then entries whose ``st_name`` equals it. Far faster than decoding every
        symbol, and exact: a match must sit on an entry boundary.
        """
        symtab = self.section(".symtab")
        if symtab is None:
            return []
        entsize = self._headers[symtab.index][9] or (24 if self.identity.elfclass == 64 else 16)
        strtab_header = self.section_at(symtab.link)
        strtab = self.read(strtab_header.offset, strtab_header.size, what="the symbol names")
        table = self.read(symtab.offset, symtab.size, what="the symbol table")
        layout = struct.Struct(self._prefix + _SYM_LAYOUT[self.identity.elfclass])
        if entsize < layout.size:
            raise InputError(self.path, f"malformed ELF: .symtab entries of {entsize} bytes")
        st_name_field = struct.Struct(self._prefix + "I")
        wanted = name.encode() + b"\0"
        found: list[SymbolInfo] = []
        # GNU ld merges string tails: the name may start inside a longer string
        # ("xmodule_hashes_root\0"), so every occurrence is a candidate st_name.
        hit = strtab.find(wanted, 1)
        while hit >= 0:
            needle = st_name_field.pack(hit)
            at = table.find(needle)
            while at >= 0:
                if at % entsize == 0 and at + layout.size <= len(table):
                    found.append(self._symbol(name, layout.unpack_from(table, at)))
                at = table.find(needle, at + 1)
            hit = strtab.find(wanted, hit + 1)
        return found

    def _symbol(self, name: str, fields: tuple[int, ...]) -> SymbolInfo:
        if self.identity.elfclass == 64:
            _, info, _, shndx, value, size = fields
        else:
            _, value, size, info, _, shndx = fields
        return SymbolInfo(name=name, value=value, size=size, type=info & 0xF, shndx=shndx)


def _stream_size(stream: BinaryIO) -> int:
    if isinstance(stream, io.BytesIO):
        return stream.getbuffer().nbytes
    return os.fstat(stream.fileno()).st_size


@contextmanager
def open_elf(path: str | os.PathLike[str]) -> Iterator[ElfReader]:
    """Open ``path`` as ELF; InputError if it is not one, SystemFailure if it cannot be read."""
    from vmpatch.fs.atomic import open_input

    path = Path(path)
    try:
        stream = open_input(path)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from err
    with stream:
        try:
            reader = ElfReader(path, stream)
        except OSError as err:
            raise SystemFailure.from_oserror(path, err, "read") from err
        yield reader


@contextmanager
def open_elf_bytes(path: str | os.PathLike[str], data: bytes) -> Iterator[ElfReader]:
    """Read ``data`` (an ELF unpacked from the boot image ``path``) as :func:`open_elf` does.

    Errors name ``path``, the file the user gave.
    """
    yield ElfReader(Path(path), io.BytesIO(data))
