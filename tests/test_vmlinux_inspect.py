# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch inspect`` checked against binutils (and lief), on every arch of the test data.

`inspect` is what a user trusts before patching a kernel, so each fact it
prints is compared with an independent reader: the ELF identity with
``readelf -h``, the section row with ``readelf -S -W``, the symbol with
``readelf -s -W``, the root with the raw bytes of ``objcopy --dump-section``
decoded here, and, when lief is installed, with lief's parser as well.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from clirun import tool
from conftest import ROOT, TESTDATA, require, require_tool
from elfcorrupt import (
    SECTION,
    SYMBOL,
    ElfFacts,
    built_image,
    dump_section,
    e2e_vmlinux,
    image_ids,
    readelf_facts,
    run_vmpatch,
    tail_merge_symbol_name,
)

from vmpatch.elf.vmlinux import RootLocation

IMAGES = image_ids(TESTDATA)

#: readelf's "Machine:" text -> the e_machine name `inspect` reports (pyelftools' spelling).
READELF_MACHINES = {
    "Advanced Micro Devices X86-64": "EM_X86_64",
    "Intel 80386": "EM_386",
    "AArch64": "EM_AARCH64",
    "ARM": "EM_ARM",
    "PowerPC": "EM_PPC",
    "PowerPC64": "EM_PPC64",
    "IBM S/390": "EM_S390",
    "RISC-V": "EM_RISCV",
}


def _image(name: str) -> Path:
    return built_image(TESTDATA, name)


def _sorted_everywhere(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys), f"JSON keys not sorted: {keys}"
    return dict(pairs)


def _inspect_json(*paths: Path) -> Any:
    """Run ``inspect --json``; check the output is one JSON object with sorted keys.

    Returns the entry of the one file given, or the list of entries for several.
    """
    done = run_vmpatch(ROOT, "inspect", "--json", *map(str, paths))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout, object_pairs_hook=_sorted_everywhere)
    assert isinstance(document, dict), "the document is one object whatever the file count"
    assert document["format_version"] and document["schema"] == 2
    files = document["files"]
    assert len(files) == len(paths)
    return files[0] if len(paths) == 1 else files


def _address(text: str) -> int:
    """A 64-bit address or offset of the JSON: a lowercase hex string, never a number."""
    assert isinstance(text, str) and re.fullmatch(r"0x[0-9a-f]+", text), text
    return int(text, 16)


def _decode_root(raw: bytes, facts: ElfFacts) -> tuple[int, bytes]:
    """(levels, digest) of a 36-byte record, in the byte order readelf reports."""
    assert len(raw) == 36
    (levels,) = struct.unpack_from(facts.prefix + "I", raw)
    return levels, raw[4:]


def _check_against_binutils(report: dict[str, Any], image: Path, tmp_path: Path) -> None:
    facts = readelf_facts(image)
    assert report["path"] == str(image)
    assert report["machine"] == READELF_MACHINES[facts.machine]
    assert report["class"] == f"ELF{facts.elfclass}"
    assert report["byteorder"] == facts.byteorder

    sec = facts.section(SECTION)
    got = report["section"]
    assert got["name"] == SECTION
    assert got["index"] == sec.index
    assert _address(got["offset"]) == sec.offset
    assert _address(got["address"]) == sec.addr
    assert got["size"] == sec.size
    assert got["type"] == f"SHT_{sec.type}"
    assert got["flags"] == "".join(c for c in sec.flags if c in "WAX")
    assert got["addralign"] == sec.align

    sym = facts.symbol(SYMBOL)
    assert report["symbol"] == {
        "name": SYMBOL,
        "value": f"{sym.value:#x}",
        "size": sym.size,
        "section_index": int(sym.ndx),
    }
    assert report["symbol_matches_section"] is (
        sym.value == sec.addr and sym.size == sec.size and int(sym.ndx) == sec.index
    )

    raw = dump_section(image, tmp_path / "dumped.bin")
    levels, digest = _decode_root(raw, facts)
    assert report["supported"] is True
    assert report["levels"] == levels
    assert report["root"] == digest.hex()
    assert report["placeholder"] is (levels == 0 and digest == bytes(32))


@pytest.mark.parametrize("name", IMAGES)
def test_inspect_agrees_with_binutils_on_blank_image(name: str, tmp_path: Path) -> None:
    """Every field of ``inspect --json`` on the freshly built (placeholder) image."""
    image = _image(name)
    report = _inspect_json(image)
    assert isinstance(report, dict), "one file must give one JSON object"
    _check_against_binutils(report, image, tmp_path)
    assert dump_section(image, tmp_path / "blank.bin") == bytes(36), "testdata must be blank"
    assert report["placeholder"] is True


