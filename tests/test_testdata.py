# SPDX-License-Identifier: GPL-2.0-or-later
"""The committed ELF test data is what scripts/make-testdata builds, and is what it claims.

Three kinds of checks:

* MANIFEST.json matches the committed bytes (no tools needed).
* A rebuild with the installed cross toolchains gives the committed files bit
  for bit. A toolchain whose version differs from the one recorded in the
  manifest is a failure that names the tool, never a silent skip: the files
  would differ for a reason that has nothing to do with the script.
* Independent facts, read with GNU readelf rather than with vmpatch's own
  ELF code: class, byte order and machine per arch, the placeholder
  ``.module_hashes`` section and ``module_hashes_root`` symbol, the
  LOAD_OFFSET in the program headers, relocation sections only in
  vmlinux.unstripped, and the shape of the kbuild tree's modules.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import clirun
import pytest
from clirun import python, tool_text
from conftest import SCRIPTS, TESTDATA, require_tool

SCRIPT = SCRIPTS / "make-testdata"
MANIFEST = TESTDATA / "MANIFEST.json"
FORMS = ("vmlinux.unstripped", "vmlinux")


@dataclass(frozen=True)
class Expect:
    """What readelf must report for one arch; written down here, not taken from the script."""

    triple: str
    elf_class: str
    little_endian: bool
    machine: str
    load_offset: int


EXPECT: dict[str, Expect] = {
    "x86_64": Expect(
        "x86_64-linux-gnu", "ELF64", True, "Advanced Micro Devices X86-64", 0xFFFFFFFF80000000
    ),
    "i386": Expect("i686-linux-gnu", "ELF32", True, "Intel 80386", 0xC0000000),
    "aarch64": Expect("aarch64-linux-gnu", "ELF64", True, "AArch64", 0),
    "arm": Expect("arm-linux-gnueabihf", "ELF32", True, "ARM", 0),
    "powerpc": Expect("powerpc-linux-gnu", "ELF32", False, "PowerPC", 0xC0000000),
    "ppc64": Expect("powerpc64-linux-gnu", "ELF64", False, "PowerPC64", 0xC000000000000000),
    "ppc64le": Expect("powerpc64le-linux-gnu", "ELF64", True, "PowerPC64", 0xC000000000000000),
    "s390x": Expect("s390x-linux-gnu", "ELF64", False, "IBM S/390", 0),
    "riscv64": Expect("riscv64-linux-gnu", "ELF64", True, "RISC-V", 0xFFFFFFFF80000000),
}

KBUILD = TESTDATA / "kbuild-x86_64"
KBUILD_ORDER = (
    "drivers/net/dummy_net.o",
    "fs/tinyfs/tinyfs.o",
    "lib/crc_toy.o",
    "drivers/char/toy_char.o",
    "lib/zz_first.o",
)
VERMAGIC = "vermagic=6.12.0-vmpatch SMP mod_unload"


@cache
def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


@cache
def make_testdata() -> ModuleType:
    """Import the script (it has no .py suffix) to ask it which tools it would use."""
    loader = importlib.machinery.SourceFileLoader("make_testdata", str(SCRIPT))
    spec = importlib.util.spec_from_loader("make_testdata", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_testdata"] = module  # dataclasses look their module up here
    loader.exec_module(module)
    return module


def readelf(*args: str) -> str:
    return tool_text(require_tool("readelf", "binutils"), "-W", *args)


@dataclass(frozen=True)
class Section:
    name: str
    type: str
    addr: int
    offset: int
    size: int
    flags: str


def sections(path: Path) -> dict[str, Section]:
    found: dict[str, Section] = {}
    for line in readelf("-S", str(path)).splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(.*)$", line)
        if not m or m.group(1) == "0":
            continue
        tok = m.group(2).split()
        # name type addr off size es [flags] lk inf al
        name, typ, addr, off, size = tok[:5]
        found[name] = Section(
            name, typ, int(addr, 16), int(off, 16), int(size, 16), "".join(tok[6:-3])
        )
    return found


def symbols(path: Path) -> dict[str, tuple[int, int, str]]:
    """name -> (value, size, type) for every named symbol."""
    found: dict[str, tuple[int, int, str]] = {}
    for line in readelf("-s", str(path)).splitlines():
        tok = line.split()
        if len(tok) == 8 and tok[0].endswith(":") and tok[1] != "Value":
            found[tok[7]] = (int(tok[1], 16), int(tok[2], 0), tok[3])
    return found


def header(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in readelf("-h", str(path)).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def hexdump(path: Path, section: str) -> bytes:
    """The section's bytes as ``readelf -x`` shows them."""
    data = bytearray()
    for line in readelf("-x", section, str(path)).splitlines():
        m = re.match(r"\s+0x[0-9a-f]+ ((?:[0-9a-f]{2,8} ){1,4})", line)
        if m:
            data += bytes.fromhex(m.group(1).replace(" ", ""))
    return bytes(data)


