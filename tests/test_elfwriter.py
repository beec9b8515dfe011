# SPDX-License-Identifier: GPL-2.0-or-later
"""The test ELF builder against GNU readelf, then vmpatch against the builder's images.

``elfwriter`` replaces hand-packed headers in the tests, so it is checked
first: for every ELF class and byte order, what readelf (``-h -S -s -W``,
``LC_ALL=C``) reports must be exactly what was asked for, with no warning.
Then the same images, forged one header field at a time, must be refused by
``vmpatch inspect`` with one line, for all four forms.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from clirun import tool
from conftest import tool_version
from elfcorrupt import SECTION, SYMBOL, readelf_facts
from elfwriter import (
    ET_EXEC,
    ET_REL,
    FORMS,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHT_NOBITS,
    SHT_PROGBITS,
    STB_GLOBAL,
    STB_LOCAL,
    STT_FUNC,
    STT_OBJECT,
    Built,
    Form,
    Section,
    Symbol,
    build_elf,
)

#: readelf's names for what the builder writes.
MACHINE = {3: "Intel 80386", 62: "Advanced Micro Devices X86-64", 20: "PowerPC", 22: "IBM S/390"}
TYPE = {ET_REL: "REL (Relocatable file)", ET_EXEC: "EXEC (Executable file)"}

#: The root record of the v5 format (docs/format.md): u32 levels, then the SHA-256 root.
ROOT_RECORD_SIZE = 4 + 32
LEVELS = 5


def mini_vmlinux(form: Form, seed: int = 0) -> tuple[Built, bytes]:
    """An ET_EXEC with .text, .data, .bss and a .module_hashes its symbol covers exactly."""
    base = 0xFFFFFFFF81000000 if form.bits == 64 else 0xC1000000
    root = random.Random(seed).randbytes(32)
    record = LEVELS.to_bytes(4, form.byteorder) + root
    assert len(record) == ROOT_RECORD_SIZE
    sections = [
        Section(".text", SHT_PROGBITS, b"\x90" * 64, SHF_ALLOC | SHF_EXECINSTR, base, align=16),
        Section(
            ".data", SHT_PROGBITS, bytes(range(40)), SHF_ALLOC | SHF_WRITE, base + 0x1000, align=8
        ),
        Section(SECTION, SHT_PROGBITS, record, SHF_ALLOC, base + 0x2000, align=32),
        Section(
            ".bss",
            SHT_NOBITS,
            flags=SHF_ALLOC | SHF_WRITE,
            addr=base + 0x3000,
            nobits_size=4096,
            align=64,
        ),
    ]
    symbols = [
        Symbol("local_helper", base + 0x10, 8, STT_FUNC, STB_LOCAL, ".text"),
        Symbol("_stext", base, 0, STT_FUNC, STB_GLOBAL, ".text"),
        Symbol(SYMBOL, base + 0x2000, ROOT_RECORD_SIZE, STT_OBJECT, STB_GLOBAL, SECTION),
        Symbol("undefined_thing"),
    ]
    return build_elf(sections, symbols, form=form, e_type=ET_EXEC), record


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.id)
def test_builder_matches_readelf(tmp_path: Path, form: Form, readelf: str) -> None:
    built, record = mini_vmlinux(form)
    path = tmp_path / "vmlinux"
    path.write_bytes(built.data)
    version = tool_version("readelf")
    shown = tool(readelf, "-h", "-S", "-s", "-W", path, text=True)
    assert shown.stderr == "", f"{version} warns about the builder's output: {shown.stderr}"
    header: dict[str, str] = {}
    for line in shown.stdout.split("Section Headers:")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            header[key.strip()] = value.strip()
    assert header.get("Class") == f"ELF{form.bits}", (version, header)
    assert header.get("Data", "").endswith(f"{form.byteorder} endian"), (version, header)
    assert header.get("Type") == TYPE[ET_EXEC], (version, header)
    assert header.get("Machine") == MACHINE[form.machine], (version, header)

    facts = readelf_facts(path)
    base = 0xFFFFFFFF81000000 if form.bits == 64 else 0xC1000000
    rows = {s.name: s for s in facts.sections}
    expected = {  # name: (type, addr, size, flags, align)
        ".text": ("PROGBITS", base, 64, "AX", 16),
        ".data": ("PROGBITS", base + 0x1000, 40, "WA", 8),
        SECTION: ("PROGBITS", base + 0x2000, ROOT_RECORD_SIZE, "A", 32),
        ".bss": ("NOBITS", base + 0x3000, 4096, "WA", 64),
        ".symtab": (
            "SYMTAB",
            0,
            5 * (24 if form.bits == 64 else 16),
            "",
            8 if form.bits == 64 else 4,
        ),
    }
    for name, (kind, addr, size, flags, align) in expected.items():
        row = rows[name]
        assert (row.type, row.addr, row.size, row.flags, row.align) == (
            kind,
            addr,
            size,
            flags,
            align,
        ), (version, row)
        assert row.index == built.sections[name], (version, row)
        if kind != "NOBITS":
            assert row.offset == built.offsets[name] and row.offset % align == 0, (version, row)
    assert [s.name for s in facts.sections] == [
        "",
        ".text",
        ".data",
        SECTION,
        ".bss",
        ".symtab",
        ".strtab",
        ".shstrtab",
    ], version
    symbols = {s.name: s for s in facts.symbols}
    assert [s.name for s in facts.symbols] == [
        "local_helper",
        "_stext",
        SYMBOL,
        "undefined_thing",
    ], version  # locals first, as the gABI wants and readelf lists them
    root = symbols[SYMBOL]
    assert (root.value, root.size, root.type, root.ndx) == (
        base + 0x2000,
        ROOT_RECORD_SIZE,
        "OBJECT",
        str(built.sections[SECTION]),
    ), (version, root)
    assert (symbols["local_helper"].type, symbols["undefined_thing"].ndx) == ("FUNC", "UND")
    dumped = tool(readelf, "-x", SECTION, path, text=True).stdout
    assert record[:4].hex() in dumped.replace(" ", ""), (version, dumped)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.id)
def test_builder_relocatable_matches_readelf(tmp_path: Path, form: Form, readelf: str) -> None:
    """An ET_REL without symbols: no .symtab/.strtab, only what was asked for."""
    built = build_elf([Section(".modinfo", data=b"license=GPL\0", flags=SHF_ALLOC)], form=form)
    path = tmp_path / "mod.ko"
    path.write_bytes(built.data)
    shown = tool(readelf, "-h", "-S", "-W", path, text=True)
    assert shown.stderr == "", shown.stderr
    assert TYPE[ET_REL] in shown.stdout
    facts = readelf_facts(path)
    assert [s.name for s in facts.sections] == ["", ".modinfo", ".shstrtab"]
    assert facts.section(".modinfo").size == len(b"license=GPL\0")
    assert (facts.elfclass, facts.byteorder) == (form.bits, form.byteorder)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.id)
def test_vmpatch_reads_the_builders_root(tmp_path: Path, form: Form) -> None:
    """The builder's image is a vmlinux as far as vmpatch is concerned (evidence: the bytes)."""
    from clirun import vmpatch

    built, record = mini_vmlinux(form, seed=7)
    path = tmp_path / "vmlinux"
    path.write_bytes(built.data)
    run = vmpatch("inspect", "--json", path)
    assert run.returncode == 0, run.stderr
    assert record[4:].hex() in run.stdout, run.stdout


