# SPDX-License-Identifier: GPL-2.0-or-later
"""The struct-based ELF reader against readelf and pyelftools, on real images.

``vmpatch.elf.reader`` decodes the ELF header, the section header table and
``.symtab`` itself (pyelftools' import was a quarter of ``vmpatch patch``,
issue 12), so every field it yields is compared here with two independent
decoders: binutils' ``readelf`` and pyelftools, over every committed ELF
(vmlinux images of eight arches, both classes and byte orders, stripped and
unstripped, and modules), plus an object with more sections than ``e_shnum``
can count, made by the real assembler.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clirun import tool
from conftest import require_tool
from elfcorrupt import readelf_facts

from vmpatch.elf.reader import ElfReader, open_elf
from vmpatch.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "testdata"

#: readelf's type column for the generic sh_type values.
READELF_TYPES = {
    "SHT_NULL": "NULL",
    "SHT_PROGBITS": "PROGBITS",
    "SHT_SYMTAB": "SYMTAB",
    "SHT_STRTAB": "STRTAB",
    "SHT_RELA": "RELA",
    "SHT_NOBITS": "NOBITS",
    "SHT_REL": "REL",
    "SHT_NOTE": "NOTE",
    "SHT_INIT_ARRAY": "INIT_ARRAY",
    "SHT_FINI_ARRAY": "FINI_ARRAY",
    "SHT_GROUP": "GROUP",
}


def _committed_elf_files() -> list[Path]:
    found = []
    for path in sorted(TESTDATA.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 << 20:
            with path.open("rb") as stream:
                if stream.read(4) == b"\x7fELF":
                    found.append(path)
    return found


ELF_FILES = _committed_elf_files()


def test_the_committed_images_cover_both_classes_and_byte_orders() -> None:
    kinds = set()
    for path in ELF_FILES:
        with open_elf(path) as reader:
            kinds.add((reader.identity.elfclass, reader.identity.byteorder))
    assert kinds == {(32, "little"), (32, "big"), (64, "little"), (64, "big")}, kinds
    assert len(ELF_FILES) >= 20


@pytest.mark.parametrize("path", ELF_FILES, ids=lambda p: str(p.relative_to(TESTDATA)))
def test_sections_and_symbols_match_readelf(path: Path) -> None:
    require_tool("readelf", "binutils-multiarch")
    facts = readelf_facts(path)
    with open_elf(path) as reader:
        assert reader.identity.elfclass == facts.elfclass
        assert reader.identity.byteorder == facts.byteorder
        assert reader.section_count == len(facts.sections)
        for expected in facts.sections:
            got = reader.section_at(expected.index)
            assert (got.name, got.addr, got.offset, got.size, got.addralign) == (
                expected.name,
                expected.addr,
                expected.offset,
                expected.size,
                expected.align,
            ), f"section {expected.index}"
            assert set(got.flags_text) <= set(expected.flags), (got.flags_text, expected.flags)
            if got.type in READELF_TYPES:
                assert READELF_TYPES[got.type] == expected.type, got
            if expected.name:  # the first section of a name, as section() finds it
                first = next(s for s in facts.sections if s.name == expected.name)
                assert reader.section(expected.name) == reader.section_at(first.index)
        # readelf names section symbols (st_name 0) after their section, and cuts
        # riscv's local labels (".L0 ") at the blank: neither is a .symtab name.
        named = [
            s
            for s in facts.symbols
            if s.name and s.type != "SECTION" and s.ndx.isdigit() and not s.name.startswith(".L")
        ]
        named = named[:40]
        for symbol in named:
            same_name = [s for s in facts.symbols if s.name == symbol.name and s.type != "SECTION"]
            got_symbols = reader.find_symbols(symbol.name)
            assert sorted((s.value, s.size, s.shndx) for s in got_symbols) == sorted(
                (s.value, s.size, int(s.ndx)) for s in same_name if s.ndx.isdigit()
            ), symbol.name
        if not facts.symbols:
            assert reader.find_symbols("module_hashes_root") == []


@pytest.mark.parametrize("path", ELF_FILES, ids=lambda p: str(p.relative_to(TESTDATA)))
def test_header_fields_match_pyelftools(path: Path) -> None:
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as stream, open_elf(path) as reader:
        elf = ELFFile(stream)
        assert reader.identity.machine == str(elf["e_machine"])
        assert int(reader.identity.elftype) == _raw_e_type(path, reader)
        assert reader.section_count == elf.num_sections()
        for index, section in enumerate(elf.iter_sections()):
            got = reader.section_at(index)
            header = section.header
            assert got.name == section.name
            assert got.flags == header["sh_flags"]
            assert got.link == header["sh_link"]
            assert got.addralign == header["sh_addralign"]


def _raw_e_type(path: Path, reader: ElfReader) -> int:
    return int.from_bytes(path.read_bytes()[16:18], reader.identity.byteorder)


def test_more_sections_than_e_shnum_can_count(tmp_path: Path) -> None:
    """70,000 sections: e_shnum is 0, the count and e_shstrndx live in section 0."""
    assembler = require_tool("as", "binutils")
    require_tool("readelf", "binutils-multiarch")
    source = tmp_path / "many.s"
    source.write_text("".join(f'.section .s{i},"a"\n.byte {i & 0xFF}\n' for i in range(70_000)))
    obj = tmp_path / "many.o"
    tool(assembler, "-o", obj, source)
    raw = obj.read_bytes()
    assert int.from_bytes(raw[0x3C:0x3E], "little") == 0  # e_shnum: extended numbering
    assert int.from_bytes(raw[0x3E:0x40], "little") == 0xFFFF  # e_shstrndx: SHN_XINDEX
    facts = readelf_facts(obj)
    with open_elf(obj) as reader:
        assert reader.section_count == len(facts.sections) > 70_000
        last = facts.sections[-1]
        assert reader.section_at(last.index).name == last.name
        wanted = next(s for s in facts.sections if s.name == ".s69999")
        got = reader.section(".s69999")
        assert got is not None
        assert (got.index, got.offset, got.size) == (wanted.index, wanted.offset, wanted.size)


def test_a_section_name_outside_the_name_table_is_refused(tmp_path: Path) -> None:
    """A forged sh_name names the file and the section, and no index error escapes."""
    source = TESTDATA / "x86_64" / "vmlinux"
    facts = readelf_facts(source)
    data = bytearray(source.read_bytes())
    at = facts.shdr_offset(1)
    data[at : at + 4] = (0x7FFFFFFF).to_bytes(4, "little")
    forged = tmp_path / "vmlinux"
    forged.write_bytes(bytes(data))
    with open_elf(forged) as reader, pytest.raises(InputError, match="section 1's name"):
        reader.section(".module_hashes")
