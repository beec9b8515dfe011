# SPDX-License-Identifier: GPL-2.0-or-later
"""Bounded decoders for the compressed streams inside boot images.

The kernel tells its payload's codec by the first two bytes, with the table
``compressed_formats`` of ``lib/decompress.c``; this module uses the same
magics (extended to the full signatures so a chance match is unlikely when
a format has to search for its stream). Every decoder stops at the end of the
first stream and ignores what follows: kbuild's ``size_append``
(``scripts/Makefile.lib``) puts the decompressed size as a le32 after the
stream, and the preboot decompressors never look past the stream's end.

This is deliberately separate from :mod:`vmpatch.ko.kdecompress`, which
models how the kernel reads *modules*; boot payloads come in more codecs
(bzip2, lzma, lz4, lzo) and are judged by nobody, only read. The bounded
output loop is the one both use (:mod:`vmpatch.streams`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vmpatch.errors import InputError, UnsupportedLayout
from vmpatch.streams import (
    Decoder,
    LimitExceeded,
    OneCallStream,
    ZlibStream,
    ZstdStream,
    bounded_decode,
)

__all__ = ["MAGICS", "codec_at", "decode_stream", "decompress"]

#: Signature of each codec's stream (lib/decompress.c compressed_formats, whose
#: two-byte magics these begin with; the longer forms are each format's own).
MAGICS: dict[str, bytes] = {
    "gzip": b"\x1f\x8b\x08",  # RFC 1952 ID1 ID2 CM=deflate
    "bzip2": b"BZh",
    "lzma": b"\x5d\x00\x00",  # lc/lp/pb byte 0x5d, then the dictionary size's low bytes
    "xz": b"\xfd7zXZ\x00",
    "lzo": b"\x89LZO\x00\r\n\x1a\n",  # lzop's file magic
    "lz4": b"\x02\x21\x4c\x18",  # ARCHIVE_MAGICNUMBER 0x184C2102, lib/decompress_unlz4.c
    "zstd": b"\x28\xb5\x2f\xfd",
}

#: lib/decompress_unlz4.c: LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE, the output of one block.
_LZ4_CHUNK = 8 << 20
_LZ4_MAGIC = int.from_bytes(MAGICS["lz4"], "little")

_ZSTD_FEED = 64 * 1024  # a zstd block expands at most 128 KiB per 4 input bytes (RLE)


def codec_at(data: bytes | memoryview, offset: int = 0) -> str | None:
    """The codec whose signature starts at ``offset``, or None."""
    for name, magic in MAGICS.items():
        if bytes(data[offset : offset + len(magic)]) == magic:
            return name
    return None


def _too_big(path: Path, codec: str, limit: int) -> InputError:
    return InputError(path, f"{codec} payload decompresses to more than {limit} bytes")


def _corrupt(path: Path, codec: str, err: object) -> InputError:
    return InputError(path, f"corrupt {codec} payload: {err}")


def _drive(
    path: Path,
    codec: str,
    stream: Decoder,
    limit: int,
    errors: tuple[type[BaseException], ...],
    truncated: str = "the stream is truncated",
) -> tuple[bytes, int]:
    """The first stream through :func:`~vmpatch.streams.bounded_decode`; errors name ``path``."""
    try:
        out, ended = bounded_decode(stream, limit)
    except LimitExceeded:
        raise _too_big(path, codec, limit) from None
    except errors as err:
        raise _corrupt(path, codec, err) from err
    if not ended:
        raise _corrupt(path, codec, truncated)
    return out, stream.consumed


def _gzip(path: Path, data: bytes, limit: int) -> tuple[bytes, int]:
    import zlib

    # The gzip wrapper (wbits 31), one member.
    return _drive(path, "gzip", ZlibStream(data, 31), limit, (zlib.error,))


def _bzip2(path: Path, data: bytes, limit: int) -> tuple[bytes, int]:
    import bz2

    stream = OneCallStream(bz2.BZ2Decompressor(), data)
    return _drive(path, "bzip2", stream, limit, (OSError, EOFError, ValueError))


def _lzma(path: Path, data: bytes, limit: int) -> tuple[bytes, int]:
    import lzma

    stream = OneCallStream(lzma.LZMADecompressor(lzma.FORMAT_ALONE), data)
    return _drive(path, "lzma", stream, limit, (lzma.LZMAError, OSError, EOFError, ValueError))


def _xz(path: Path, data: bytes, limit: int) -> tuple[bytes, int]:
    import lzma

    stream = OneCallStream(lzma.LZMADecompressor(lzma.FORMAT_XZ), data)
    return _drive(path, "xz", stream, limit, (lzma.LZMAError, OSError, EOFError, ValueError))


def _zstd(path: Path, data: bytes, limit: int) -> tuple[bytes, int]:
    try:
        import zstandard
    except ImportError as err:  # a hard dependency; only a broken install lacks it
        raise UnsupportedLayout(path, "zstd payload: install the zstandard package") from err
    stream = ZstdStream(data, _ZSTD_FEED)
    return _drive(path, "zstd", stream, limit, (zstandard.ZstdError,), "the frame is truncated")


def _lz4(path: Path, data: bytes, limit: int) -> tuple[bytes, int]:
    """The legacy framing of ``lz4 -l``, block by block as lib/decompress_unlz4.c reads it.

    After the magic, each block is a le32 compressed size and that many bytes
    of an LZ4 block decoding to at most 8 MiB; a repeated magic starts a new
    stream. The input ends when no whole block is left: what remains is
    kbuild's appended le32 size.
    """
    try:
        import lz4.block
    except ImportError as err:
        raise UnsupportedLayout(
            path, "lz4 payload: install the lz4 package (pip install lz4)"
        ) from err
    out = bytearray()
    at = 4
    while at + 4 <= len(data):
        size = int.from_bytes(data[at : at + 4], "little")
        if size == _LZ4_MAGIC:  # decompress_unlz4.c: skip a concatenated stream's magic
            at += 4
            continue
        if size == 0 or at + 4 + size > len(data):
            break
        try:
            out += lz4.block.decompress(data[at + 4 : at + 4 + size], uncompressed_size=_LZ4_CHUNK)
        except lz4.block.LZ4BlockError as err:
            raise _corrupt(path, "lz4", err) from err
        if len(out) > limit:
            raise _too_big(path, "lz4", limit)
        at += 4 + size
    if not out:
        raise _corrupt(path, "lz4", "no complete block")
    return bytes(out), at


def _lzo(path: Path, data: bytes, limit: int) -> tuple[bytes, int]:
    raise UnsupportedLayout(
        path,
        "lzo payload: vmpatch has no lzo decoder (no well-kept Python binding reads lzop "
        "files); unpack the payload with lzop -d and inspect the result",
    )


_DECODERS: dict[str, Callable[[Path, bytes, int], tuple[bytes, int]]] = {
    "gzip": _gzip,
    "bzip2": _bzip2,
    "lzma": _lzma,
    "xz": _xz,
    "lzo": _lzo,
    "lz4": _lz4,
    "zstd": _zstd,
}


def decode_stream(path: Path, codec: str, data: bytes, limit: int) -> tuple[bytes, int]:
    """The first stream of ``codec`` in ``data`` and the offset just after it.

    Refuses more than ``limit`` bytes of output; the offset lets a format that
    has to search for its stream check what follows it (kbuild's size_append).
    """
    decoder = _DECODERS.get(codec)
    if decoder is None:
        raise UnsupportedLayout(path, f"unknown payload compression {codec!r}")
    return decoder(path, data, limit)


def decompress(path: Path, codec: str, data: bytes, limit: int) -> bytes:
    """The first stream of ``codec`` in ``data``, refusing more than ``limit`` bytes of output."""
    return decode_stream(path, codec, data, limit)[0]
