# SPDX-License-Identifier: GPL-2.0-or-later
"""Binutils' view of an ELF image, and byte-level edits that break it on purpose.

The vmlinux tests must not judge vmpatch by vmpatch's own reading of a file,
so everything here comes from GNU binutils (``readelf``, ``objcopy``) and from
``struct`` applied at the offsets readelf reports. The edit helpers take a
pristine image, learn its layout from readelf *before* touching it, and then
change single header fields (``sh_type``, ``sh_size``, ``st_value``, ...) in a
copy, so each broken input differs from a good one by exactly the defect a
test wants vmpatch to refuse.

Field offsets come from :mod:`elfwriter`'s one table of ``Elf{32,64}_Ehdr``,
``_Shdr`` and ``_Sym`` fields (include/uapi/linux/elf.h); the byte order is
the one ``readelf -h`` prints. readelf always runs under ``LC_ALL=C`` (through
:func:`clirun.tool`), the locale its output is parsed in.
"""

from __future__ import annotations

import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from clirun import Run, tool_text, vmpatch
from elfwriter import field_offset, record_size

__all__ = [
    "ARCHES",
    "FORMS",
    "SECTION",
    "SYMBOL",
    "ElfFacts",
    "ReadelfSection",
    "ReadelfSymbol",
    "binutils_tool",
    "dump_section",
    "hexdump_section",
    "image_ids",
    "readelf_facts",
    "rename_section",
    "run_vmpatch",
    "set_header_field",
    "set_section_field",
    "set_symbol_field",
    "tail_merge_symbol_name",
    "truncate_copy",
]

SECTION = ".module_hashes"
SYMBOL = "module_hashes_root"

# "  [ 5] .module_hashes    PROGBITS        ffffffff810011a0 0021a0 000024 00   A  0   0 32"
_SECTION_LINE = re.compile(
    r"^\s*\[\s*(?P<index>\d+)\]\s(?P<name>.*?)\s+(?P<type>\S+)\s+(?P<addr>[0-9a-f]+)\s+"
    r"(?P<offset>[0-9a-f]+)\s+(?P<size>[0-9a-f]+)\s+(?P<entsize>[0-9a-f]+)\s+"
    r"(?P<flags>[A-Za-z]*)\s+(?P<link>\d+)\s+(?P<info>\d+)\s+(?P<align>\d+)\s*$"
)
# "    49: ffffffff810011a0    36 OBJECT  GLOBAL DEFAULT    3 module_hashes_root"
_SYMBOL_LINE = re.compile(
    r"^\s*(?P<num>\d+):\s+(?P<value>[0-9a-f]+)\s+(?P<size>0x[0-9a-f]+|\d+)\s+(?P<type>\S+)\s+"
    r"(?P<bind>\S+)\s+(?P<vis>\S+)\s+(?P<ndx>\S+)\s+(?P<name>\S+)"
)


def binutils_tool(name: str) -> str:
    """The path of a binutils program (``readelf``, ``objcopy``); AssertionError if absent.

    Callers check availability first with ``conftest.require_tool``; this only
    keeps the helpers usable on their own.
    """
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed (apt-get install binutils-multiarch)"
    return path


def _run(*args: str) -> str:
    return tool_text(*args)


@dataclass(frozen=True)
class ReadelfSection:
    """One row of ``readelf -S -W``."""

    index: int
    name: str
    type: str  # readelf's spelling: "PROGBITS", "NOBITS", ...
    addr: int
    offset: int
    size: int
    flags: str  # readelf's letters, e.g. "WA", "AX"
    align: int


@dataclass(frozen=True)
class ReadelfSymbol:
    """One ``.symtab`` row of ``readelf -s -W``."""

    num: int
    name: str
    value: int
    size: int
    type: str
    ndx: str


@dataclass(frozen=True)
class ElfFacts:
    """What binutils says about an image: header, sections and ``.symtab``."""

    path: Path
    elfclass: int  # 32 or 64
    byteorder: str  # "little" or "big"
    machine: str  # readelf's "Machine:" text
    shoff: int
    shentsize: int
    shstrndx: int
    sections: tuple[ReadelfSection, ...]
    symbols: tuple[ReadelfSymbol, ...]

    @property
    def prefix(self) -> str:
        """The ``struct`` byte-order prefix of the target."""
        return "<" if self.byteorder == "little" else ">"

    def section(self, name: str) -> ReadelfSection:
        matches = [s for s in self.sections if s.name == name]
        assert len(matches) == 1, f"{self.path}: readelf lists {len(matches)} sections {name}"
        return matches[0]

    def symbol(self, name: str) -> ReadelfSymbol:
        matches = [s for s in self.symbols if s.name == name]
        assert len(matches) == 1, f"{self.path}: readelf lists {len(matches)} symbols {name}"
        return matches[0]

    def shdr_offset(self, index: int) -> int:
        """File offset of section header ``index``."""
        return self.shoff + index * self.shentsize


