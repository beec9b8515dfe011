# SPDX-License-Identifier: GPL-2.0-or-later
"""A catalogue of hostile inputs across every command: one line, a distinct code, nothing changed.

Each entry builds its bad input in code (from the committed real test data,
with byte edits at the offsets binutils' readelf reports (tests/elfcorrupt.py),
real gzip/xz/zstd/bzip2/lz4 streams, real files, links and permissions), runs
the real command line, and checks:

* the exit code is the one the entry expects (README "The command-line contract");
* stderr is exactly one line ``error: FILE: reason`` naming the file at fault
  (or, for the hook, ``vmpatch-ko-append: ...``) and containing the entry's
  expected words, with no traceback;
* every file under the case's directory is byte-for-byte as before (SHA-256
  of each, and the listing) and no temp file of an atomic write is left.

Cases where the right answer is success (names that differ only in case are
two modules on Linux) are in the catalogue too, with code 0.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from clirun import Run, hook, traversable_dir, vmpatch
from conftest import TESTDATA, require
from elfcorrupt import (
    readelf_facts,
    set_header_field,
    set_section_field,
    set_symbol_field,
)

from vmpatch.fs.atomic import TEMP_MARK
from vmpatch.records.trailer import MARKER, merkle_trailer

KBUILD = TESTDATA / "kbuild-x86_64"
VMLINUX = TESTDATA / "x86_64" / "vmlinux.unstripped"
BOOT = TESTDATA / "boot"
INSTALLED = TESTDATA / "installed-x86_64"
ROOT_ARGS = ["--root", "5a" * 32, "--levels", "3"]

#: The decompression bound the catalogue's bombs are measured against.
LIMIT = "1M"


@dataclass
class Setup:
    """What a case builds: the command, its expected code and words, how to run it."""

    args: list[str]
    code: int
    words: str
    hook: bool = False
    unprivileged: bool = False
    fsize: int | None = None  # RLIMIT_FSIZE for the child, bytes
    names: str | None = None  # the path the error line must name (default: any under the dir)
    untouched: tuple[str, ...] = ()  # relative paths that must not change even on success


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Setup]
    needs_root: bool = False


CASES: list[Case] = []


def case(name: str, *, needs_root: bool = False) -> Callable[[Callable[[Path], Setup]], None]:
    def register(build: Callable[[Path], Setup]) -> None:
        CASES.append(Case(name, build, needs_root))

    return register


# ---------------------------------------------------------------------------
# Helpers that build inputs


def kbuild(d: Path) -> Path:
    require(KBUILD.is_dir(), f"{KBUILD} is missing (run scripts/make-testdata)")
    return Path(shutil.copytree(KBUILD, d / "build"))


def vmlinux(d: Path) -> Path:
    require(VMLINUX.is_file(), f"{VMLINUX} is missing (run scripts/make-testdata)")
    return Path(shutil.copy(VMLINUX, d / "vmlinux"))


def module(d: Path, suffix: str = ".ko") -> Path:
    raw = (KBUILD / "lib" / "crc_toy.ko").read_bytes()
    path = d / f"crc_toy{suffix}"
    path.write_bytes(compress(raw, suffix))
    return path


def compress(raw: bytes, suffix: str) -> bytes:
    if suffix.endswith(".gz"):
        return gzip.compress(raw, mtime=0)
    if suffix.endswith(".xz"):
        return lzma.compress(raw, check=lzma.CHECK_CRC32)
    if suffix.endswith(".zst"):
        import zstandard

        return zstandard.ZstdCompressor().compress(raw)
    return raw


def proof_for(d: Path) -> Path:
    proof = d / "crc_toy.merkle"
    proof.write_bytes(merkle_trailer(1, [bytes([7]) * 32] * 3))
    return proof


def trailer_end(
    *,
    algo: int = 0,
    hash_: int = 0,
    id_type: int = 3,
    signer_len: int = 0,
    key_id_len: int = 0,
    pad: bytes = b"\0\0\0",
    sig_len: int,
) -> bytes:
    """``struct module_signature`` (include/linux/module_signature.h) and the marker."""
    return (
        struct.pack(">BBBBB3sI", algo, hash_, id_type, signer_len, key_id_len, pad, sig_len)
        + MARKER
    )


def bomb(suffix: str, size: int = 8 << 20) -> bytes:
    return compress(b"\0" * size, suffix)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# ---------------------------------------------------------------------------
# ELF fields of the vmlinux (patch reads and writes them, inspect reads them)

ELF_HEADER_EDITS = {
    "e_shoff-past-eof": ("e_shoff", lambda size: size + 4096),
    "e_shoff-huge": ("e_shoff", lambda size: 1 << 62),
    "e_shoff-inside-last-header": ("e_shoff", lambda size: size - 8),
    "e_shnum-huge": ("e_shnum", lambda size: 0xFFFE),
    "e_shstrndx-out-of-range": ("e_shstrndx", lambda size: 0xFFF0),
}

for _label, (_field, _value) in ELF_HEADER_EDITS.items():
    for _command in ("patch", "inspect"):

        def _build(
            d: Path,
            field_: str = _field,
            value: Callable[[int], int] = _value,
            command: str = _command,
        ) -> Setup:
            image = vmlinux(d)
            facts = readelf_facts(image)
            set_header_field(facts, image, field_, value(image.stat().st_size))
            args = (
                ["patch", *ROOT_ARGS, str(image)] if command == "patch" else ["inspect", str(image)]
            )
            return Setup(args, 2, "", names=str(image))

        case(f"elf-{_label}-{_command}")(_build)

SECTION_EDITS = {
    "module_hashes-sh_offset-past-eof": (".module_hashes", "sh_offset", lambda s: s + 1),
    "module_hashes-sh_size-huge": (".module_hashes", "sh_size", lambda s: 1 << 40),
    "module_hashes-sh_size-zero": (".module_hashes", "sh_size", lambda s: 0),
    "module_hashes-sh_size-35": (".module_hashes", "sh_size", lambda s: 35),
    "module_hashes-sh_size-37": (".module_hashes", "sh_size", lambda s: 37),
    "symtab-sh_offset-past-eof": (".symtab", "sh_offset", lambda s: s + 64),
    "symtab-sh_size-huge": (".symtab", "sh_size", lambda s: 1 << 40),
    "symtab-sh_link-out-of-range": (".symtab", "sh_link", lambda s: 0x7FFF),
    "strtab-sh_offset-past-eof": (".strtab", "sh_offset", lambda s: s + 64),
    "strtab-sh_size-huge": (".strtab", "sh_size", lambda s: 1 << 40),
}

for _label, (_section, _field, _value) in SECTION_EDITS.items():

    def _build_section(
        d: Path, section: str = _section, field_: str = _field, value: Callable[[int], int] = _value
    ) -> Setup:
        image = vmlinux(d)
        facts = readelf_facts(image)
        set_section_field(facts, image, field_, value(image.stat().st_size), name=section)
        return Setup(["patch", *ROOT_ARGS, str(image)], 2, "", names=str(image))

    case(f"elf-{_label}")(_build_section)

SYMBOL_EDITS = {
    "st_shndx-out-of-range": ("st_shndx", 0x7FF0),
    "st_shndx-another-section": ("st_shndx", 1),
    "st_value-outside-section": ("st_value", 0x1000),
    "st_size-wrong": ("st_size", 4),
}

for _label, (_field, _number) in SYMBOL_EDITS.items():

    def _build_symbol(d: Path, field_: str = _field, number: int = _number) -> Setup:
        image = vmlinux(d)
        facts = readelf_facts(image)
        set_symbol_field(facts, image, field_, number)
        return Setup(["patch", *ROOT_ARGS, str(image)], 2, "", names=str(image))

    case(f"elf-symbol-{_label}")(_build_symbol)


def _truncation_points(image: Path) -> dict[str, int]:
    facts = readelf_facts(image)
    hashes = facts.section(".module_hashes")
    symtab = facts.section(".symtab")
    return {
        "empty": 0,
        "magic": 3,
        "ident": 16,
        "ehdr": 63,
        "before-section-headers": facts.shoff,
        "first-section-header": facts.shoff + facts.shentsize,
        "last-section-header": image.stat().st_size - 1,
        "inside-module_hashes": hashes.offset + 1,
        "inside-symtab": symtab.offset + 24,
    }


for _point in (
    "empty",
    "magic",
    "ident",
    "ehdr",
    "before-section-headers",
    "first-section-header",
    "last-section-header",
    "inside-module_hashes",
    "inside-symtab",
):

    def _build_truncated(d: Path, point: str = _point) -> Setup:
        image = vmlinux(d)
        length = _truncation_points(image)[point]
        os.truncate(image, length)
        return Setup(["patch", *ROOT_ARGS, str(image)], 2, "", names=str(image))

    case(f"elf-truncated-{_point}")(_build_truncated)


# ---------------------------------------------------------------------------
# Boot images (inspect reads every format)


def boot_copy(d: Path, rel: str) -> Path:
    source = BOOT / rel
    require(source.is_file(), f"{source} is missing (run scripts/make-testdata)")
    image = Path(shutil.copy(source, d / source.name))
    system_map = source.parent / "System.map"
    if system_map.is_file():
        shutil.copy(system_map, d / "System.map")
    return image


def poke(path: Path, offset: int, value: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(value)


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


BOOT_EDITS: dict[str, tuple[str, Callable[[Path], None], int, str]] = {
    "bzimage-setup_sects-huge": (
        "x86_64/bzImage-gzip",
        lambda p: poke(p, 0x1F1, b"\xff"),
        2,
        "beyond the end",
    ),
    "bzimage-payload_offset-past-eof": (
        "x86_64/bzImage-gzip",
        lambda p: poke(p, 0x248, u32(0x7FFFFFFF)),
        2,
        "beyond the end",
    ),
    "bzimage-payload_length-huge": (
        "x86_64/bzImage-gzip",
        lambda p: poke(p, 0x24C, u32(0xFFFFFFF0)),
        2,
        "beyond the end",
    ),
    "bzimage-payload_length-tiny": (
        "x86_64/bzImage-gzip",
        lambda p: poke(p, 0x24C, u32(2)),
        2,
        "bzImage payload",
    ),
    "bzimage-payload-not-compressed": (
        "x86_64/bzImage-xz",
        lambda p: poke(p, 0x248, u32(0)),
        2,
        "no kernel compression format",
    ),
    "bzimage-hdrs-version-2.07": (
        "x86_64/bzImage-gzip",
        lambda p: poke(p, 0x206, (0x0207).to_bytes(2, "little")),
        2,
        "boot protocol 2.07",
    ),
    "zboot-payload_offset-past-eof": (
        "aarch64/vmlinuz.efi",
        lambda p: poke(p, 8, u32(0x7FFFFFF0)),
        2,
        "beyond the end",
    ),
    "zboot-payload_size-huge": (
        "aarch64/vmlinuz.efi",
        lambda p: poke(p, 12, u32(0x7FFFFFF0)),
        2,
        "beyond the end",
    ),
    "zboot-codec-unknown": (
        "aarch64/vmlinuz.efi",
        lambda p: poke(p, 0x18, b"snappy\0\0"),
        2,
        "unknown",
    ),
    "zboot-codec-lies": (
        "riscv64/vmlinuz.efi",
        lambda p: poke(p, 0x18, b"lz4\0\0\0\0\0"),
        2,
        "not lz4 as declared",
    ),
    "arm64-truncated-header": ("aarch64/Image", lambda p: os.truncate(p, 0x40), 2, ""),
    "riscv-truncated-header": ("riscv64/Image", lambda p: os.truncate(p, 0x40), 2, ""),
    "zimage-no-klsz": ("arm/zImage", lambda p: _break_klsz(p), 2, "KLSZ"),
    "zimage-klsz-size-word-past-eof": (
        "arm/zImage",
        lambda p: _klsz_offset(p, 0x7FFFFFF0),
        2,
        "beyond the file",
    ),
    "s390-truncated-after-ep": ("s390x/bzImage", lambda p: os.truncate(p, 0x10010), 2, ""),
    "s390-payload-corrupt": ("s390x/bzImage", lambda p: _zero_tail(p, 0x10100), 2, ""),
    "uki-linux-section-past-eof": (
        "x86_64/uki.efi",
        lambda p: _pe_linux_field(p, 20, 0x7FFFFFF0),
        2,
        "",
    ),
    "uki-linux-section-empty": ("x86_64/uki.efi", lambda p: _pe_linux_field(p, 16, 0), 2, ""),
    "uki-pe-header-past-eof": ("x86_64/uki.efi", lambda p: poke(p, 0x3C, u32(0x7FFFFFF0)), 2, ""),
}


def _break_klsz(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(b"KLSZ")
    assert at > 0, "no KLSZ tag in the zImage"
    data[at : at + 4] = b"XXXX"
    path.write_bytes(bytes(data))


def _klsz_offset(path: Path, value: int) -> None:
    """The KLSZ entry's first word (the size word's offset) pointed past the end."""
    data = path.read_bytes()
    at = data.find(b"KLSZ")
    assert at > 0, "no KLSZ tag in the zImage"
    poke(path, at + 4, u32(value))


def _zero_tail(path: Path, start: int) -> None:
    size = path.stat().st_size
    poke(path, start, b"\0" * (size - start))


def _pe_linux_field(path: Path, where: int, value: int) -> None:
    """Overwrite a field of the ``.linux`` IMAGE_SECTION_HEADER (16 VirtualSize... 20 Pointer)."""
    data = path.read_bytes()
    at = data.find(b".linux\0\0")
    assert at > 0, "no .linux section header"
    poke(path, at + where, u32(value))


for _label, (_rel, _edit, _code, _words) in BOOT_EDITS.items():

    def _build_boot(
        d: Path,
        rel: str = _rel,
        edit: Callable[[Path], None] = _edit,
        code: int = _code,
        words: str = _words,
    ) -> Setup:
        image = boot_copy(d, rel)
        edit(image)
        return Setup(["inspect", str(image)], code, words, names=str(image))

    case(f"boot-{_label}")(_build_boot)

for _codec in ("gzip", "bzip2", "lzma", "xz", "lz4", "zstd"):

    def _build_boot_truncated(d: Path, codec: str = _codec) -> Setup:
        image = boot_copy(d, f"x86_64/bzImage-{codec}")
        data = bytearray(image.read_bytes())
        start = (data[0x1F1] + 1) * 512 + int.from_bytes(data[0x248:0x24C], "little")
        length = int.from_bytes(data[0x24C:0x250], "little")
        cut = start + length // 2  # the stream cut in half, the header still says full length
        data[cut : start + length] = b"\0" * (start + length - cut)
        image.write_bytes(bytes(data))
        return Setup(["inspect", str(image)], 2, "", names=str(image))

    case(f"boot-bzimage-{_codec}-stream-truncated")(_build_boot_truncated)


def _build_boot_bomb(d: Path) -> Setup:
    """A raw Image.gz of 1100 MiB of zeros: more than the boot readers' bound (1 GiB)."""
    image = d / "Image.gz"
    with open(image, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        chunk = b"\0" * (1 << 20)
        for _ in range(1100):
            out.write(chunk)
    return Setup(["inspect", str(image)], 2, "", names=str(image))


case("boot-gzip-bomb")(_build_boot_bomb)


# ---------------------------------------------------------------------------
# Compressed modules: bombs and truncated streams

for _suffix in (".ko.gz", ".ko.xz", ".ko.zst"):

    def _build_bomb(d: Path, suffix: str = _suffix) -> Setup:
        target = d / f"bomb{suffix}"
        target.write_bytes(bomb(suffix))
        return Setup(
            ["ko", "append", "--max-decompressed", LIMIT, str(target), str(proof_for(d))],
            2,
            "",
            names=str(target),
        )

    def _build_truncated_module(d: Path, suffix: str = _suffix) -> Setup:
        # zstd: the kernel decodes a frame cut after its header as the blocks so far
        # (kdecompress), so the cut that every codec's reader refuses is inside the header.
        target = module(d, suffix)
        data = target.read_bytes()
        target.write_bytes(data[:3] if suffix.endswith(".zst") else truncated(data))
        return Setup(["ko", "strip-proof", str(target)], 2, "", names=str(target))

    def _build_hook_bomb(d: Path, suffix: str = _suffix) -> Setup:
        target = d / f"bomb{suffix}"
        target.write_bytes(bomb(suffix))
        return Setup(
            ["--max-decompressed", LIMIT, str(target), str(proof_for(d))],
            2,
            "",
            hook=True,
            names=str(target),
        )

    case(f"module-bomb{_suffix}")(_build_bomb)
    case(f"module-truncated{_suffix}")(_build_truncated_module)
    case(f"hook-bomb{_suffix}")(_build_hook_bomb)


# ---------------------------------------------------------------------------
# modules.order


def order_case(lines: bytes, code: int, words: str = "") -> Callable[[Path], Setup]:
    def build(d: Path) -> Setup:
        build_dir = kbuild(d)
        (build_dir / "modules.order").write_bytes(lines)
        return Setup(["tree", str(build_dir)], code, words)

    return build


_GOOD = (KBUILD / "modules.order").read_bytes() if KBUILD.is_dir() else b""
case("order-crlf")(order_case(_GOOD.replace(b"\n", b"\r\n"), 2))
case("order-blank-line")(order_case(_GOOD.replace(b"\n", b"\n\n", 1), 2))
case("order-trailing-space")(order_case(_GOOD.replace(b"\n", b" \n", 1), 2))
case("order-absolute-path")(order_case(b"/lib/crc_toy.o\n" + _GOOD, 2))
case("order-dotdot")(order_case(b"../lib/crc_toy.o\n" + _GOOD, 2))
case("order-dotdot-inside")(order_case(b"lib/../lib/crc_toy.o\n" + _GOOD, 2))
case("order-duplicate")(order_case(_GOOD + _GOOD.splitlines(keepends=True)[0], 2))
case("order-missing-module")(order_case(_GOOD + b"lib/nonexistent.o\n", 2))
case("order-nul-byte")(order_case(_GOOD + b"lib/cr\0c.o\n", 2))
case("order-not-utf8")(order_case(_GOOD + b"lib/\xff\xfe.o\n", 2))


def _build_case_names(d: Path) -> Setup:
    """lib/Foo.ko and lib/foo.ko are two files on Linux: two modules, both hashed."""
    build_dir = kbuild(d)
    shutil.copy(build_dir / "lib" / "crc_toy.ko", build_dir / "lib" / "CRC_TOY.ko")
    with open(build_dir / "modules.order", "ab") as f:
        f.write(b"lib/CRC_TOY.o\n")
    return Setup(["tree", "--no-proofs", str(build_dir)], 0, "")


case("order-names-differ-only-in-case")(_build_case_names)


# ---------------------------------------------------------------------------
# Trailers: a proof file with every struct module_signature field wrong


def proof_case(end: Callable[[int], bytes], words: str) -> Callable[[Path], Setup]:
    def build(d: Path) -> Setup:
        target = module(d)
        proof = d / "bad.merkle"
        body = (1).to_bytes(4, "big") + bytes([7]) * 96
        proof.write_bytes(body + end(len(body)))
        return Setup(["ko", "append", str(target), str(proof)], 2, words, names=str(proof))

    return build


case("proof-algo")(proof_case(lambda n: trailer_end(algo=1, sig_len=n), "non-zero"))
case("proof-hash")(proof_case(lambda n: trailer_end(hash_=4, sig_len=n), "non-zero"))
case("proof-id_type-pkcs7")(proof_case(lambda n: trailer_end(id_type=2, sig_len=n), "PKCS#7"))
case("proof-id_type-unknown")(proof_case(lambda n: trailer_end(id_type=9, sig_len=n), "type 9"))
case("proof-signer_len")(proof_case(lambda n: trailer_end(signer_len=3, sig_len=n), "non-zero"))
case("proof-key_id_len")(proof_case(lambda n: trailer_end(key_id_len=8, sig_len=n), "non-zero"))
case("proof-pad")(proof_case(lambda n: trailer_end(pad=b"\0\1\0", sig_len=n), "non-zero"))
case("proof-sig_len-huge")(proof_case(lambda n: trailer_end(sig_len=0xFFFFFFFF), "sig_len"))
case("proof-sig_len-short")(proof_case(lambda n: trailer_end(sig_len=n - 32), "sig_len"))
case("proof-sig_len-not-levels")(
    proof_case(
        lambda n: trailer_end(sig_len=n) if False else b"\0" + trailer_end(sig_len=n + 1), "4 + 32"
    )
)


def _build_two_trailers_proof(d: Path) -> Setup:
    target = module(d)
    one = merkle_trailer(1, [bytes([7]) * 32] * 3)
    proof = d / "two.merkle"
    proof.write_bytes(one + one)
    return Setup(["ko", "append", str(target), str(proof)], 2, "", names=str(proof))


def _build_marker_misplaced(d: Path) -> Setup:
    target = module(d)
    proof = d / "marker.merkle"
    proof.write_bytes(merkle_trailer(1, [bytes([7]) * 32] * 3) + b"\n")
    return Setup(["ko", "append", str(target), str(proof)], 2, "marker", names=str(proof))


def _build_module_sig_len_huge(d: Path) -> Setup:
    target = module(d)
    target.write_bytes(target.read_bytes() + trailer_end(sig_len=0x7FFFFFFF))
    return Setup(["ko", "strip-proof", str(target)], 2, "does not fit", names=str(target))


def _build_module_sig_len_whole(d: Path) -> Setup:
    """sig_len equal to everything before the info: no module byte left (mod_check_sig)."""
    target = module(d)
    data = target.read_bytes()
    target.write_bytes(data + trailer_end(sig_len=len(data)))
    return Setup(["ko", "strip-proof", str(target)], 2, "does not fit", names=str(target))


def _build_module_trailer_tree(d: Path) -> Setup:
    build_dir = kbuild(d)
    target = build_dir / "lib" / "crc_toy.ko"
    target.write_bytes(target.read_bytes() + merkle_trailer(1, [bytes([7]) * 32] * 3))
    return Setup(["tree", str(build_dir)], 2, "", names=str(target))


def _build_proof_is_module(d: Path) -> Setup:
    target = module(d)
    return Setup(["ko", "append", str(proof_for(d)), str(target)], 2, "swapped", names=None)


case("proof-two-trailers")(_build_two_trailers_proof)
case("proof-marker-misplaced")(_build_marker_misplaced)
case("module-trailer-sig_len-huge")(_build_module_sig_len_huge)
case("module-trailer-sig_len-whole-file")(_build_module_sig_len_whole)
case("tree-module-already-has-trailer")(_build_module_trailer_tree)
case("append-arguments-swapped")(_build_proof_is_module)


# ---------------------------------------------------------------------------
# Links


def _build_symlink_loop(d: Path) -> Setup:
    build_dir = kbuild(d)
    target = build_dir / "lib" / "crc_toy.ko"
    target.unlink()
    target.symlink_to("crc_toy.ko")
    return Setup(
        ["tree", str(build_dir)], 3, "Too many levels of symbolic links", names=str(target)
    )


def _build_order_link_loop(d: Path) -> Setup:
    build_dir = kbuild(d)
    order = build_dir / "modules.order"
    order.unlink()
    order.symlink_to("modules.order")
    return Setup(["tree", str(build_dir)], 3, "Too many levels of symbolic links", names=str(order))


def _build_reroot_link_out(d: Path) -> Setup:
    build_dir = kbuild(d)
    outside = d / "outside.ko"
    target = build_dir / "lib" / "crc_toy.ko"
    shutil.move(target, outside)
    target.symlink_to(outside)
    # A kbuild tree's modules are only read (the proofs go beside them): the link is
    # followed for reading and the file it names, outside the tree, is never written.
    return Setup(["reroot", str(build_dir)], 0, "", untouched=("outside.ko",))


def _build_append_link_loop(d: Path) -> Setup:
    target = d / "loop.ko"
    target.symlink_to("loop.ko")
    return Setup(
        ["ko", "append", str(target), str(proof_for(d))],
        3,
        "Too many levels of symbolic links",
        names=str(target),
    )


case("tree-module-symlink-loop")(_build_symlink_loop)
case("tree-modules-order-symlink-loop")(_build_order_link_loop)
case("reroot-module-links-out-of-tree")(_build_reroot_link_out)
case("append-module-symlink-loop")(_build_append_link_loop)


# ---------------------------------------------------------------------------
# Permissions (as nobody: root would write anyway)


def _build_readonly_module(d: Path) -> Setup:
    target = module(d)
    proof = proof_for(d)
    target.chmod(0o444)
    return Setup(
        ["ko", "append", str(target), str(proof)], 3, "", unprivileged=True, names=str(target)
    )


def _build_readonly_dir_append(d: Path) -> Setup:
    sub = d / "ro"
    sub.mkdir()
    target = module(sub)
    proof = proof_for(d)
    target.chmod(0o666)
    sub.chmod(0o555)
    return Setup(["ko", "append", str(target), str(proof)], 3, "", unprivileged=True)


def _build_readonly_tree(d: Path) -> Setup:
    build_dir = kbuild(d)
    for p in sorted(build_dir.rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    build_dir.chmod(0o555)
    return Setup(["tree", str(build_dir)], 3, "", unprivileged=True)


def _build_readonly_image(d: Path) -> Setup:
    image = vmlinux(d)
    image.chmod(0o444)
    return Setup(["patch", *ROOT_ARGS, str(image)], 3, "", unprivileged=True, names=str(image))


def _build_readonly_hook(d: Path) -> Setup:
    target = module(d)
    proof = proof_for(d)
    target.chmod(0o444)
    return Setup([str(target), str(proof)], 3, "", hook=True, unprivileged=True, names=str(target))


def _build_readonly_strip_proof(d: Path) -> Setup:
    target = module(d)
    target.write_bytes(target.read_bytes() + merkle_trailer(1, [bytes([7]) * 32] * 3))
    d.chmod(0o555)
    return Setup(["ko", "strip-proof", str(target)], 3, "", unprivileged=True)


case("readonly-module-append", needs_root=True)(_build_readonly_module)
case("readonly-dir-append", needs_root=True)(_build_readonly_dir_append)
case("readonly-tree", needs_root=True)(_build_readonly_tree)
case("readonly-image-patch", needs_root=True)(_build_readonly_image)
case("readonly-module-hook", needs_root=True)(_build_readonly_hook)
case("readonly-dir-strip-proof", needs_root=True)(_build_readonly_strip_proof)


# ---------------------------------------------------------------------------
# A full disk: RLIMIT_FSIZE in the child (Python ignores SIGXFSZ, the write fails EFBIG)


def _build_full_append(d: Path) -> Setup:
    target = module(d)
    return Setup(
        ["ko", "append", str(target), str(proof_for(d))], 3, "", fsize=target.stat().st_size // 2
    )


def _build_full_patch_output(d: Path) -> Setup:
    image = vmlinux(d)
    return Setup(
        ["patch", *ROOT_ARGS, "--output", str(d / "patched"), str(image)],
        3,
        "",
        fsize=image.stat().st_size // 2,
    )


def _build_full_tree_root(d: Path) -> Setup:
    build_dir = kbuild(d)
    return Setup(["tree", str(build_dir)], 3, "", fsize=100)


def _build_full_strip_proof(d: Path) -> Setup:
    target = module(d, ".ko.xz")
    raw = lzma.decompress(target.read_bytes())
    target.write_bytes(compress(raw + merkle_trailer(1, [bytes([7]) * 32] * 3), ".ko.xz"))
    return Setup(
        ["ko", "strip-proof", "-o", str(d / "out.ko"), str(target)], 3, "", fsize=len(raw) // 2
    )


case("full-disk-append")(_build_full_append)
case("full-disk-patch-output")(_build_full_patch_output)
case("full-disk-tree-proofs")(_build_full_tree_root)
case("full-disk-strip-proof-output")(_build_full_strip_proof)


# ---------------------------------------------------------------------------
# Odd files where a module or image is expected


def _build_dir_as_module(d: Path) -> Setup:
    target = d / "dir.ko"
    target.mkdir()
    return Setup(["ko", "append", str(target), str(proof_for(d))], 2, "", names=str(target))


def _build_empty_module(d: Path) -> Setup:
    target = d / "empty.ko.gz"
    target.write_bytes(b"")
    return Setup(["ko", "strip-proof", str(target)], 2, "", names=str(target))


def _build_wrong_codec_suffix(d: Path) -> Setup:
    target = d / "crc_toy.ko.xz"
    target.write_bytes(gzip.compress((KBUILD / "lib" / "crc_toy.ko").read_bytes()))
    return Setup(["ko", "strip-proof", str(target)], 2, "", names=str(target))


def _build_bz2_module(d: Path) -> Setup:
    target = d / "crc_toy.ko.gz"
    target.write_bytes(bz2.compress((KBUILD / "lib" / "crc_toy.ko").read_bytes()))
    return Setup(["ko", "strip-proof", str(target)], 2, "", names=str(target))


def _build_missing_image(d: Path) -> Setup:
    return Setup(["patch", *ROOT_ARGS, str(d / "nothing")], 2, "", names=str(d / "nothing"))


def _build_root_file_wrong_size(d: Path) -> Setup:
    image = vmlinux(d)
    root_file = d / "root.bin"
    root_file.write_bytes(b"\1" * 35)
    return Setup(["patch", "--root-file", str(root_file), str(image)], 2, "", names=str(root_file))


def _build_verify_kernel_garbage(d: Path) -> Setup:
    kernel = d / "vmlinux"
    kernel.write_bytes(b"\x7fELF" + b"\xff" * 60)
    return Setup(["verify", "--kernel", str(kernel), str(module(d))], 2, "", names=str(kernel))


def _build_append_tree_position(d: Path) -> Setup:
    build_dir = kbuild(d)
    assert vmpatch("tree", build_dir).returncode == 0
    a, b = build_dir / "lib" / "crc_toy.merkle", build_dir / "lib" / "zz_first.merkle"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    return Setup(["ko", "append-tree", str(build_dir)], 2, "position")


case("append-directory-as-module")(_build_dir_as_module)
case("strip-proof-empty-gz")(_build_empty_module)
case("strip-proof-gzip-named-xz")(_build_wrong_codec_suffix)
case("strip-proof-bzip2-named-gz")(_build_bz2_module)
case("patch-missing-image")(_build_missing_image)
case("patch-root-file-35-bytes")(_build_root_file_wrong_size)
case("verify-kernel-garbage-elf")(_build_verify_kernel_garbage)
case("append-tree-proofs-swapped")(_build_append_tree_position)


# ---------------------------------------------------------------------------
# The runner


def digest_all(top: Path) -> dict[str, str]:
    """Every entry under ``top``: files by SHA-256, links by target, directories by name."""
    found = {}
    for p in sorted(top.rglob("*")):
        rel = str(p.relative_to(top))
        if p.is_symlink():
            found[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = "other"
    return found


def fsize_program(limit: int) -> list[str]:
    code = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "sys.argv[0] = 'vmpatch'; runpy.run_module('vmpatch', run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def run_setup(setup: Setup) -> Run:
    if setup.hook:
        return hook(*setup.args, unprivileged=setup.unprivileged)
    program = fsize_program(setup.fsize) if setup.fsize is not None else None
    return vmpatch(*setup.args, program=program, unprivileged=setup.unprivileged)


def restore_writable(top: Path) -> None:
    for p in [top, *top.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | 0o700)


def test_catalogue_has_at_least_80_cases() -> None:
    assert len(CASES) >= 80, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("entry", CASES, ids=[c.name for c in CASES])
def test_catalogue(tmp_path: Path, entry: Case) -> None:
    with traversable_dir() as top:
        d = top / "case"
        d.mkdir()
        d.chmod(0o777)
        setup = entry.build(d)
        before = digest_all(d)
        try:
            proc = run_setup(setup)
        finally:
            after = digest_all(d)
            restore_writable(d)
        lines = proc.stderr.splitlines()
        assert proc.returncode == setup.code, (proc.returncode, proc.stderr)
        if setup.code == 0:
            assert "Traceback" not in proc.stderr
        else:
            assert len(lines) == 1, proc.stderr
            line = lines[0]
            prefix = "vmpatch-ko-append: " if setup.hook else "error: "
            assert line.startswith(prefix), line
            assert "Traceback" not in proc.stderr
            if setup.names is not None:
                assert setup.names in line, f"the line does not name {setup.names}: {line}"
            else:
                assert str(d) in line, f"the line names no file of the case: {line}"
            assert setup.words in line, f"expected {setup.words!r} in {line!r}"
            assert MESSAGES.get(entry.name, "") in line, (
                f"expected {MESSAGES.get(entry.name)!r} in {line!r}"
            )
        if setup.code != 0:
            assert after == before, "an input changed"
        for rel in setup.untouched:
            assert after[rel] == before[rel], f"{rel} changed"
        assert not [k for k in after if TEMP_MARK in k], "a temp file was left"


#: The reason each case's line gives (after the file name), where it is not in the case itself.
MESSAGES: dict[str, str] = {}
