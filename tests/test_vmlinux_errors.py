# SPDX-License-Identifier: GPL-2.0-or-later
"""Every documented refusal of ``vmpatch patch``, each on a deliberately broken image.

A patcher that writes into a kernel image must refuse anything it does not
fully understand, say why in one line, and leave every file alone: not only
the bad one, but also any good file named in the same call (vmpatch promises
to validate all images before writing any). Each broken input here is a copy
of a testdata image with one defect made by :mod:`elfcorrupt` at the offsets
readelf reports, so the test knows what the defect is independently of vmpatch.

The images cover both ELF classes, both byte orders and both forms
(``vmlinux`` and ``vmlinux.unstripped``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from clirun import tool
from conftest import ROOT, TESTDATA, require, require_tool
from elfcorrupt import (
    SECTION,
    ElfFacts,
    readelf_facts,
    rename_section,
    run_vmpatch,
    set_section_field,
    set_symbol_field,
    tail_merge_symbol_name,
    truncate_copy,
)

#: LE64 + unstripped, BE64 + stripped, LE32 + stripped, BE32 + unstripped.
IMAGES = ["x86_64/vmlinux.unstripped", "s390x/vmlinux", "arm/vmlinux", "powerpc/vmlinux.unstripped"]

#: A past, distinctive mtime: any rewrite of a file (even with equal bytes) would change it.
OLD_MTIME_NS = 1_500_000_000_123_456_789


@dataclass
class Setup:
    """A good image, a copy to break, and a valid root file for the image's byte order."""

    facts: ElfFacts  # readelf's view of the pristine image
    source: Path
    good: Path
    bad: Path
    root_file: Path


def _setup(name: str, tmp_path: Path) -> Setup:
    source = TESTDATA / name
    require(source.is_file(), f"{source} missing: run scripts/make-testdata")
    require_tool("readelf", "binutils-multiarch")
    require_tool("objcopy", "binutils-multiarch")
    facts = readelf_facts(source)
    good, bad = tmp_path / "good-vmlinux", tmp_path / "bad-vmlinux"
    shutil.copyfile(source, good)
    shutil.copyfile(source, bad)
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(struct.pack(facts.prefix + "I", 5) + random.Random(name).randbytes(32))
    return Setup(facts, source, good, bad, root_file)


def _snapshot(paths: list[Path]) -> dict[Path, tuple[bytes, int, int]]:
    for path in paths:
        os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in paths}


def _assert_refused(
    args: list[str | Path],
    *,
    watched: list[Path],
    named: Path,
    reason: list[str],
    exit_code: int = 2,
) -> str:
    """Run vmpatch; check exit code, the one stderr line, and that ``watched`` are untouched."""
    before = _snapshot(watched)
    done = run_vmpatch(ROOT, *map(str, args))
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in watched}
    for path in watched:
        assert after[path] == before[path], f"{path} was modified by a refused call"
    assert "Traceback" not in done.stderr + done.stdout
    assert done.returncode == exit_code, f"exit {done.returncode}: {done.stderr}"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert str(named) in lines[0], f"{named} not named in {lines[0]!r}"
    # Look for the reason only after the file name: the tmp path holds the test's name.
    said = lines[0].split(str(named), 1)[1]
    for word in reason:
        assert word in said, f"{word!r} not in {lines[0]!r}"
    return lines[0]


# --- the defects -------------------------------------------------------------------------
# Each takes the setup, breaks ``setup.bad`` and returns the words the reason must contain.


def _random_bytes(s: Setup) -> list[str]:
    data = random.Random(str(s.bad)).randbytes(4096)
    s.bad.write_bytes(b"JUNK" + data)
    return ["not an ELF file"]


def _empty(s: Setup) -> list[str]:
    s.bad.write_bytes(b"")
    return ["not an ELF file"]


def _cut_in_elf_ident(s: Setup) -> list[str]:
    truncate_copy(s.source, s.bad, 10)
    return ["truncated"]


