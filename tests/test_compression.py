# SPDX-License-Identifier: GPL-2.0-or-later
"""vmpatch.ko.compression against the real gzip, xz and zstd command-line tools."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from clirun import tool, tool_text
from conftest import require_tool
from hypothesis import given, settings
from hypothesis import strategies as st

from vmpatch.errors import InputError
from vmpatch.ko.compression import (
    DEFAULT_MAX_DECOMPRESSED,
    XZ_DICT_SIZE,
    Codec,
    codec_for_path,
    compress,
    decompress,
    read_module,
)

PACKAGES = {"gzip": "gzip", "xz": "xz-utils", "zstd": "zstd"}
CLI = {Codec.GZIP: "gzip", Codec.XZ: "xz", Codec.ZSTD: "zstd"}
COMPRESSED = [Codec.GZIP, Codec.XZ, Codec.ZSTD]


def _payload() -> bytes:
    """Module-like bytes: an ELF magic, some incompressible and some repetitive data."""
    return b"\x7fELF" + os.urandom(70_000) + b"\0" * 50_000 + b"license=GPL\0" * 500


def _cli(codec: Codec) -> str:
    name = CLI[codec]
    return require_tool(name, PACKAGES[name])


def _cli_compress(codec: Codec, src: Path) -> Path:
    """Compress ``src`` with the CLI exactly as kbuild's Makefile.modinst does."""
    cli = _cli(codec)
    dst = src.with_name(src.name + codec.suffix)
    argv = {
        Codec.GZIP: [cli, "-n", "-c", str(src)],
        Codec.XZ: [cli, "--check=crc32", "--lzma2=dict=1MiB", "-c", str(src)],
        Codec.ZSTD: [cli, "-T0", "-q", "-c", str(src)],
    }[codec]
    dst.write_bytes(tool(*argv).stdout)
    return dst


@pytest.mark.parametrize("codec", COMPRESSED, ids=lambda c: c.label)
def test_cli_compressed_module_reads_back(tmp_path: Path, codec: Codec) -> None:
    data = _payload()
    src = tmp_path / "mod.ko"
    src.write_bytes(data)
    module = read_module(_cli_compress(codec, src))
    assert module.codec is codec
    assert module.data == data
    assert module.path == src.with_name("mod.ko" + codec.suffix)


def test_plain_module_reads_unchanged(tmp_path: Path) -> None:
    data = _payload()
    (tmp_path / "mod.ko").write_bytes(data)
    module = read_module(tmp_path / "mod.ko")
    assert module.codec is Codec.NONE
    assert module.data == data


@pytest.mark.parametrize("codec", COMPRESSED, ids=lambda c: c.label)
def test_compress_output_decompresses_with_cli(tmp_path: Path, codec: Codec) -> None:
    data = _payload()
    out = tmp_path / ("mod.ko" + codec.suffix)
    out.write_bytes(compress(data, codec))
    result = tool(_cli(codec), "-d", "-c", out)
    assert result.stdout == data
    # And the CLI's own integrity test agrees.
    tool(_cli(codec), "-t", out)


@pytest.mark.parametrize("codec", list(Codec), ids=lambda c: c.label)
def test_compress_is_deterministic(codec: Codec) -> None:
    data = _payload()
    assert compress(data, codec) == compress(data, codec)


def test_xz_parameters_match_kbuild(tmp_path: Path) -> None:
    out = tmp_path / "mod.ko.xz"
    out.write_bytes(compress(_payload(), Codec.XZ))
    robot = tool_text(_cli(Codec.XZ), "--list", "--robot", "-vv", out)
    streams = [line.split("\t") for line in robot.splitlines() if line.startswith("stream\t")]
    assert len(streams) == 1
    assert streams[0][8] == "CRC32"  # the check column of the "stream" line
    blocks = [line.split("\t") for line in robot.splitlines() if line.startswith("block\t")]
    assert blocks, robot
    for block in blocks:
        assert "dict=1MiB" in block[-1], block  # the filter chain of the block
    assert XZ_DICT_SIZE == 1 << 20


def test_gzip_header_like_gzip_n() -> None:
    blob = compress(_payload(), Codec.GZIP)
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[3] == 0  # no FNAME, no other flags: what `gzip -n` writes
    assert blob[4:8] == b"\0\0\0\0"  # mtime 0


def test_zstd_frame_has_checksum_and_content_size(tmp_path: Path) -> None:
    import zstandard

    data = _payload()
    blob = compress(data, Codec.ZSTD)
    params = zstandard.get_frame_parameters(blob)
    assert params.has_checksum
    assert params.content_size == len(data)
    out = tmp_path / "mod.ko.zst"
    out.write_bytes(blob)
    listing = tool_text(_cli(Codec.ZSTD), "-lv", out)
    assert "XXH64" in listing