@pytest.mark.parametrize("name", IMAGES)
def test_inspect_agrees_with_binutils_after_objcopy_update(name: str, tmp_path: Path) -> None:
    """A root written by objcopy (kbuild's way, not vmpatch's) is read back exactly.

    The record is encoded by the test in the target's byte order, so a reader
    that decoded ``levels`` in the host order would fail on big-endian arches.
    """
    image = _image(name)
    facts = readelf_facts(image)
    rng = random.Random(name)
    levels, digest = rng.randint(1, 31), rng.randbytes(32)
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(struct.pack(facts.prefix + "I", levels) + digest)
    patched = tmp_path / "vmlinux"
    tool("objcopy", f"--update-section={SECTION}={root_file}", image, patched)
    report = _inspect_json(patched)
    _check_against_binutils(report, patched, tmp_path)
    assert (report["levels"], report["root"]) == (levels, digest.hex())
    assert report["placeholder"] is False


def test_inspect_several_files_gives_a_list(tmp_path: Path) -> None:
    """Several files give one entry each in `files`, in argument order."""
    images = [_image("x86_64/vmlinux"), _image("s390x/vmlinux.unstripped"), _image("arm/vmlinux")]
    reports = _inspect_json(*images)
    assert isinstance(reports, list)
    assert [r["path"] for r in reports] == [str(p) for p in images]
    for report, image in zip(reports, images, strict=True):
        _check_against_binutils(report, image, tmp_path)


@pytest.mark.parametrize("name", IMAGES)
def test_lief_agrees(name: str) -> None:
    """A second, unrelated ELF parser sees the same section and symbol as `inspect`."""
    image = _image(name)
    try:
        import lief
    except ImportError:
        require(False, "lief is not installed (pip install lief)")
        raise
    binary = lief.ELF.parse(str(image))
    assert binary is not None
    report = _inspect_json(image)
    section = binary.get_section(SECTION)
    assert section is not None
    assert _address(report["section"]["offset"]) == section.offset
    assert report["section"]["size"] == section.size
    assert _address(report["section"]["address"]) == section.virtual_address
    symbols = [s for s in binary.symtab_symbols if s.name == SYMBOL]
    assert len(symbols) == 1
    assert _address(report["symbol"]["value"]) == symbols[0].value
    assert report["symbol"]["size"] == symbols[0].size


def _forbid(*_args: object, **_kwargs: object) -> Any:
    raise AssertionError("pyelftools' per-symbol decoding was used")


def _located_without_symbol_decoding(image: Path, monkeypatch: pytest.MonkeyPatch) -> RootLocation:
    """locate() with pyelftools' per-symbol entry points made to raise; checked by readelf."""
    from elftools.elf.sections import SymbolTableSection

    from vmpatch.elf.vmlinux import locate

    for method in ("get_symbol_by_name", "iter_symbols", "get_symbol"):
        monkeypatch.setattr(SymbolTableSection, method, _forbid)
    location = locate(image)
    sym = readelf_facts(image).symbol(SYMBOL)
    assert location.symbol is not None
    assert (location.symbol.value, location.symbol.size) == (sym.value, sym.size)
    return location


@pytest.mark.parametrize(
    "name", ["x86_64/vmlinux.unstripped", "s390x/vmlinux", "arm/vmlinux", "riscv64/vmlinux"]
)
def test_symbol_search_does_not_decode_every_symbol(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """locate() must find the symbol without pyelftools' per-name lookup.

    That lookup decodes every symbol through construct (seconds on a real
    vmlinux); this checks the fast path without timing anything: the slow
    entry points raise, and the symbol must still be found, with the value
    and size readelf reports.
    """
    _located_without_symbol_decoding(_image(name), monkeypatch)


def test_symbol_search_on_real_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same on a real vmlinux (~28,000 symbols), where the slow path would matter."""
    real = e2e_vmlinux()
    if not real.is_file():
        pytest.skip(f"{real} is not present (built by the end-to-end job only)")
    require_tool("readelf", "binutils-multiarch")
    image = tmp_path / "vmlinux"
    shutil.copyfile(real, image)
    location = _located_without_symbol_decoding(image, monkeypatch)
    assert location.section.addr == location.symbol.value  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["x86_64/vmlinux.unstripped", "s390x/vmlinux"])
def test_inspect_finds_symbol_with_tail_merged_name(name: str, tmp_path: Path) -> None:
    """GNU ld merges string suffixes in .strtab; the symbol must be found all the same.

    With another symbol named ``xmodule_hashes_root`` (a two-symbol link shows
    ld keeps only that string), ``module_hashes_root``'s name starts in the
    middle of it. readelf resolves it by ``st_name``; inspect must too.
    """
    image = tmp_path / "vmlinux"
    shutil.copyfile(_image(name), image)
    tail_merge_symbol_name(readelf_facts(image), image)
    sym = readelf_facts(image).symbol(SYMBOL)
    report = _inspect_json(image)
    assert report["symbol"] is not None
    assert (_address(report["symbol"]["value"]), report["symbol"]["size"]) == (sym.value, sym.size)
