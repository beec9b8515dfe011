# SPDX-License-Identifier: GPL-2.0-or-later
"""Read-only ELF access for vmlinux images, through pyelftools.

This is the one choke point where pyelftools is called for kernel images:
its exceptions (``ELFError``, ``ELFParseError``, construct and struct errors)
are translated into :class:`vmpatch.errors.InputError` naming the file by
:func:`vmpatch.elf.translate.elf_errors`, the one translator.

pyelftools parses headers lazily, which keeps a 500 MB ``vmlinux.unstripped``
cheap to open. Its per-name symbol lookup, however, decodes every symbol
through construct (over a second for a real vmlinux with ~28,000 symbols), so
:func:`find_symbol` searches the raw ``.symtab`` bytes instead.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from vmpatch.elf.constants import ELF_MAGIC, ElfType, SectionFlag, section_type_name
from vmpatch.elf.translate import elf_errors
from vmpatch.errors import InputError, SystemFailure
from vmpatch.records.root import ByteOrder

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

__all__ = [
    "ElfIdentity",
    "ElfReader",
    "SectionInfo",
    "SymbolInfo",
    "open_elf",
    "open_elf_bytes",
]


# Elf32_Sym / Elf64_Sym, without the byte-order prefix (include/uapi/linux/elf.h).
# Elf32_Sym: st_name, st_value, st_size, st_info, st_other, st_shndx
# Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size
_SYM_LAYOUT = {32: "IIIBBH", 64: "IBBHQQ"}


@dataclass(frozen=True)
class ElfIdentity:
    """What kind of ELF file this is: the facts `inspect` reports."""

    machine: str  # pyelftools' e_machine name, e.g. "EM_X86_64"
    elfclass: int  # 32 or 64
    byteorder: ByteOrder
    elftype: ElfType | int  # an int only for an e_type the specification does not name


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
    """An open ELF file: identity, sections, and fast symbol lookup."""

    def __init__(self, path: Path, stream: BinaryIO, elffile: ELFFile) -> None:
        self.path = path
        self._stream = stream
        self._elf = elffile
        byteorder: ByteOrder = "little" if elffile.little_endian else "big"
        self.identity = ElfIdentity(
            machine=str(elffile["e_machine"]),
            elfclass=int(elffile.elfclass),
            byteorder=byteorder,
            elftype=_elf_type(int.from_bytes(self.read(16, 2), byteorder)),
        )

    def section(self, name: str) -> SectionInfo | None:
        """The section called ``name``, or None."""
        with elf_errors(self.path):
            for index, sec in enumerate(self._elf.iter_sections()):
                if sec.name == name:
                    return self._info(index, sec)
        return None

    def _info(self, index: int, sec: object) -> SectionInfo:
        header = sec.header  # type: ignore[attr-defined]
        # sh_type as the header holds it (4 bytes after sh_name in both classes):
        # pyelftools hands out names, and its names of processor types vary by version.
        at = int(self._elf["e_shoff"]) + index * int(self._elf["e_shentsize"]) + 4
        type_value = int.from_bytes(self.read(at, 4), self.identity.byteorder)
        return SectionInfo(
            index=index,
            name=sec.name,  # type: ignore[attr-defined]
            type_value=type_value,
            flags=int(header["sh_flags"]),
            addr=int(header["sh_addr"]),
            offset=int(header["sh_offset"]),
            size=int(header["sh_size"]),
            addralign=int(header["sh_addralign"]),
        )

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at file ``offset``; InputError if the file is shorter.

        The bound is checked before reading: header fields are untrusted, and
        a forged size must not become a huge allocation.
        """
        if offset < 0 or size < 0 or offset + size > self.file_size:
            raise InputError(
                self.path,
                f"truncated or malformed: {size} bytes at offset {offset:#x} "
                f"lie beyond the end of the file ({self.file_size:#x} bytes)",
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
        with elf_errors(self.path):
            symtab = self._elf.get_section_by_name(".symtab")
            if symtab is None:
                return []
            strtab_header = self._elf.get_section(symtab["sh_link"]).header
            entsize = int(symtab["sh_entsize"]) or (24 if self.identity.elfclass == 64 else 16)
            strtab = self.read(int(strtab_header["sh_offset"]), int(strtab_header["sh_size"]))
            table = self.read(int(symtab["sh_offset"]), int(symtab["sh_size"]))
        prefix = "<" if self.identity.byteorder == "little" else ">"
        layout = struct.Struct(prefix + _SYM_LAYOUT[self.identity.elfclass])
        st_name_field = struct.Struct(prefix + "I")
        wanted = name.encode() + b"\0"
        found: list[SymbolInfo] = []
        # GNU ld merges string tails: the name may start inside a longer string
        # ("xmodule_hashes_root\0"), so every occurrence is a candidate st_name.
        hit = strtab.find(wanted, 1)
        while hit >= 0:
            needle = st_name_field.pack(hit)
            at = table.find(needle)
            while at >= 0:
                if at % entsize == 0:
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

    @property
    def file_size(self) -> int:
        return _stream_size(self._stream)


def _stream_size(stream: BinaryIO) -> int:
    if isinstance(stream, io.BytesIO):
        return stream.getbuffer().nbytes
    return os.fstat(stream.fileno()).st_size


# Elf32_Ehdr / Elf64_Ehdr after e_ident: the fields that say where the tables are.
_EHDR = {32: "HHIIIIIHHHHHH", 64: "HHIQQQIHHHHHH"}
_SHDR_OFFSET_SIZE = {32: ("IIIIII", 4, 5), 64: ("IIQQQQ", 4, 5)}  # sh_offset, sh_size indexes
_SHDR_SIZE = {32: 40, 64: 64}  # sizeof(Elf32_Shdr), sizeof(Elf64_Shdr)


def _check_extent(path: Path, stream: BinaryIO) -> None:
    """Name truncation plainly, before pyelftools reports it in its own terms.

    Checks that the ELF header, the section header table and the section name
    table lie inside the file; anything subtler is left to pyelftools.
    """
    size = _stream_size(stream)
    ident = stream.read(16)
    if len(ident) < len(ELF_MAGIC) or ident[: len(ELF_MAGIC)] != ELF_MAGIC:
        raise InputError(path, "not an ELF file")
    if len(ident) < 16 or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        if len(ident) < 16:
            raise InputError(path, f"truncated: {size} bytes, not even an ELF identification")
        raise InputError(path, f"malformed ELF: class {ident[4]}, data encoding {ident[5]}")
    elfclass = 32 if ident[4] == 1 else 64
    order = "<" if ident[5] == 1 else ">"
    ehdr = struct.Struct(order + _EHDR[elfclass])
    if size < 16 + ehdr.size:
        raise InputError(
            path, f"truncated: the ELF header needs {16 + ehdr.size} bytes, file has {size}"
        )
    fields = ehdr.unpack(stream.read(ehdr.size))
    shoff, shentsize, shnum, shstrndx = fields[5], fields[10], fields[11], fields[12]
    layout, at_offset, at_size = _SHDR_OFFSET_SIZE[elfclass]
    shdr = struct.Struct(order + layout)
    if shnum and shentsize < _SHDR_SIZE[elfclass]:
        raise InputError(path, f"malformed ELF: section header entries of {shentsize} bytes")
    end = shoff + shentsize * shnum
    if shnum and end > size:
        raise InputError(
            path, f"truncated: section headers end at {end:#x}, file has {size:#x} bytes"
        )
    if shnum and shstrndx < shnum:
        stream.seek(shoff + shentsize * shstrndx)
        names = shdr.unpack(stream.read(shdr.size))
        if names[at_offset] + names[at_size] > size:
            raise InputError(path, "truncated: the section name table lies beyond the end")


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
            _check_extent(path, stream)
            stream.seek(0)
        except OSError as err:
            raise SystemFailure.from_oserror(path, err, "read") from err
        with elf_errors(path):
            from elftools.elf.elffile import ELFFile

            elffile = ELFFile(stream)
            elffile.num_sections()  # touch the section table: catches truncation early
        yield ElfReader(path, stream, elffile)


@contextmanager
def open_elf_bytes(path: str | os.PathLike[str], data: bytes) -> Iterator[ElfReader]:
    """Read ``data`` (an ELF unpacked from the boot image ``path``) as :func:`open_elf` does.

    Errors name ``path``, the file the user gave.
    """
    path = Path(path)
    stream = io.BytesIO(data)
    _check_extent(path, stream)
    stream.seek(0)
    with elf_errors(path):
        from elftools.elf.elffile import ELFFile

        elffile = ELFFile(stream)
        elffile.num_sections()
    yield ElfReader(path, stream, elffile)