@pytest.mark.parametrize("codec", COMPRESSED, ids=lambda c: c.label)
def test_decompression_bomb_is_bounded(tmp_path: Path, codec: Codec) -> None:
    """300 MiB of zeros made by the CLI is refused with a 1 MiB limit, quickly."""
    cli = _cli(codec)
    bomb = tmp_path / ("bomb.ko" + codec.suffix)
    extra = {Codec.GZIP: ["-n"], Codec.XZ: ["--check=crc32"], Codec.ZSTD: ["-q"]}[codec]
    with bomb.open("wb") as out:
        # set -o pipefail: a failing `head` must fail the bomb, not shrink it.
        script = f'set -o pipefail; head -c {300 << 20} /dev/zero | "$0" "$@" -c'
        tool("bash", "-c", script, cli, *extra, stdout=out)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(InputError) as err:
        read_module(bomb, max_size=1 << 20)
    assert str(bomb) in str(err.value)
    assert "exceeds 1048576 bytes" in str(err.value)
    assert "--max-decompressed" in str(err.value)


def test_zstd_bomb_without_declared_size_is_bounded(tmp_path: Path) -> None:
    """A streamed zstd frame (no content size in the header) is bounded while decoding."""
    cli = _cli(Codec.ZSTD)
    bomb = tmp_path / "bomb.ko.zst"
    with bomb.open("wb") as out:
        script = f'set -o pipefail; head -c {64 << 20} /dev/zero | "$0" -q --no-content-size -c'
        tool("bash", "-c", script, cli, stdout=out)
    import zstandard

    assert zstandard.frame_content_size(bomb.read_bytes()) == -1
    with pytest.raises(InputError, match="exceeds"):
        read_module(bomb, max_size=1 << 20)


def test_plain_module_over_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.ko"
    path.write_bytes(b"\x7fELF" + bytes(2000))
    with pytest.raises(InputError, match="exceeds 1000 bytes"):
        read_module(path, max_size=1000)


def test_limit_is_inclusive(tmp_path: Path) -> None:
    data = b"\x7fELF" + bytes(4092)
    for codec in COMPRESSED:
        path = tmp_path / ("m.ko" + codec.suffix)
        path.write_bytes(compress(data, codec))
        assert read_module(path, max_size=4096).data == data
        with pytest.raises(InputError, match="exceeds 4095 bytes"):
            read_module(path, max_size=4095)