def _headers_end(built: Built, shoff: int, shnum: int) -> str:
    shentsize = 40 if built.form.bits == 32 else 64  # sizeof(Elf32_Shdr), sizeof(Elf64_Shdr)
    return f"truncated: section headers end at {shoff + shnum * shentsize:#x}, file has " + (
        f"{len(built.data):#x} bytes"
    )


def _outside(built: Built, offset: int, size: int) -> str:
    return (
        f"{SECTION} lies outside the file "
        f"(offset {offset:#x} + {size} > file size {len(built.data)})"
    )


HUGE = 24 << 20

#: One forged field each: (record, field, new value, the reason vmpatch must give), all
#: computed from the builder's own layout, never from vmpatch's reading of the file.
FORGERIES: dict[str, tuple[str, str, Callable[[Built], int], Callable[[Built], str]]] = {
    "tiny-shentsize": (
        "Ehdr",
        "e_shentsize",
        lambda b: 1,
        lambda b: "malformed ELF: section header entries of 1 bytes",
    ),
    "shoff-past-end": (
        "Ehdr",
        "e_shoff",
        lambda b: len(b.data) + 4096,
        lambda b: _headers_end(b, len(b.data) + 4096, len(b.sections) + 1),
    ),
    "shnum-huge": (
        "Ehdr",
        "e_shnum",
        lambda b: 0xFF00,
        lambda b: _headers_end(b, b.shoff, 0xFF00),
    ),
    "section-size-huge": (
        "Shdr",
        "sh_size",
        lambda b: HUGE,
        lambda b: _outside(b, b.offsets[SECTION], HUGE),
    ),
    "section-offset-past-end": (
        "Shdr",
        "sh_offset",
        lambda b: len(b.data) + 64,
        lambda b: _outside(b, len(b.data) + 64, ROOT_RECORD_SIZE),
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.id)
def test_forged_fields_are_refused(tmp_path: Path, form: Form, forgery: str) -> None:
    """Each ELF class and byte order: a forged size or offset is one line, exit 2, no traceback."""
    from clirun import vmpatch

    built, _record = mini_vmlinux(form)
    record, name, value, reason = FORGERIES[forgery]
    if record == "Ehdr":
        offset, fmt = built.header_field(name)
    else:
        offset, fmt = built.section_field(SECTION, name)
    path = tmp_path / f"{forgery}.vmlinux"
    path.write_bytes(built.with_field(offset, fmt, value(built)))
    assert path.read_bytes() != built.data
    before = path.read_bytes()
    run = vmpatch("patch", "--root", "ab" * 32, "--levels", "1", path)
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert run.stderr.splitlines() == [f"error: {path}: {reason(built)}"], run.stderr
    assert path.read_bytes() == before