def strings(path: Path, section: str) -> list[str]:
    out = readelf("-p", section, str(path))
    return [m.group(1) for m in re.finditer(r"^\s*\[\s*[0-9a-f]+\]\s+(.*)$", out, re.M)]


def load_segments(path: Path) -> list[tuple[int, int]]:
    """(p_vaddr, p_paddr) of each PT_LOAD."""
    load = re.compile(r"^\s*LOAD\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", re.M)
    return [(int(v, 16), int(p, 16)) for v, p in load.findall(readelf("-l", str(path)))]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the manifest -------------------------------------------------------------


def test_manifest_covers_every_arch() -> None:
    assert sorted(manifest()["arches"]) == sorted(EXPECT)
    for arch, entry in manifest()["arches"].items():
        assert entry["triple"] == EXPECT[arch].triple
        assert int(entry["load_offset"], 16) == EXPECT[arch].load_offset
        assert set(entry["tools"]) == {"gcc", "ld", "objcopy"}


def test_manifest_hashes_match_committed_files() -> None:
    listed: set[str] = set()
    for entry in manifest()["arches"].values():
        for rel, record in entry["files"].items():
            path = TESTDATA / rel
            assert path.is_file(), f"{rel} is in MANIFEST.json but not committed"
            assert path.stat().st_size == record["size"], rel
            assert sha256(path) == record["sha256"], f"{rel} does not match MANIFEST.json"
            listed.add(rel)
    owned = [*EXPECT, "kbuild-x86_64", "modules-s390x"]
    present = {
        str(p.relative_to(TESTDATA))
        for d in owned
        for p in (TESTDATA / d).rglob("*")
        if p.is_file()
    }
    assert present == listed, "files in the generated directories that MANIFEST.json does not list"


# -- rebuild bit for bit -----------------------------------------------------------


def check_toolchain(arch: str) -> None:
    """Skip without the tools; fail, naming the tool, if its version is not the recorded one."""
    script = make_testdata()
    spec = script.ARCHES[arch]
    for tool in script.TOOLS:
        require_tool(spec.tool(tool), spec.package(tool))
    installed = script.tool_versions(spec)
    recorded = manifest()["arches"][arch]["tools"]
    for tool in sorted(recorded):
        if installed.get(tool) != recorded[tool]:
            pytest.fail(
                f"{spec.tool(tool)}: MANIFEST.json was built with {recorded[tool]!r}, "
                f"installed is {installed.get(tool)!r}; "
                "rebuild the test data with scripts/make-testdata",
                pytrace=False,
            )


