# SPDX-License-Identifier: GPL-2.0-or-later
"""Read and write compressed modules (``.ko``, ``.ko.gz``, ``.ko.xz``, ``.ko.zst``).

The kernel verifies a module's proof over the *decompressed* bytes
(docs/format.md section 6), so every check vmpatch makes on an installed module
must first undo ``CONFIG_MODULE_COMPRESS_*``. Installed trees are untrusted
input, hence three rules here:

* the codec is taken from the file suffix *and* confirmed by the magic bytes;
  a disagreement is an error, never a guess;
* the decompressed size is bounded for every codec (a small ``.ko.zst`` can
  expand to gigabytes), and decompression stops as soon as the bound is
  exceeded instead of allocating the whole output first;
* exactly one gzip member / xz stream / zstd frame is accepted, like the
  kernel's in-kernel decompressor, and trailing bytes are rejected.

This module is imported by the per-module install hook, so it imports only
the standard library at module level; ``zstandard`` is imported on first use.
"""

from __future__ import annotations

import enum
import gzip
import lzma
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure
from vmpatch.fs.atomic import open_input

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED",
    "GZIP_LEVEL",
    "XZ_DICT_SIZE",
    "XZ_PRESET",
    "ZSTD_LEVEL",
    "Codec",
    "ModuleContent",
    "codec_for_path",
    "compress",
    "decompress",
    "read_module",
]

DEFAULT_MAX_DECOMPRESSED = 256 * 1024 * 1024
"""Default bound on a module's decompressed size (the largest real modules are ~100 MiB)."""

GZIP_LEVEL = 6
"""GNU gzip's default level; kbuild runs ``$(KGZIP) -n`` without a level."""

XZ_PRESET = 6
"""xz's default preset, which kbuild leaves alone apart from the dictionary size."""

XZ_DICT_SIZE = 1024 * 1024
"""kbuild's ``--lzma2=dict=1MiB``: the kernel's xz decoder preallocates no more."""

ZSTD_LEVEL = 3
"""The zstd CLI's default level; kbuild runs ``zstd -T0`` without a level."""

_OUTPUT_CHUNK = 1024 * 1024
"""Largest piece of output requested from a decompressor at once."""

_ZSTD_INPUT_CHUNK = 256
"""Compressed bytes fed to zstd per call.

``ZstdDecompressionObj.decompress`` has no output limit, so the input is fed
in small pieces instead: a zstd RLE block turns 4 input bytes into at most
128 KiB, so one call can overshoot the bound by at most 8 MiB.
"""


class Codec(enum.Enum):
    """A module compression format: its file suffix and leading magic bytes."""

    NONE = ("", b"")
    GZIP = (".gz", b"\x1f\x8b")
    XZ = (".xz", b"\xfd7zXZ\x00")
    ZSTD = (".zst", b"\x28\xb5\x2f\xfd")

    @property
    def suffix(self) -> str:
        """The suffix kbuild appends to ``.ko`` (empty for an uncompressed module)."""
        return self.value[0]

    @property
    def magic(self) -> bytes:
        """The bytes every stream of this format starts with (empty for NONE)."""
        return self.value[1]

    @property
    def label(self) -> str:
        """A short lower-case name for messages: ``gzip``, ``xz``, ``zstd``, ``none``."""
        return self.name.lower()


@dataclass(frozen=True)
class ModuleContent:
    """A module file as the kernel sees it.

    ``data`` is what ``finit_module`` verifies: the decompressed bytes (or the
    file itself when ``codec`` is :attr:`Codec.NONE`).
    """

    path: Path
    codec: Codec
    data: bytes


def codec_for_path(path: str | os.PathLike[str]) -> Codec:
    """The codec the file name promises, from its last suffix alone."""
    suffix = Path(path).suffix
    for codec in (Codec.GZIP, Codec.XZ, Codec.ZSTD):
        if suffix == codec.suffix:
            return codec
    return Codec.NONE


