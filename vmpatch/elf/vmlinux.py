# SPDX-License-Identifier: GPL-2.0-or-later
"""Locate and decode ``.module_hashes`` in ``vmlinux`` or ``vmlinux.unstripped``.

The section is laid out by ``include/asm-generic/vmlinux.lds.h`` of the series
as its own read-only output section holding the one ``module_hashes_root``
object (docs/format.md section 1). Any arch, ELF32 or ELF64, either byte order.

:func:`locate` gathers every fact about the section and its symbol without
judging them; :meth:`RootLocation.check_patchable` is the single place that
decides whether the section may be rewritten, so `inspect` can report a bad
image in full while `patch` refuses it with one precise reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmpatch.elf.constants import ElfType, SectionFlag, SectionType
from vmpatch.elf.reader import (
    ElfIdentity,
    ElfReader,
    SectionInfo,
    SymbolInfo,
    open_elf,
)
from vmpatch.errors import InputError, UnsupportedLayout
from vmpatch.frozen import frozen
from vmpatch.records.root import ROOT_RECORD_SIZE, ByteOrder, HasRootRecord, ModuleHashesRoot

__all__ = [
    "SECTION_NAME",
    "SYMBOL_NAME",
    "ImageReport",
    "RootLocation",
    "locate",
    "locate_in",
    "location_report",
    "root_of",
]

SECTION_NAME = ".module_hashes"
SYMBOL_NAME = "module_hashes_root"


@frozen
class RootLocation:
    """Where a vmlinux keeps its root, and what is there now."""

    path: Path
    identity: ElfIdentity
    section: SectionInfo
    symbols: tuple[SymbolInfo, ...]
    file_size: int
    content: bytes | None  # the section bytes, when they lie inside the file

    @property
    def root(self) -> ModuleHashesRoot | None:
        """The decoded root, when the section has the supported size and sane content."""
        if self.content is None or len(self.content) != ROOT_RECORD_SIZE:
            return None
        try:
            return ModuleHashesRoot.decode(self.content, self.identity.byteorder)
        except ValueError:
            return None

    def content_problem(self) -> str | None:
        """Why 36 section bytes do not decode as a root (e.g. the wrong byte order)."""
        if self.content is None or len(self.content) != ROOT_RECORD_SIZE or self.root:
            return None
        order = self.identity.byteorder
        other: ByteOrder = "big" if order == "little" else "little"
        levels = int.from_bytes(self.content[:4], order)
        as_other = int.from_bytes(self.content[:4], other)
        return f"levels {levels} is impossible for a {order}-endian image" + (
            f" (read {other}-endian it is {as_other}: a root made for the other byte order?)"
            if as_other <= 32
            else ""
        )

    @property
    def symbol(self) -> SymbolInfo | None:
        return self.symbols[0] if self.symbols else None

    def symbol_problem(self) -> str | None:
        """Why the ``module_hashes_root`` symbol and the section disagree, or None.

        The kernel reads the object through the symbol, so a symbol that does
        not cover exactly the section means the patched bytes are not the ones
        the kernel will see. A missing symbol (a fully stripped image) is not
        a disagreement.
        """
        if len(self.symbols) > 1:
            return f"{len(self.symbols)} symbols named {SYMBOL_NAME}"
        sym = self.symbol
        if sym is None:
            return None
        sec = self.section
        if sym.shndx != sec.index:
            return f"symbol {SYMBOL_NAME} is in section {sym.shndx}, not {sec.index} ({sec.name})"
        if sym.value != sec.addr or sym.size != sec.size:
            return (
                f"symbol {SYMBOL_NAME} covers {sym.value:#x}+{sym.size}, "
                f"section {sec.name} is {sec.addr:#x}+{sec.size}"
            )
        return None

    def check_patchable(self) -> None:
        """Raise the first reason the section cannot be rewritten in place."""
        sec = self.section
        if sec.type_value == SectionType.SHT_NOBITS:
            raise InputError(
                self.path, f"{SECTION_NAME} is SHT_NOBITS: it has no bytes in the file"
            )
        if sec.offset + sec.size > self.file_size:
            raise InputError(
                self.path,
                f"{SECTION_NAME} lies outside the file "
                f"(offset {sec.offset:#x} + {sec.size} > file size {self.file_size})",
            )
        if sec.size != ROOT_RECORD_SIZE:
            raise UnsupportedLayout(
                self.path,
                f"{SECTION_NAME} is {sec.size} bytes; only the {ROOT_RECORD_SIZE}-byte "
                "SHA-256 root of the v5 format is supported",
            )
        if not sec.flags & SectionFlag.SHF_ALLOC:
            raise InputError(self.path, f"{SECTION_NAME} is not allocated (SHF_ALLOC missing)")
        problem = self.symbol_problem()
        if problem:
            raise InputError(self.path, problem)


def locate_in(reader: ElfReader) -> RootLocation:
    """Find ``.module_hashes`` and its symbol in an already open image."""
    section = reader.section(SECTION_NAME)
    if section is None:
        raise InputError(
            reader.path,
            f"no {SECTION_NAME} section (kernel built without CONFIG_MODULE_HASHES?)",
        )
    file_size = reader.file_size
    inside = (
        section.type_value != SectionType.SHT_NOBITS and section.offset + section.size <= file_size
    )
    return RootLocation(
        path=reader.path,
        identity=reader.identity,
        section=section,
        symbols=tuple(reader.find_symbols(SYMBOL_NAME)),
        file_size=file_size,
        content=reader.read(section.offset, section.size) if inside else None,
    )


def locate(path: str | os.PathLike[str]) -> RootLocation:
    """Find ``.module_hashes`` and its symbol in the ELF file at ``path``."""
    with open_elf(path) as reader:
        return locate_in(reader)


def root_of(location: RootLocation) -> ModuleHashesRoot:
    """The root a located image carries; InputError if it has none of the supported layout."""
    location.check_patchable()
    problem = location.content_problem()
    if problem:
        raise InputError(location.path, f"{SECTION_NAME} holds no valid root: {problem}")
    root = location.root
    assert root is not None  # check_patchable guarantees the size
    return root


@frozen
class SectionReport:
    """The ``.module_hashes`` section header, as ``inspect`` shows it."""

    json_hex = ("offset", "address")

    name: str
    index: int
    offset: int
    address: int
    size: int
    type: str  # SHT_PROGBITS, or the value in hex
    flags: str  # readelf's letters
    addralign: int


@frozen
class SymbolReport:
    """The ``module_hashes_root`` symbol, as ``inspect`` shows it."""

    json_hex = ("value",)

    name: str
    value: int
    size: int
    section_index: int


@frozen
class ImageReport(HasRootRecord):
    """Everything ``inspect`` knows about an image's root (``kind`` is ``"vmlinux"``).

    ``levels``/``root``/``placeholder`` are None when the section holds no
    decodable root of the supported layout.
    """

    json_extra = (
        ("kind", "kind"),
        ("levels", "levels"),
        ("root", "root_hex"),
        ("placeholder", "placeholder"),
    )
    json_skip = ("root_record",)
    json_rename = (("elf_class", "class"),)
    kind = "vmlinux"

    path: Path
    machine: str
    elf_class: str  # ELF32 or ELF64
    byteorder: str
    elf_type: str
    section: SectionReport
    symbol: SymbolReport | None
    symbol_matches_section: bool
    supported: bool
    root_record: ModuleHashesRoot | None
    warnings: tuple[str, ...]


def location_report(location: RootLocation) -> ImageReport:
    """Everything `inspect` knows about an image's root."""
    sec, sym, root = location.section, location.symbol, location.root
    warnings = []
    problem = location.symbol_problem()
    if problem:
        warnings.append(f"{problem}; the kernel reads the symbol")
    if sym is None:
        warnings.append(f"no {SYMBOL_NAME} symbol (stripped image?): section used as is")
    supported = sec.size == ROOT_RECORD_SIZE and location.content is not None
    if sec.size != ROOT_RECORD_SIZE:
        warnings.append(
            f"unsupported layout: {SECTION_NAME} is {sec.size} bytes, "
            f"not the {ROOT_RECORD_SIZE}-byte SHA-256 root"
        )
    elif location.content is None:
        warnings.append(f"{SECTION_NAME} has no bytes in the file")
    elif problem_in_content := location.content_problem():
        supported = False
        warnings.append(f"{SECTION_NAME} holds no valid root: {problem_in_content}")
    identity = location.identity
    elf_type = identity.elftype
    return ImageReport(
        path=location.path,
        machine=identity.machine,
        elf_class=f"ELF{identity.elfclass}",
        byteorder=identity.byteorder,
        elf_type=elf_type.name if isinstance(elf_type, ElfType) else f"{elf_type:#x}",
        section=SectionReport(
            name=sec.name,
            index=sec.index,
            offset=sec.offset,
            address=sec.addr,
            size=sec.size,
            type=sec.type,
            flags=sec.flags_text,
            addralign=sec.addralign,
        ),
        symbol=None
        if sym is None
        else SymbolReport(name=sym.name, value=sym.value, size=sym.size, section_index=sym.shndx),
        symbol_matches_section=sym is not None and problem is None,
        supported=supported,
        root_record=root,
        warnings=tuple(warnings),
    )
