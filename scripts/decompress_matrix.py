# SPDX-License-Identifier: GPL-2.0-or-later
"""The decompression matrix: compressed modules the kernel's own decompressor judges.

Each case takes one real e2e module with its correct Merkle proof appended
(``../shared/e2e/artifacts``, root ``6c154dcf…``), compresses it with the real
``xz``/``gzip``/``zstd`` programs (or lays out a header by hand where no
program writes it), and names the ``vmlinux-modz-*`` kernel that loads it
through ``finit_module(MODULE_INIT_COMPRESSED_FILE)``. The kernel's answers
are recorded in ``testdata/decompress-matrix/kernel-answers.tsv`` by
``scripts/check-decompress-matrix``; ``tests/test_decompress_matrix.py``
rebuilds every case and checks that vmpatch's verdict equals the record.

Used by both, so it has no project imports beyond the standard library.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

E2E = Path(
    os.environ.get("VMPATCH_E2E_DIR", Path(__file__).resolve().parents[2] / "shared" / "e2e")
)
if not (E2E / "artifacts").is_dir():
    E2E = Path("/work/shared/e2e")
ARTIFACTS = E2E / "artifacts"
ROOT_BIN = E2E / "results" / "root.bin"

#: The e2e modules a boot can load in any order (test_static_keys needs its base first).
MODULES = (
    "crc-ccitt",
    "crc-itu-t",
    "crc16",
    "crc4",
    "crc64",
    "crc7",
    "crc8",
    "test_bitops",
    "test_div64",
    "test_hexdump",
    "test_min_heap",
    "test_module",
    "test_mul_u64_u64_div_u64",
    "test_static_key_base",
    "test_uuid",
)

SUFFIX = {"gzip": ".ko.gz", "xz": ".ko.xz", "zstd": ".ko.zst"}

Build = Callable[[bytes], bytes]


def _run(*argv: str) -> Build:
    def build(data: bytes) -> bytes:
        return subprocess.run(
            list(argv),
            input=data,
            stdout=subprocess.PIPE,
            check=True,
            env={**os.environ, "LC_ALL": "C"},
        ).stdout

    build.__doc__ = " ".join(argv)
    return build


KBUILD_XZ = ("xz", "--check=crc32", "--lzma2=dict=1MiB")  # scripts/Makefile.modinst
KBUILD_GZIP = ("gzip", "-n")
KBUILD_ZSTD = ("zstd", "-T0")


def _cat(*builds: Build) -> Build:
    def build(data: bytes) -> bytes:
        return b"".join(b(data) for b in builds)

    return build


def _then(first: Build, tail: bytes) -> Build:
    return lambda data: first(data) + tail


def _halves(compressor: Build) -> Build:
    """The module split in two, each half compressed on its own, concatenated."""

    def build(data: bytes) -> bytes:
        half = len(data) // 2
        return compressor(data[:half]) + compressor(data[half:])

    return build


def _truncate(compressor: Build, drop: int) -> Build:
    return lambda data: compressor(data)[:-drop]


def _gzip_header(flags: int, extra: bytes = b"") -> bytes:
    return b"\x1f\x8b\x08" + bytes([flags]) + b"\x00\x00\x00\x00\x00\x03" + extra


def _gzip_by_hand(flags: int, fields: bytes) -> Build:
    """A gzip member with optional header fields, as RFC 1952 lays them out."""

    def build(data: bytes) -> bytes:
        co = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = co.compress(data) + co.flush()
        header = _gzip_header(flags, fields)
        if flags & 0x02:  # FHCRC: the low 16 bits of the header's CRC32
            header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
        return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)

    return build


def _gzip_bad_crc(data: bytes) -> bytes:
    out = bytearray(gzip.compress(data, mtime=0))
    out[-8] ^= 0xFF
    return bytes(out)


def _zstd_skippable(payload: bytes = b"vmpatch") -> bytes:
    return struct.pack("<II", 0x184D2A50, len(payload)) + payload


def _zstd_bad_checksum(data: bytes) -> bytes:
    out = bytearray(_run(*KBUILD_ZSTD)(data))
    out[-1] ^= 0xFF
    return bytes(out)


@dataclass(frozen=True)
class Case:
    name: str
    kernel: str  # gzip, xz, zstd: the vmlinux-modz-* kernel; plain: the base kernel
    codec: str  # the file's suffix codec
    build: Build
    what: str
    ram_dependent: bool = False
    """The kernel's errno depends on the guest's memory (boot-check gives it 256 MiB)."""


CASES: tuple[Case, ...] = (
    # xz kernel: lib/xz
    Case("xz-kbuild-crc32", "xz", "xz", _run(*KBUILD_XZ), "xz --check=crc32 --lzma2=dict=1MiB"),
    Case("xz-check-none", "xz", "xz", _run("xz", "--check=none"), "xz --check=none"),
    Case("xz-default-crc64", "xz", "xz", _run("xz"), "xz (default CRC64)"),
    Case("xz-check-sha256", "xz", "xz", _run("xz", "--check=sha256"), "xz --check=sha256"),
    Case(
        "xz-bcj-x86", "xz", "xz", _run("xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB"), "--x86"
    ),
    Case("xz-bcj-arm64", "xz", "xz", _run("xz", "--check=crc32", "--arm64", "--lzma2"), "--arm64"),
    Case(
        "xz-bcj-powerpc",
        "xz",
        "xz",
        _run("xz", "--check=crc32", "--powerpc", "--lzma2"),
        "--powerpc",
    ),
    Case(
        "xz-bcj-armthumb",
        "xz",
        "xz",
        _run("xz", "--check=crc32", "--armthumb", "--lzma2"),
        "--armthumb",
    ),
    Case("xz-bcj-ia64", "xz", "xz", _run("xz", "--check=crc32", "--ia64", "--lzma2"), "--ia64"),
    Case("xz-bcj-arm", "xz", "xz", _run("xz", "--check=crc32", "--arm", "--lzma2"), "--arm"),
    Case("xz-bcj-sparc", "xz", "xz", _run("xz", "--check=crc32", "--sparc", "--lzma2"), "--sparc"),
    Case(
        "xz-bcj-start-offset",
        "xz",
        "xz",
        _run("xz", "--check=crc32", "--x86=start=16", "--lzma2"),
        "--x86=start=16",
    ),
    Case(
        "xz-two-bcj",
        "xz",
        "xz",
        _run("xz", "--check=crc32", "--x86", "--arm", "--lzma2"),
        "3 filters",
    ),
    Case(
        "xz-empty-first-stream",
        "xz",
        "xz",
        lambda d: _run(*KBUILD_XZ)(b"") + _run(*KBUILD_XZ)(d),
        "an empty stream, then the module",
    ),
    Case(
        "xz-delta", "xz", "xz", _run("xz", "--check=crc32", "--delta=dist=4", "--lzma2"), "--delta"
    ),
    Case(
        "xz-two-streams",
        "xz",
        "xz",
        _then(_run(*KBUILD_XZ), _run(*KBUILD_XZ)(b"extra")),
        "2 streams",
    ),
    Case("xz-stream-padding", "xz", "xz", _then(_run(*KBUILD_XZ), b"\0" * 8), "8 bytes padding"),
    Case("xz-trailing-bytes", "xz", "xz", _then(_run(*KBUILD_XZ), b"garbage!"), "bytes after"),
    Case("xz-split-halves", "xz", "xz", _halves(_run(*KBUILD_XZ)), "module in 2 streams"),
    Case("xz-truncated", "xz", "xz", _truncate(_run(*KBUILD_XZ), 20), "last 20 bytes cut"),
    Case("xz-dict-64MiB", "xz", "xz", _run("xz", "-9", "--check=crc32"), "xz -9: 64 MiB dict"),
    Case(
        "xz-multiblock",
        "xz",
        "xz",
        _run("xz", "--check=crc32", "-T2", "--block-size=4096"),
        "blocks",
    ),
    Case("xz-lzma-alone", "xz", "xz", _run("xz", "--format=lzma"), ".lzma named .ko.xz"),
    Case("xz-kernel-gets-gzip", "xz", "gzip", _run(*KBUILD_GZIP), "a .ko.gz on the xz kernel"),
    Case("xz-kernel-gets-zstd", "xz", "zstd", _run(*KBUILD_ZSTD), "a .ko.zst on the xz kernel"),
    # gzip kernel: lib/zlib_inflate
    Case("gz-kbuild-n", "gzip", "gzip", _run(*KBUILD_GZIP), "gzip -n"),
    Case("gz-name-time", "gzip", "gzip", _run("gzip", "-N", "-c"), "gzip -N (FNAME, MTIME)"),
    Case("gz-time-only", "gzip", "gzip", lambda d: gzip.compress(d, mtime=1700000000), "MTIME"),
    Case("gz-best", "gzip", "gzip", _run("gzip", "-n", "-9"), "gzip -9"),
    Case(
        "gz-two-members",
        "gzip",
        "gzip",
        _then(_run(*KBUILD_GZIP), gzip.compress(b"x", mtime=0)),
        "2",
    ),
    Case(
        "gz-trailing-bytes", "gzip", "gzip", _then(_run(*KBUILD_GZIP), b"garbage!"), "bytes after"
    ),
    Case("gz-split-halves", "gzip", "gzip", _halves(_run(*KBUILD_GZIP)), "module in 2 members"),
    Case("gz-bad-crc32", "gzip", "gzip", _gzip_bad_crc, "wrong CRC32 in the trailer"),
    Case("gz-no-trailer", "gzip", "gzip", _truncate(_run(*KBUILD_GZIP), 8), "CRC32+ISIZE cut"),
    Case("gz-truncated", "gzip", "gzip", _truncate(_run(*KBUILD_GZIP), 40), "deflate cut"),
    Case("gz-fhcrc", "gzip", "gzip", _gzip_by_hand(0x02, b""), "FHCRC"),
    Case("gz-fextra", "gzip", "gzip", _gzip_by_hand(0x04, b"\x04\x00AB\x00\x00"), "FEXTRA"),
    Case("gz-fcomment", "gzip", "gzip", _gzip_by_hand(0x10, b"a comment\x00"), "FCOMMENT"),
    Case(
        "gz-fname-fcomment",
        "gzip",
        "gzip",
        _gzip_by_hand(0x18, b"m.ko\x00note\x00"),
        "FNAME+FCOMMENT",
    ),
    Case("gz-reserved-flags", "gzip", "gzip", _gzip_by_hand(0xE0, b""), "FLG bits 5-7 set"),
    Case("gz-fname-flag-no-name", "gzip", "gzip", _gzip_by_hand(0x08, b""), "FNAME, no name"),
    Case("gz-zlib-format", "gzip", "gzip", lambda d: zlib.compress(d), "zlib stream named .ko.gz"),
    Case("gz-kernel-gets-xz", "gzip", "xz", _run(*KBUILD_XZ), "a .ko.xz on the gzip kernel"),
    # zstd kernel: lib/zstd
    Case("zst-kbuild", "zstd", "zstd", _run(*KBUILD_ZSTD), "zstd -T0 (checksum)"),
    Case("zst-no-check", "zstd", "zstd", _run("zstd", "--no-check"), "zstd --no-check"),
    Case("zst-ultra-22", "zstd", "zstd", _run("zstd", "--ultra", "-22"), "zstd --ultra -22"),
    Case("zst-no-content-size", "zstd", "zstd", _run("zstd", "--no-content-size"), "no size"),
    Case(
        "zst-two-frames",
        "zstd",
        "zstd",
        _then(_run(*KBUILD_ZSTD), _run(*KBUILD_ZSTD)(b"extra")),
        "2",
    ),
    Case(
        "zst-skippable-after", "zstd", "zstd", _then(_run(*KBUILD_ZSTD), _zstd_skippable()), "skip"
    ),
    Case(
        "zst-skippable-before",
        "zstd",
        "zstd",
        lambda d: _zstd_skippable() + _run(*KBUILD_ZSTD)(d),
        "skippable frame first",
    ),
    Case(
        "zst-trailing-bytes", "zstd", "zstd", _then(_run(*KBUILD_ZSTD), b"garbage!"), "bytes after"
    ),
    Case("zst-split-halves", "zstd", "zstd", _halves(_run(*KBUILD_ZSTD)), "module in 2 frames"),
    Case("zst-bad-checksum", "zstd", "zstd", _zstd_bad_checksum, "wrong content checksum"),
    Case("zst-truncated", "zstd", "zstd", _truncate(_run(*KBUILD_ZSTD), 40), "last 40 bytes cut"),
    Case(
        "zst-long-window",
        "zstd",
        "zstd",
        _run("zstd", "--ultra", "-22", "--long=31"),
        "2 GiB window",
    ),
    Case(
        "zst-window-256MiB",
        "zstd",
        "zstd",
        _run("zstd", "--ultra", "-22", "--long=28"),
        "256 MiB window (stdin: no content size)",
        ram_dependent=True,
    ),
    Case("zst-kernel-gets-xz", "zstd", "xz", _run(*KBUILD_XZ), "a .ko.xz on the zstd kernel"),
    # the base kernel: no MODULE_DECOMPRESS
    Case("plain-kernel-gets-xz", "plain", "xz", _run(*KBUILD_XZ), "no MODULE_DECOMPRESS"),
    Case("plain-kernel-gets-gzip", "plain", "gzip", _run(*KBUILD_GZIP), "no MODULE_DECOMPRESS"),
    Case("plain-kernel-gets-zstd", "plain", "zstd", _run(*KBUILD_ZSTD), "no MODULE_DECOMPRESS"),
)


def kernel_files(kernel: str) -> tuple[Path, Path]:
    """The unpatched vmlinux and the config of a matrix kernel."""
    if kernel == "plain":
        return ARTIFACTS / "vmlinux", ARTIFACTS / "config"
    return ARTIFACTS / f"vmlinux-modz-{kernel}", ARTIFACTS / f"config-modz-{kernel}"


def boots() -> list[tuple[str, list[tuple[Case, str]]]]:
    """The cases grouped into boots: one kernel each, every module at most once."""
    out: list[tuple[str, list[tuple[Case, str]]]] = []
    for kernel in ("xz", "gzip", "zstd", "plain"):
        group = [c for c in CASES if c.kernel == kernel]
        for start in range(0, len(group), len(MODULES)):
            chunk = group[start : start + len(MODULES)]
            out.append((kernel, [(case, MODULES[i]) for i, case in enumerate(chunk)]))
    return out


def assignments() -> dict[str, str]:
    """Case name -> the e2e module it carries."""
    return {case.name: module for _, chunk in boots() for case, module in chunk}


def proved_module(proved_dir: Path, module: str) -> bytes:
    """The module with its proof appended (``cat x.ko x.merkle``)."""
    return (proved_dir / f"{module}.ko").read_bytes()


def case_file(case: Case, module: str, proved_dir: Path, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{module}{SUFFIX[case.codec]}"
    target.write_bytes(case.build(proved_module(proved_dir, module)))
    return target