def _codec_for_magic(data: bytes) -> Codec:
    for codec in (Codec.GZIP, Codec.XZ, Codec.ZSTD):
        if data.startswith(codec.magic):
            return codec
    return Codec.NONE


def _check_magic(path: Path, codec: Codec, data: bytes) -> None:
    """Refuse a file whose content does not match its suffix, in either direction."""
    found = _codec_for_magic(data)
    if found is codec:
        return
    if codec is Codec.NONE:
        raise InputError(
            path,
            f"starts with {found.label} magic bytes but has no {found.suffix} suffix",
            hint=f"rename it to end in {found.suffix} or decompress it",
        )
    raise InputError(
        path,
        f"suffix {codec.suffix} promises {codec.label} data, but the file does not start "
        f"with the {codec.label} magic bytes ({codec.magic.hex()})",
    )


def _too_big(path: Path, max_size: int) -> InputError:
    return InputError(
        path,
        f"decompressed size exceeds {max_size} bytes (limit, raise with --max-decompressed)",
    )


def _corrupt(path: Path, codec: Codec, what: str) -> InputError:
    return InputError(path, f"corrupt {codec.label} data: {what}")


def _check_gzip_header(path: Path, data: bytes) -> None:
    """Refuse gzip header fields the kernel's module decompressor cannot skip.

    ``kernel/module/decompress.c`` parses the 10-byte header itself and only
    understands the FNAME flag (bit 3); FHCRC, FEXTRA and FCOMMENT (bits 1, 2,
    4) would make it inflate header bytes as data and reject the module.
    """
    if len(data) < 10:
        raise _corrupt(path, Codec.GZIP, "truncated header")
    if data[2] != 8:
        raise _corrupt(path, Codec.GZIP, f"compression method {data[2]} is not deflate")
    flags = data[3]
    if flags & ~0x09:
        raise InputError(
            path,
            f"gzip header flags {flags:#04x} use FHCRC/FEXTRA/FCOMMENT, which the kernel "
            "cannot parse",
        )


def _gunzip(path: Path, data: bytes, max_size: int) -> bytes:
    _check_gzip_header(path, data)
    dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out: list[bytes] = []
    total = 0
    pending = data
    try:
        while not dec.eof:
            piece = dec.decompress(pending, min(_OUTPUT_CHUNK, max_size + 1 - total))
            pending = dec.unconsumed_tail
            total += len(piece)
            if total > max_size:
                raise _too_big(path, max_size)
            if not piece and not pending and not dec.eof:
                raise _corrupt(path, Codec.GZIP, "truncated stream")
            out.append(piece)
    except zlib.error as err:
        raise _corrupt(path, Codec.GZIP, str(err)) from None
    _check_trailing(path, Codec.GZIP, dec.unused_data)
    return b"".join(out)


def _unxz(path: Path, data: bytes, max_size: int) -> bytes:
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    out: list[bytes] = []
    total = 0
    pending = data
    try:
        while not dec.eof:
            piece = dec.decompress(pending, min(_OUTPUT_CHUNK, max_size + 1 - total))
            pending = b""
            total += len(piece)
            if total > max_size:
                raise _too_big(path, max_size)
            if dec.needs_input and not dec.eof:
                raise _corrupt(path, Codec.XZ, "truncated stream")
            out.append(piece)
    except lzma.LZMAError as err:
        raise _corrupt(path, Codec.XZ, str(err)) from None
    _check_trailing(path, Codec.XZ, dec.unused_data)
    return b"".join(out)