@pytest.mark.parametrize("codec", COMPRESSED, ids=lambda c: c.label)
def test_truncated_stream(tmp_path: Path, codec: Codec) -> None:
    """Cut streams as the kernel's decoders see them (testdata/decompress-matrix records it).

    xz: refused at any cut (xz_dec_run never reaches XZ_STREAM_END). gzip:
    refused inside the deflate data, but the 8-byte trailer is never read, so
    a cut there loses nothing. zstd: module_zstd_decompress stops without an
    error when the input runs out, keeping the blocks decoded so far.
    """
    data = _payload()
    src = tmp_path / "mod.ko"
    src.write_bytes(data)
    good = _cli_compress(codec, src)
    blob = good.read_bytes()
    for cut in (len(blob) // 2, len(blob) - 1):
        bad = tmp_path / ("cut.ko" + codec.suffix)
        bad.write_bytes(blob[:cut])
        if codec is Codec.ZSTD:
            seen = read_module(bad).data  # a cut checksum still leaves every block
            assert data.startswith(seen) and (len(seen) < len(data) or cut > len(blob) - 4)
        elif codec is Codec.GZIP and cut == len(blob) - 1:
            assert read_module(bad).data == data
        else:
            with pytest.raises(InputError) as err:
                read_module(bad)
            assert str(bad) in str(err.value)
            assert codec.label in str(err.value)


@pytest.mark.parametrize("codec", [Codec.XZ, Codec.ZSTD], ids=lambda c: c.label)
def test_corrupt_stream(tmp_path: Path, codec: Codec) -> None:
    """(gzip has no check the kernel reads: see test_gzip_crc_is_not_checked.)"""
    src = tmp_path / "mod.ko"
    src.write_bytes(_payload())
    blob = bytearray(_cli_compress(codec, src).read_bytes())
    # Flip bits in the middle of the compressed payload and in the checksum.
    blob[len(blob) // 2] ^= 0xFF
    blob[-2] ^= 0x55
    bad = tmp_path / ("bad.ko" + codec.suffix)
    bad.write_bytes(bytes(blob))
    with pytest.raises(InputError) as err:
        read_module(bad)
    assert str(bad) in str(err.value)
    assert codec.label in str(err.value)
    # The CLI agrees that the file is damaged.
    assert tool(_cli(codec), "-t", bad, check=False).returncode != 0


def test_gzip_crc_is_not_checked(tmp_path: Path) -> None:
    """module_gzip_decompress inflates raw deflate (-MAX_WBITS): the CRC32 is never read."""
    data = _payload()
    blob = bytearray(gzip.compress(data, mtime=0))
    blob[-8] ^= 0xFF
    path = tmp_path / "crc.ko.gz"
    path.write_bytes(bytes(blob))
    assert read_module(path).data == data
    assert tool(_cli(Codec.GZIP), "-t", path, check=False).returncode


@pytest.mark.parametrize("codec", COMPRESSED, ids=lambda c: c.label)
def test_second_stream_and_trailing_garbage_ignored(tmp_path: Path, codec: Codec) -> None:
    """The kernel stops at the end of the first stream, member or frame."""
    data = _payload()
    one = compress(data, codec)
    for tail in (compress(b"other", codec), b"garbage!"):
        path = tmp_path / ("two.ko" + codec.suffix)
        path.write_bytes(one + tail)
        assert read_module(path).data == data


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("mod.ko.gz", b"\xfd7zXZ\x00rest"),
        ("mod.ko.xz", b"\x1f\x8b\x08\x00rest"),
        ("mod.ko.zst", b"\x7fELF\x02\x01\x01"),
        ("mod.ko", b"\x28\xb5\x2f\xfd rest"),
        ("mod.ko", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"),
    ],
)
def test_suffix_and_magic_must_agree(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_module(path)
    assert str(path) in str(err.value)
    assert "magic" in str(err.value)


def test_gzip_with_name_is_accepted_but_extra_fields_are_not(tmp_path: Path) -> None:
    """The kernel skips FNAME itself but cannot parse FEXTRA/FCOMMENT/FHCRC."""
    data = _payload()
    src = tmp_path / "mod.ko"
    src.write_bytes(data)
    named = tool(_cli(Codec.GZIP), "-c", "--name", src).stdout
    assert named[3] & 0x08  # FNAME set
    (tmp_path / "named.ko.gz").write_bytes(named)
    assert read_module(tmp_path / "named.ko.gz").data == data
    blob = bytearray(gzip.compress(data, mtime=0))
    blob[3] |= 0x10  # FCOMMENT: the kernel inflates the comment as deflate data
    blob[10:10] = b"a comment\x00"
    (tmp_path / "comment.ko.gz").write_bytes(bytes(blob))
    with pytest.raises(InputError, match="gzip module decompressor refuses it"):
        read_module(tmp_path / "comment.ko.gz")


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.ko\.xz"):
        read_module(tmp_path / "missing.ko.xz")


def test_codec_for_path() -> None:
    assert codec_for_path("a/b.ko") is Codec.NONE
    assert codec_for_path("a/b.ko.gz") is Codec.GZIP
    assert codec_for_path("a/b.ko.xz") is Codec.XZ
    assert codec_for_path("a/b.ko.zst") is Codec.ZSTD
    assert codec_for_path("a/b.ko.stripped") is Codec.NONE


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), codec=st.sampled_from(COMPRESSED))
def test_roundtrip(data: bytes, codec: Codec) -> None:
    assert decompress(compress(data, codec), codec) == data


@settings(max_examples=200, deadline=None)
@given(
    codec=st.sampled_from(COMPRESSED),
    cut=st.integers(min_value=0, max_value=400),
    flip=st.integers(min_value=0, max_value=399),
    mask=st.integers(min_value=1, max_value=255),
)
def test_damaged_input_never_escapes_as_another_exception(
    codec: Codec, cut: int, flip: int, mask: int
) -> None:
    data = b"\x7fELF" + bytes(range(256)) * 4
    blob = bytearray(compress(data, codec))
    kept = max(cut, len(codec.magic))
    flipped = flip < min(len(blob), kept)
    if flip < len(blob):
        blob[flip] ^= mask
    blob = blob[:kept]
    try:
        out = decompress(bytes(blob), codec, path="fuzz.ko" + codec.suffix)
    except InputError as err:
        assert "fuzz.ko" in str(err)
    else:
        # What the kernel's decoders guarantee about what they let through
        # (vmpatch.ko.kdecompress, testdata/decompress-matrix): xz_dec checks
        # the CRC32, so anything decoded is the original; the zstd decoder
        # keeps the blocks of a truncated frame, whose XXH64 it never reaches,
        # so an undamaged cut decodes to a prefix of the original and a flip
        # before the cut may decode to other bytes (hypothesis found a flip
        # of the first literal, cut at 280 of 284); module_gzip_decompress
        # never reads gzip's CRC32 or ISIZE, so a flip inside the deflate data
        # may decode to other bytes: only the bound holds there.
        if codec is Codec.XZ:
            assert out == data, (len(out), cut, flip, mask)
        elif codec is Codec.ZSTD and not flipped:
            assert data.startswith(out), (len(out), cut, flip, mask)
        else:
            assert len(out) <= DEFAULT_MAX_DECOMPRESSED