def _cut_in_elf_header(s: Setup) -> list[str]:
    truncate_copy(s.source, s.bad, 20)
    return ["truncated"]


def _cut_in_section_headers(s: Setup) -> list[str]:
    truncate_copy(s.source, s.bad, s.facts.shdr_offset(1) + s.facts.shentsize // 2)
    return ["truncated"]


def _cut_in_section(s: Setup) -> list[str]:
    truncate_copy(s.source, s.bad, s.facts.section(SECTION).offset + 10)
    return ["truncated"]


def _no_section(s: Setup) -> list[str]:
    rename_section(s.facts, s.bad, ".module_hashez")
    return ["no .module_hashes section"]


def _nobits(s: Setup) -> list[str]:
    set_section_field(s.facts, s.bad, "sh_type", 8)
    return ["SHT_NOBITS"]


def _beyond_eof(s: Setup) -> list[str]:
    set_section_field(s.facts, s.bad, "sh_offset", s.bad.stat().st_size + 0x1000)
    return ["outside the file"]


def _straddles_eof(s: Setup) -> list[str]:
    set_section_field(s.facts, s.bad, "sh_offset", s.bad.stat().st_size - 20)
    return ["outside the file"]


def _size_40(s: Setup) -> list[str]:
    set_section_field(s.facts, s.bad, "sh_size", 40)
    return [SECTION, "40 bytes"]


def _objcopy_40(s: Setup) -> list[str]:
    """kbuild's own tool happily grows the section: the result must still be refused."""
    payload = s.bad.parent / "forty.bin"
    payload.write_bytes(bytes(range(40)))
    tool("objcopy", f"--update-section={SECTION}={payload}", s.source, s.bad)
    assert readelf_facts(s.bad).section(SECTION).size == 40
    return [SECTION, "40 bytes"]


def _not_allocated(s: Setup) -> list[str]:
    set_section_field(s.facts, s.bad, "sh_flags", 0)
    return ["SHF_ALLOC"]


def _symbol_moved(s: Setup) -> list[str]:
    value = s.facts.symbol("module_hashes_root").value
    set_symbol_field(s.facts, s.bad, "st_value", value + 4)
    return ["module_hashes_root", f"{value + 4:#x}"]


def _symbol_resized(s: Setup) -> list[str]:
    set_symbol_field(s.facts, s.bad, "st_size", 32)
    return ["module_hashes_root", "32"]


def _symbol_other_section(s: Setup) -> list[str]:
    other = s.facts.section(".data").index
    set_symbol_field(s.facts, s.bad, "st_shndx", other)
    return ["module_hashes_root", str(other)]


def _symbol_duplicated(s: Setup) -> list[str]:
    """A second .symtab entry whose st_name points at the same name."""
    st_name = set_symbol_field(s.facts, s.bad, "st_name", 0)
    set_symbol_field(s.facts, s.bad, "st_name", st_name)
    other = next(sym for sym in s.facts.symbols if sym.name and sym.name != "module_hashes_root")
    set_symbol_field(s.facts, s.bad, "st_name", st_name, name=other.name)
    return ["2 symbols", "module_hashes_root"]


DEFECTS: dict[str, Callable[[Setup], list[str]]] = {
    "random-bytes": _random_bytes,
    "empty": _empty,
    "cut-in-elf-ident": _cut_in_elf_ident,
    "cut-in-elf-header": _cut_in_elf_header,
    "cut-in-section-headers": _cut_in_section_headers,
    "cut-in-section": _cut_in_section,
    "no-section": _no_section,
    "nobits": _nobits,
    "beyond-eof": _beyond_eof,
    "straddles-eof": _straddles_eof,
    "size-40": _size_40,
    "objcopy-40": _objcopy_40,
    "not-allocated": _not_allocated,
    "symbol-moved": _symbol_moved,
    "symbol-resized": _symbol_resized,
    "symbol-other-section": _symbol_other_section,
    "symbol-duplicated": _symbol_duplicated,
}

CASES = [
    pytest.param(image, defect, id=f"{image}-{defect}") for image in IMAGES for defect in DEFECTS
]


@pytest.mark.parametrize(("name", "defect"), CASES)
def test_patch_refuses_broken_image(name: str, defect: str, tmp_path: Path) -> None:
    """A broken image is refused in one line, and the good image named first is not touched.

    The good file comes first on the command line: a patcher that validated
    and wrote file by file would already have modified it.
    """
    s = _setup(name, tmp_path)
    reason = DEFECTS[defect](s)
    _assert_refused(
        ["patch", "--root-file", s.root_file, s.good, s.bad],
        watched=[s.good, s.bad],
        named=s.bad,
        reason=reason,
    )


@pytest.mark.parametrize("name", IMAGES)
def test_patch_refuses_moved_symbol_with_tail_merged_name(name: str, tmp_path: Path) -> None:
    """The symbol check must survive ld's string-table suffix merging.

    GNU ld stores ``module_hashes_root`` inside ``xmodule_hashes_root`` when
    both symbols exist (checked with a two-symbol link: readelf -p .strtab
    shows only the longer string). Such an image with a symbol that does not
    sit on the section must still be refused, as in the plain symbol-moved case.
    """
    s = _setup(name, tmp_path)
    tail_merge_symbol_name(s.facts, s.bad)
    reason = _symbol_moved(s)
    assert (
        readelf_facts(s.bad).symbol("module_hashes_root").value
        == s.facts.symbol("module_hashes_root").value + 4
    ), "readelf must still see the (moved) symbol"
    _assert_refused(
        ["patch", "--root-file", s.root_file, s.good, s.bad],
        watched=[s.good, s.bad],
        named=s.bad,
        reason=reason,
    )


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("size", [35, 37, 0])
def test_patch_refuses_root_file_of_wrong_size(name: str, size: int, tmp_path: Path) -> None:
    """A --root-file that is not exactly the section's 36 bytes is never written.

    objcopy would accept it and resize the section (shifting everything after
    it); vmpatch must refuse and name the size.
    """
    s = _setup(name, tmp_path)
    s.root_file.write_bytes(s.root_file.read_bytes()[:size].ljust(size, b"\xaa"))
    _assert_refused(
        ["patch", "--root-file", s.root_file, s.good, s.bad],
        watched=[s.good, s.bad],
        named=s.good,
        reason=[str(s.root_file), f"{size} bytes", "36"],
    )


@pytest.mark.parametrize("name", IMAGES)
def test_patch_refuses_unwritable_image(name: str, tmp_path: Path) -> None:
    """An image that cannot be written in place is refused up front with exit 3.

    As an ordinary user the file is made read-only (chmod 0444). root can
    write a 0444 file anyway, so as root the file is made immutable with
    ``chattr +i`` instead (which access(2) honours for root too); where the
    filesystem does not support that, the test is skipped.
    """
    s = _setup(name, tmp_path)
    immutable = os.geteuid() == 0
    if immutable:
        chattr = shutil.which("chattr")
        if chattr is None:
            require(False, "running as root and chattr is not installed (e2fsprogs)")
        done = tool(chattr, "+i", s.bad, check=False)
        if done.returncode != 0:
            require(False, f"running as root and chattr +i is refused here: {done.stderr!r}")
    else:
        s.bad.chmod(0o444)
    try:
        if immutable:  # utime is refused on an immutable file: snapshot as is
            before = s.bad.read_bytes(), s.bad.stat().st_mtime_ns
            watched = [s.good]
        else:
            watched = [s.good, s.bad]
        _assert_refused(
            ["patch", "--root-file", s.root_file, s.good, s.bad],
            watched=watched,
            named=s.bad,
            reason=["not writable"],
            exit_code=3,
        )
        if immutable:
            assert (s.bad.read_bytes(), s.bad.stat().st_mtime_ns) == before
    finally:
        if immutable:
            tool("chattr", "-i", s.bad, check=False)


@pytest.mark.parametrize("name", IMAGES)
def test_patch_refuses_output_into_unwritable_directory(name: str, tmp_path: Path) -> None:
    """--output into a directory that cannot take a file: exit 3, no copy is written.

    As an ordinary user the directory is chmod 0555; as root (who ignores the
    mode bits) it is made immutable with ``chattr +i``, or, where that is
    refused, the test uses a directory that does not exist.
    """
    s = _setup(name, tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    good_out = tmp_path / "good.out"
    immutable = False
    if os.geteuid() != 0:
        locked.chmod(0o555)
    elif shutil.which("chattr"):
        immutable = tool("chattr", "+i", locked, check=False).returncode == 0
    if os.geteuid() == 0 and not immutable:
        locked = tmp_path / "missing"
    bad_out = locked / "bad.out"
    try:
        _assert_refused(
            ["patch", "--root-file", s.root_file, "-o", good_out, "-o", bad_out, s.good, s.bad],
            watched=[s.good, s.bad],
            named=bad_out,
            reason=["not writable"],
            exit_code=3,
        )
    finally:
        if immutable:
            tool("chattr", "-i", locked, check=False)
        if locked.exists():
            locked.chmod(0o755)
    assert not good_out.exists(), "the good image's copy was written despite the refusal"
    assert not bad_out.exists()


def test_patch_refuses_output_into_missing_directory(tmp_path: Path) -> None:
    """--output under a directory that does not exist is bad input (exit 2), like any
    missing file (README's contract), not a system failure and not a crash."""
    s = _setup("x86_64/vmlinux", tmp_path)
    bad_out = tmp_path / "missing" / "out"
    _assert_refused(
        ["patch", "--root-file", s.root_file, "-o", bad_out, s.good],
        watched=[s.good],
        named=bad_out,
        reason=["does not exist"],
        exit_code=2,
    )
    assert not bad_out.exists()


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("how", ["header", "objcopy"])
def test_inspect_reports_unsupported_size(name: str, how: str, tmp_path: Path) -> None:
    """`inspect` shows a 40-byte section as an unsupported layout naming the size.

    It must not decode 36 of the 40 bytes as if they were a root (levels and
    root stay null) and must exit non-zero (2) so scripts notice.
    """
    s = _setup(name, tmp_path)
    (_size_40 if how == "header" else _objcopy_40)(s)
    done = run_vmpatch(ROOT, "inspect", "--json", str(s.bad))
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stderr
    (report,) = json.loads(done.stdout)["files"]
    assert report["section"]["size"] == 40
    assert report["supported"] is False
    assert report["levels"] is None and report["root"] is None
    assert any("unsupported layout" in w and "40" in w for w in report["warnings"])

    done = run_vmpatch(ROOT, "inspect", str(s.bad))
    assert "Traceback" not in done.stderr
    assert done.returncode == 2
    assert any("unsupported layout" in line and "40" in line for line in done.stderr.splitlines())


@pytest.mark.parametrize(
    "defect", ["random-bytes", "empty", "cut-in-elf-header", "cut-in-section-headers"]
)
def test_inspect_refuses_unreadable_image(defect: str, tmp_path: Path) -> None:
    """`inspect` on a file it cannot read as a kernel image: exit 2, one line naming it."""
    s = _setup("s390x/vmlinux.unstripped", tmp_path)
    reason = DEFECTS[defect](s)
    _assert_refused(["inspect", s.bad], watched=[s.bad], named=s.bad, reason=reason)


def test_inspect_kernel_without_section_has_no_hash_authentication(tmp_path: Path) -> None:
    """A kernel (it has linux_banner) without .module_hashes is told, not refused (exit 0)."""
    s = _setup("s390x/vmlinux.unstripped", tmp_path)
    DEFECTS["no-section"](s)
    done = run_vmpatch(ROOT, "inspect", "--json", str(s.bad))
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)["files"]
    assert report["module_hashes"] == "absent"
    assert report["root"] is None
    assert "no hash-based module authentication" in report["evidence"]