def readelf_facts(path: str | Path) -> ElfFacts:
    """Parse ``readelf -h``, ``readelf -S -W`` and ``readelf -s -W`` of ``path``."""
    readelf = binutils_tool("readelf")
    header: dict[str, str] = {}
    for line in _run(readelf, "-h", "-W", str(path)).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            header[key.strip()] = value.strip()
    data = header["Data"]
    assert data.endswith(("little endian", "big endian")), data
    sections = []
    for line in _run(readelf, "-S", "-W", str(path)).splitlines():
        m = _SECTION_LINE.match(line)
        if m:
            sections.append(
                ReadelfSection(
                    index=int(m["index"]),
                    name=m["name"].strip(),
                    type=m["type"],
                    addr=int(m["addr"], 16),
                    offset=int(m["offset"], 16),
                    size=int(m["size"], 16),
                    flags=m["flags"],
                    align=int(m["align"]),
                )
            )
    symbols = []
    in_symtab = False
    for line in _run(readelf, "-s", "-W", str(path)).splitlines():
        if line.startswith("Symbol table"):
            in_symtab = "'.symtab'" in line
            continue
        m = _SYMBOL_LINE.match(line)
        if in_symtab and m:
            size = m["size"]
            symbols.append(
                ReadelfSymbol(
                    num=int(m["num"]),
                    name=m["name"],
                    value=int(m["value"], 16),
                    size=int(size, 16) if size.startswith("0x") else int(size),
                    type=m["type"],
                    ndx=m["ndx"],
                )
            )
    number = re.compile(r"\d+")
    return ElfFacts(
        path=Path(path),
        elfclass=64 if header["Class"] == "ELF64" else 32,
        byteorder="little" if data.endswith("little endian") else "big",
        machine=header["Machine"],
        shoff=int(number.search(header["Start of section headers"]).group()),  # type: ignore[union-attr]
        shentsize=int(number.search(header["Size of section headers"]).group()),  # type: ignore[union-attr]
        shstrndx=int(number.search(header["Section header string table index"]).group()),  # type: ignore[union-attr]
        sections=tuple(sections),
        symbols=tuple(symbols),
    )


def hexdump_section(path: str | Path, name: str = SECTION) -> bytes:
    """The section's bytes as ``readelf -x`` prints them (parsed from the hex dump).

    Each dump line is the address, then 16 bytes as four space-separated
    groups of eight hex digits (36 columns), then the ASCII rendering, which
    is cut off by position so printable bytes can never be mistaken for hex.
    """
    out = _run(binutils_tool("readelf"), "-x", name, str(path))
    data = bytearray()
    for line in out.splitlines():
        m = re.match(r"^\s+0x[0-9a-f]+ ", line)
        if m:
            data += bytes.fromhex(line[m.end() : m.end() + 36].replace(" ", ""))
    return bytes(data)


def dump_section(path: str | Path, dest: Path, name: str = SECTION) -> bytes:
    """The section's bytes via ``objcopy --dump-section`` (written to ``dest``)."""
    _run(binutils_tool("objcopy"), f"--dump-section={name}={dest}", str(path), str(dest) + ".elf")
    Path(str(dest) + ".elf").unlink()
    return dest.read_bytes()