def _unzstd(path: Path, data: bytes, max_size: int) -> bytes:
    import zstandard  # lazy: keeps the install hook's import cheap

    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as err:
        raise _corrupt(path, Codec.ZSTD, str(err)) from None
    if declared > max_size:
        raise _too_big(path, max_size)
    dec = zstandard.ZstdDecompressor().decompressobj()
    out: list[bytes] = []
    total = 0
    offset = 0
    try:
        while not dec.eof and offset < len(data):
            piece = dec.decompress(data[offset : offset + _ZSTD_INPUT_CHUNK])
            offset += _ZSTD_INPUT_CHUNK
            total += len(piece)
            if total > max_size:
                raise _too_big(path, max_size)
            out.append(piece)
    except zstandard.ZstdError as err:
        raise _corrupt(path, Codec.ZSTD, str(err)) from None
    if not dec.eof:
        raise _corrupt(path, Codec.ZSTD, "truncated frame")
    _check_trailing(path, Codec.ZSTD, dec.unused_data + data[offset:])
    return b"".join(out)


def _check_trailing(path: Path, codec: Codec, rest: bytes) -> None:
    """Refuse anything after the first stream: the kernel decodes only one."""
    if not rest:
        return
    what = "another stream" if rest.startswith(codec.magic) else "trailing garbage"
    raise InputError(
        path,
        f"{len(rest)} bytes of {what} after the first {codec.label} stream "
        "(the kernel decompresses exactly one)",
    )


def decompress(
    data: bytes,
    codec: Codec,
    *,
    path: str | os.PathLike[str] = "<memory>",
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
) -> bytes:
    """Decompress one stream of ``codec`` in memory, bounded by ``max_size`` bytes.

    ``path`` only names the data in error messages. The magic bytes must match
    ``codec``. Raises :class:`InputError` for corrupt, truncated or oversized
    data and for bytes after the stream.
    """
    where = Path(path)
    _check_magic(where, codec, data)
    if codec is Codec.NONE:
        if len(data) > max_size:
            raise _too_big(where, max_size)
        return data
    if codec is Codec.GZIP:
        return _gunzip(where, data, max_size)
    if codec is Codec.XZ:
        return _unxz(where, data, max_size)
    return _unzstd(where, data, max_size)


def read_module(
    path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_DECOMPRESSED
) -> ModuleContent:
    """Read a module file and return the bytes the kernel would verify.

    The codec comes from the suffix and is checked against the magic bytes.
    An unreadable file is an :class:`InputError` when it is missing or not a
    regular file and a :class:`SystemFailure` for other I/O errors.
    """
    where = Path(path)
    codec = codec_for_path(where)
    try:
        with open_input(where) as fh:
            if codec is Codec.NONE and os.fstat(fh.fileno()).st_size > max_size:
                raise _too_big(where, max_size)
            raw = fh.read()
    except OSError as err:  # missing or a directory: InputError; other I/O: SystemFailure
        raise SystemFailure.from_oserror(where, err, "read module") from None
    return ModuleContent(where, codec, decompress(raw, codec, path=where, max_size=max_size))


def compress(data: bytes, codec: Codec) -> bytes:
    """Compress ``data`` the way kbuild's ``modules_install`` does, deterministically.

    * gzip: level 6 (GNU gzip's default), no file name, mtime 0, like
      ``gzip -n``; the header's OS byte is 255 ("unknown", CPython's choice).
    * xz: preset 6 with LZMA2 ``dict_size`` 1 MiB and CRC32 check, like
      ``xz --check=crc32 --lzma2=dict=1MiB``.
    * zstd: level 3, single-threaded, content size in the frame header and a
      checksum, like the zstd CLI's defaults (kbuild's ``-T0`` changes only
      the speed for inputs this small).
    * none: ``data`` unchanged.

    The output is a pure function of ``data``, ``codec`` and the versions of
    zlib, liblzma and libzstd in use: no timestamps, names or thread timing
    leak in. It is *not* promised to be byte-identical to the CLI tools; the
    kernel verifies the decompressed bytes, which are identical.
    """
    if codec is Codec.NONE:
        return data
    if codec is Codec.GZIP:
        return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    if codec is Codec.XZ:
        filters = [{"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET, "dict_size": XZ_DICT_SIZE}]
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
    import zstandard  # lazy: keeps the install hook's import cheap

    cctx = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, write_checksum=True, write_content_size=True, threads=0
    )
    return cctx.compress(data)