@pytest.mark.parametrize("arch", sorted(EXPECT))
def test_rebuild_is_bit_identical(arch: str, tmp_path: Path) -> None:
    check_toolchain(arch)
    # Any working directory: the build must not depend on it.
    proc = python(SCRIPT, "--out", tmp_path / "out", "--arch", arch, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rebuilt = json.loads((tmp_path / "out" / "MANIFEST.json").read_text(encoding="utf-8"))
    committed = manifest()["arches"][arch]
    assert sorted(rebuilt["arches"]) == [arch]
    assert sorted(rebuilt["arches"][arch]["files"]) == sorted(committed["files"])
    for rel in committed["files"]:
        new, old = tmp_path / "out" / rel, TESTDATA / rel
        assert new.read_bytes() == old.read_bytes(), f"{rel} differs from the committed file"
    assert rebuilt["arches"][arch] == committed


def test_missing_toolchain_is_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = python(SCRIPT, "--out", tmp_path / "out", "--arch", "s390x", env={"PATH": str(empty)})
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "s390x-linux-gnu-gcc" in lines[0]
    assert "apt-get install gcc-s390x-linux-gnu" in lines[0]
    assert not (tmp_path / "out").exists()


# -- independent checks with readelf ----------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("arch", sorted(EXPECT))
def test_vmlinux_shape(arch: str, form: str) -> None:
    path = TESTDATA / arch / form
    want = EXPECT[arch]
    hdr = header(path)
    assert hdr["Class"] == want.elf_class
    assert hdr["Data"] == "2's complement, " + (
        "little endian" if want.little_endian else "big endian"
    )
    assert hdr["Machine"] == want.machine
    assert hdr["Type"].startswith("EXEC")

    secs = sections(path)
    hashes = secs[".module_hashes"]
    assert hashes.type == "PROGBITS"
    assert "A" in hashes.flags and "W" not in hashes.flags
    assert hashes.size == 36
    assert hexdump(path, ".module_hashes") == bytes(36)
    assert path.read_bytes()[hashes.offset : hashes.offset + 36] == bytes(36)

    value, size, kind = symbols(path)["module_hashes_root"]
    assert (value, size, kind) == (hashes.addr, 36, "OBJECT")

    # AT(ADDR(sec) - LOAD_OFFSET) on every allocated section.
    mask = (1 << (64 if want.elf_class == "ELF64" else 32)) - 1
    loads = load_segments(path)
    assert loads
    for vaddr, paddr in loads:
        assert (vaddr - paddr) & mask == want.load_offset, f"{vaddr:#x} {paddr:#x}"

    relocs = [name for name in secs if name.startswith((".rel.", ".rela."))]
    if form == "vmlinux.unstripped":
        assert relocs, "vmlinux.unstripped must keep --emit-relocs sections"
        assert ".modinfo" in secs and "A" not in secs[".modinfo"].flags
        assert "license=GPL" in strings(path, ".modinfo")
    else:
        assert relocs == []
        assert ".modinfo" not in secs
    for name in (".text", ".rodata", ".data", ".bss"):
        assert name in secs and "A" in secs[name].flags, name


# The issue asking for these images: "a few KB each". No DWARF in the kernel
# images and 256-byte alignment keep them there (riscv64's unstripped image, with
# its relaxation relocations, is the largest at about 10 KiB).
MAX_IMAGE_SIZE = 12 * 1024


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("arch", sorted(EXPECT))
def test_vmlinux_is_small(arch: str, form: str) -> None:
    path = TESTDATA / arch / form
    assert path.stat().st_size <= MAX_IMAGE_SIZE, f"{arch}/{form}: {path.stat().st_size} bytes"
    assert not [name for name in sections(path) if name.startswith(".debug_")]
    assert 20 <= len(symbols(path)) <= 150


@pytest.mark.parametrize("arch", sorted(EXPECT))
def test_vmlinux_derived_from_unstripped(arch: str) -> None:
    """objcopy removed sections but moved nothing that is loaded."""
    full = sections(TESTDATA / arch / "vmlinux.unstripped")
    final = sections(TESTDATA / arch / "vmlinux")
    for name, sec in final.items():
        if "A" in sec.flags:
            assert (sec.addr, sec.size) == (full[name].addr, full[name].size), name


def test_kbuild_tree() -> None:
    assert (KBUILD / "vmlinux").read_bytes() == (TESTDATA / "x86_64" / "vmlinux").read_bytes()
    order = (KBUILD / "modules.order").read_text(encoding="utf-8").splitlines()
    assert order == list(KBUILD_ORDER)
    assert order != sorted(order)
    conf = (KBUILD / "include" / "config" / "auto.conf").read_text(encoding="utf-8").splitlines()
    assert 'CONFIG_MODULE_INSTALL_STRIP=""' in conf
    assert sum(line.startswith("CONFIG_") for line in conf) >= 3
    digests = set()
    for entry in order:
        ko = KBUILD / (entry.removesuffix(".o") + ".ko")
        check_module(ko, "Advanced Micro Devices X86-64", "little endian")
        digests.add(sha256(ko))
    assert len(digests) == len(order), "modules must differ from each other"


def test_s390x_module_is_big_endian() -> None:
    check_module(TESTDATA / "modules-s390x" / "tiny_be.ko", "IBM S/390", "big endian")


def check_module(ko: Path, machine: str, endian: str) -> None:
    hdr = header(ko)
    assert hdr["Type"].startswith("REL"), ko
    assert hdr["Machine"] == machine
    assert hdr["Data"].endswith(endian)
    secs = sections(ko)
    assert ".gnu.linkonce.this_module" in secs
    assert secs[".gnu.linkonce.this_module"].size > 0
    assert ".debug_info" in secs and ".symtab" in secs
    info = strings(ko, ".modinfo")
    name = ko.name.removesuffix(".ko")
    for tag in (f"name={name}", VERMAGIC, "license=GPL"):
        assert tag in info, f"{ko}: {tag!r} not in .modinfo {info}"
    assert any(s.startswith("description=") for s in info)
    assert any(s.startswith("author=") for s in info)
    raw = ko.read_bytes()
    sec = secs[".modinfo"]
    assert raw[sec.offset + sec.size - 1] == 0, ".modinfo strings are NUL-terminated"


# -- a property vmpatch must live with ---------------------------------------------

# GNU objcopy on x86 drops section symbols no relocation uses. kbuild's objcopy removes
# the relocation sections in the same run, so the section symbols survive it, but the
# next objcopy of vmlinux (even a no-op copy) drops them: there vmlinux is not an
# objcopy fixed point and `objcopy --update-section` changes .symtab too.
NOT_FIXED_POINT = {("x86_64", "vmlinux"), ("i386", "vmlinux")}


@pytest.mark.parametrize("arch", sorted(EXPECT))
def test_objcopy_fixed_point(arch: str, tmp_path: Path) -> None:
    check_toolchain(arch)
    objcopy = make_testdata().ARCHES[arch].tool("objcopy")
    for form in FORMS:
        src = TESTDATA / arch / form
        out = tmp_path / form
        clirun.tool(objcopy, src, out)
        same = out.read_bytes() == src.read_bytes()
        assert same == ((arch, form) not in NOT_FIXED_POINT), (
            f"{arch}/{form}: fixed point is {same}"
        )
        if not same:
            before, after = symbols(src), symbols(out)
            assert set(after) < set(before)
            assert all(before[n][2] == "SECTION" for n in set(before) - set(after))