def _poke(path: Path, offset: int, fmt: str, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def _peek(path: Path, offset: int, fmt: str) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(struct.calcsize(fmt))
    return int(struct.unpack(fmt, raw)[0])


def set_header_field(facts: ElfFacts, target: Path, field: str, value: int) -> int:
    """Overwrite ELF header field ``field`` (``e_shoff``, ``e_shentsize``...); return the old."""
    offset, code = field_offset("Ehdr", facts.elfclass, field)
    fmt = facts.prefix + code
    old = _peek(target, offset, fmt)
    _poke(target, offset, fmt, value)
    return old


def set_section_field(
    facts: ElfFacts, target: Path, field: str, value: int, *, name: str = SECTION
) -> int:
    """Overwrite ``field`` of section ``name``'s header in ``target``; return the old value.

    ``facts`` describe the pristine image ``target`` was copied from.
    """
    where, code = field_offset("Shdr", facts.elfclass, field)
    offset = facts.shdr_offset(facts.section(name).index) + where
    fmt = facts.prefix + code
    old = _peek(target, offset, fmt)
    _poke(target, offset, fmt, value)
    return old


def set_symbol_field(
    facts: ElfFacts, target: Path, field: str, value: int, *, name: str = SYMBOL
) -> int:
    """Overwrite ``field`` of symbol ``name``'s ``.symtab`` entry in ``target``; return the old."""
    symtab = facts.section(".symtab")
    entsize = record_size("Sym", facts.elfclass)
    where, code = field_offset("Sym", facts.elfclass, field)
    offset = symtab.offset + facts.symbol(name).num * entsize + where
    fmt = facts.prefix + code
    old = _peek(target, offset, fmt)
    _poke(target, offset, fmt, value)
    return old


def rename_section(facts: ElfFacts, target: Path, new_name: str, *, name: str = SECTION) -> None:
    """Rename section ``name`` in ``.shstrtab`` (same length), found through its ``sh_name``."""
    assert len(new_name) == len(name)
    shstrtab = next(s for s in facts.sections if s.index == facts.shstrndx)
    where, code = field_offset("Shdr", facts.elfclass, "sh_name")
    sh_name = _peek(
        target, facts.shdr_offset(facts.section(name).index) + where, facts.prefix + code
    )
    at = shstrtab.offset + sh_name
    with open(target, "r+b") as f:
        f.seek(at)
        assert f.read(len(name) + 1) == name.encode() + b"\0"
        f.seek(at)
        f.write(new_name.encode())


def tail_merge_symbol_name(facts: ElfFacts, target: Path, *, name: str = SYMBOL) -> None:
    """Make ``name`` in ``.strtab`` the tail of the string before it, as GNU ld does.

    ld merges string-table suffixes: with a symbol ``xmodule_hashes_root``,
    ``module_hashes_root``'s ``st_name`` points into the middle of that string,
    so the name is no longer preceded by a NUL. Here the NUL that ends the
    previous string becomes ``x``: the symbol keeps its name (readelf still
    shows it), only the string before it grows.
    """
    strtab = facts.section(".strtab")
    st_name = set_symbol_field(facts, target, "st_name", 0, name=name)
    set_symbol_field(facts, target, "st_name", st_name, name=name)
    assert st_name > 0
    with open(target, "r+b") as f:
        f.seek(strtab.offset + st_name - 1)
        assert f.read(len(name) + 2) == b"\0" + name.encode() + b"\0"
        f.seek(strtab.offset + st_name - 1)
        f.write(b"x")


def truncate_copy(source: Path, target: Path, length: int) -> None:
    """Write the first ``length`` bytes of ``source`` to ``target``."""
    target.write_bytes(source.read_bytes()[:length])


# --- shared by the vmlinux tests: the images under test and the CLI runner ------------------

#: The arches ``scripts/make-testdata`` must produce (CI fails if one is missing).
ARCHES = (
    "x86_64",
    "i386",
    "aarch64",
    "arm",
    "powerpc",
    "ppc64",
    "ppc64le",
    "s390x",
    "riscv64",
)
FORMS = ("vmlinux", "vmlinux.unstripped")


def e2e_vmlinux() -> Path:
    """The real kernel of the workspace's end-to-end harness, when it is there.

    It lives beside the project (shared/e2e), not in it; CI clones the project
    with shared/ beside it, so look there first.
    """
    beside = Path(__file__).resolve().parent.parent.parent / "shared" / "e2e" / "artifacts"
    for base in (beside, Path("/work/shared/e2e/artifacts")):
        if (base / "vmlinux").is_file():
            return base / "vmlinux"
    return beside / "vmlinux"


def built_image(testdata: Path, name: str) -> Path:
    """The testdata image ``arch/form``; skip (fail under CI) when it was not generated."""
    from conftest import require, require_tool

    path = testdata / name
    require(path.is_file(), f"{path} missing: run scripts/make-testdata")
    require_tool("readelf", "binutils-multiarch")
    require_tool("objcopy", "binutils-multiarch")
    return path


def image_ids(testdata: Path) -> list[str]:
    """``arch/form`` for every expected image plus any other testdata vmlinux found.

    Expected images are listed even when absent, so a test for each of them
    runs and can skip (or fail under CI) instead of silently vanishing.
    """
    ids = [f"{arch}/{form}" for arch in ARCHES for form in FORMS]
    for form in FORMS:
        for found in sorted(testdata.glob(f"*/{form}")):
            name = f"{found.parent.name}/{form}"
            if name not in ids:
                ids.append(name)
    return ids


def run_vmpatch(root: Path, *args: str) -> Run:
    """``python -m vmpatch ARGS`` from the repository ``root``, output captured as text."""
    return vmpatch(*args, cwd=root, env={"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "300"})
