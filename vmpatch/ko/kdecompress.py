# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel's module decompressor, rule for rule (Linux 6.12).

``finit_module(fd, args, MODULE_INIT_COMPRESSED_FILE)`` hands the file's bytes
to ``module_decompress()`` (kernel/module/decompress.c), which runs the one
decoder of the kernel's config: ``module_gzip_decompress`` (lib/zlib_inflate/),
``module_xz_decompress`` (lib/xz/) or ``module_zstd_decompress`` (lib/zstd/).
Those decoders are not zlib's gunzip, liblzma or the zstd CLI: they refuse
formats the libraries take (xz CRC64/SHA-256 checks, a zstd file that starts
with a skippable frame) and ignore what the libraries refuse (anything after
the first xz stream, gzip member or zstd frame; the gzip CRC32). This module
puts those acceptance rules in front of zlib/liblzma/libzstd, which then do
the decoding of exactly the bytes the kernel decodes, and returns exactly the
bytes the kernel goes on to verify.

Every rule names its source in the 6.12 tree. The rules were checked against
real kernels (``testdata/decompress-matrix/``, ``scripts/check-decompress-matrix``).

:func:`userspace_decompress` models the other loading path: kmod decompresses
the file with zlib/liblzma/libzstd itself and passes plain bytes to
``init_module`` (kmod's libkmod/libkmod-file-*.c), taking every concatenated
stream, member or frame.

Standard library only at import time; ``lzma`` and ``zstandard`` are imported
on first use, so a ``.ko.gz`` loads neither (the install hook decodes one module).
"""

from __future__ import annotations

import enum
import struct
import zlib

from vmpatch.frozen import frozen
from vmpatch.streams import (
    Decoder,
    LimitExceeded,
    OneCallStream,
    ZlibStream,
    ZstdStream,
    bounded_decode,
)

#: typing loads only for type checkers (mypy reads this constant as true): the
#: install hook imports this module (vmpatch.frozen says what its imports cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "ALL_XZ_BCJ",
    "Decoded",
    "KernelRefusal",
    "LoadPath",
    "XzFilters",
    "kernel_decompress",
    "userspace_decompress",
]

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_ZSTD_INPUT_CHUNK = 256
"""Compressed bytes fed to zstd per call.

``ZstdDecompressionObj.decompress`` has no output limit, so the input is fed
in small pieces instead: a zstd RLE block turns 4 input bytes into at most
128 KiB, so one call can overshoot the bound by at most 8 MiB.
"""


class LoadPath(enum.Enum):
    """How a compressed module reaches the kernel."""

    IN_KERNEL = "in-kernel"
    """finit_module with MODULE_INIT_COMPRESSED_FILE: the kernel's decompressor reads the file."""
    USERSPACE = "userspace"
    """kmod decompresses with its own libraries and passes plain bytes to init_module."""
    PLAIN = "plain"
    """An uncompressed module: finit_module without flags, nothing to decompress."""

    @property
    def description(self) -> str:
        return {
            LoadPath.IN_KERNEL: "in-kernel decompression (finit_module with "
            "MODULE_INIT_COMPRESSED_FILE)",
            LoadPath.USERSPACE: "userspace decompression (kmod decompresses and passes "
            "plain bytes)",
            LoadPath.PLAIN: "uncompressed module (finit_module)",
        }[self]


class KernelRefusal(Exception):
    """The kernel refuses the file before it looks at the module: ``finit_module`` fails.

    ``errno`` is the load's result (EINVAL for every decoder failure,
    EOPNOTSUPP without MODULE_DECOMPRESS), ``message`` the kernel log line it
    prints (or None when it prints none), ``reason`` what vmpatch found.
    """

    def __init__(self, errno: str, reason: str, message: str | None = None) -> None:
        super().__init__(reason)
        self.errno = errno
        self.reason = reason
        self.message = message


class Unmodelled(Exception):
    """The file needs a decoder feature this Python's libraries lack (e.g. a newer BCJ filter)."""


@frozen
class Decoded:
    """What the kernel verifies, and how much of the file it read to get there."""

    data: bytes
    consumed: int
    """Bytes of the file the decoder read (its first stream, member or frame)."""
    ignored: int
    """Bytes after them, which the kernel never looks at."""


# --- xz: which BCJ filters a kernel decodes ------------------------------------

#: lib/xz/xz_dec_bcj.c xz_dec_bcj_reset(): filter ID -> the config option that
#: compiles it in (lib/xz/xz_private.h maps CONFIG_XZ_DEC_* to XZ_DEC_*). BCJ_IA64
#: (6) has no Kconfig entry in 6.12 (lib/xz/Kconfig), so no kernel decodes it.
XZ_BCJ_FILTERS = {
    4: "CONFIG_XZ_DEC_X86",
    5: "CONFIG_XZ_DEC_POWERPC",
    6: "CONFIG_XZ_DEC_IA64",
    7: "CONFIG_XZ_DEC_ARM",
    8: "CONFIG_XZ_DEC_ARMTHUMB",
    9: "CONFIG_XZ_DEC_SPARC",
    10: "CONFIG_XZ_DEC_ARM64",
    11: "CONFIG_XZ_DEC_RISCV",
}
_BCJ_NAMES = {
    4: "x86",
    5: "powerpc",
    6: "ia64",
    7: "arm",
    8: "armthumb",
    9: "sparc",
    10: "arm64",
    11: "riscv",
}

#: lib/xz/Kconfig: every BCJ decoder but IA64 (gone) defaults to y.
ALL_XZ_BCJ = frozenset(fid for fid, option in XZ_BCJ_FILTERS.items() if fid != 6)


@frozen
class XzFilters:
    """The BCJ filter IDs the kernel's xz_dec was built with (from its CONFIG_XZ_DEC_*)."""

    bcj: frozenset[int] = ALL_XZ_BCJ

    @classmethod
    def from_options(cls, enabled: Callable[[str], bool]) -> XzFilters:
        return cls(frozenset(fid for fid, option in XZ_BCJ_FILTERS.items() if enabled(option)))


# --- one bounded decode loop ---------------------------------------------------


def _raw_inflate(data: bytes | memoryview) -> ZlibStream:
    """zlib raw inflate (no header, no trailer): what lib/zlib_inflate runs with -MAX_WBITS."""
    return ZlibStream(data, -zlib.MAX_WBITS)


def _unxz(data: bytes | memoryview) -> OneCallStream:
    """liblzma's single-stream .xz decoder (stops at the first Stream Footer)."""
    import lzma

    return OneCallStream(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), data)


def _unzstd(data: bytes | memoryview) -> ZstdStream:
    """libzstd's streaming decoder (ZSTD_decompressStream), one frame."""
    return ZstdStream(data, _ZSTD_INPUT_CHUNK)


# --- gzip: kernel/module/decompress.c module_gzip_decompress -------------------

_GZIP_FNAME = 0x08


def _gzip_header_len(data: bytes | memoryview) -> int:
    """kernel/module/decompress.c module_gzip_header_len(): 0 for "not gzip".

    The kernel checks ``1f 8b 08``, takes the 10 fixed bytes and skips a
    NUL-terminated name when FNAME is set; it does not look at FEXTRA, FHCRC
    or FCOMMENT (or the reserved bits), so their bytes are inflated as data.
    """
    size = len(data)
    if size < 10 or bytes(data[:3]) != b"\x1f\x8b\x08":
        return 0
    length = 10
    if data[3] & _GZIP_FNAME:
        end = bytes(data[length:]).find(b"\x00")
        if end < 0:
            return 0  # "If we can't find the end of the file name ... corrupted file"
        length += end + 1
    return length


def _kernel_gunzip(data: bytes | memoryview, max_size: int) -> Decoded:
    header = _gzip_header_len(data)
    if not header:
        raise KernelRefusal(
            "EINVAL", "not a gzip stream the kernel can parse", "not a gzip compressed module"
        )
    # zlib_inflateInit2(&s, -MAX_WBITS): raw deflate, so the gzip trailer
    # (CRC32, ISIZE) is never read and never checked; zlib_inflate() stops at
    # Z_STREAM_END after the final block, leaving the rest of the file unread.
    inflate = _raw_inflate(memoryview(data)[header:])
    try:
        out, ended = bounded_decode(inflate, max_size)
    except zlib.error as err:
        raise KernelRefusal(
            "EINVAL", f"deflate data the kernel cannot inflate: {err}", _status("Z_DATA_ERROR")
        ) from None
    if not ended:  # rc == Z_BUF_ERROR: input ends inside the deflate stream
        raise KernelRefusal(
            "EINVAL", "deflate stream ends before its final block", _status("Z_BUF_ERROR")
        )
    consumed = header + inflate.consumed
    return Decoded(out, consumed, len(data) - consumed)


def _status(name: str) -> str:
    codes = {"Z_DATA_ERROR": -3, "Z_BUF_ERROR": -5}
    return f"decompression failed with status {codes[name]}"


# --- xz: lib/xz/xz_dec_stream.c, xz_dec_lzma2.c, xz_dec_bcj.c ------------------

#: enum xz_ret (include/linux/xz.h): the status module_xz_decompress prints.
_XZ_OPTIONS_ERROR = 6
_XZ_DATA_ERROR = 7
_XZ_FORMAT_ERROR = 5
_XZ_BUF_ERROR = 8
_XZ_CHECK_NAMES = {0: "none", 1: "CRC32", 4: "CRC64", 10: "SHA-256"}


def _xz_refusal(status: int, reason: str) -> KernelRefusal:
    return KernelRefusal("EINVAL", reason, f"decompression failed with status {status}")


def _xz_stream_header(data: bytes) -> int:
    """xz_dec_stream.c dec_stream_header(): the check type, or a refusal."""
    if len(data) < 12:
        raise _xz_refusal(_XZ_BUF_ERROR, "xz stream header is truncated")
    if zlib.crc32(data[6:8]) != struct.unpack_from("<I", data, 8)[0]:
        raise _xz_refusal(_XZ_DATA_ERROR, "xz stream header CRC32 is wrong")
    if data[6] != 0:
        raise _xz_refusal(_XZ_OPTIONS_ERROR, "xz stream flags use reserved bits")
    check = data[7]
    # "Of integrity checks, we support only none (Check ID = 0) and CRC32
    # (Check ID = 1)"; XZ_DEC_ANY_CHECK is not defined in the kernel build.
    if check > 1:
        name = _XZ_CHECK_NAMES.get(check, f"ID {check}")
        raise _xz_refusal(
            _XZ_OPTIONS_ERROR,
            f"xz integrity check {name}: the kernel's xz decoder takes only none and CRC32 "
            "(compress with xz --check=crc32)",
        )
    return check


def _xz_block_header(data: bytes, at: int, filters: XzFilters) -> None:
    """xz_dec_stream.c dec_block_header() with xz_dec_bcj_reset() and xz_dec_lzma2_reset()."""
    size = (data[at] + 1) * 4
    header = data[at : at + size]
    if len(header) < size:
        raise _xz_refusal(_XZ_BUF_ERROR, "xz block header is truncated")
    body = header[:-4]
    if zlib.crc32(body) != struct.unpack_from("<I", header, size - 4)[0]:
        raise _xz_refusal(_XZ_DATA_ERROR, "xz block header CRC32 is wrong")
    flags = body[1]
    # "We support only one or two filters in the chain" (with XZ_DEC_BCJ).
    if flags & 0x3E:
        raise _xz_refusal(
            _XZ_OPTIONS_ERROR,
            f"xz block has {(flags & 0x03) + 1} filters or reserved flags; the kernel takes "
            "LZMA2 alone or one BCJ filter before it",
        )
    pos = 2
    for present in (0x40, 0x80):  # Compressed Size, Uncompressed Size (VLIs)
        if flags & present:
            while pos < len(body) and body[pos] & 0x80:
                pos += 1
            pos += 1
    if flags & 0x01:  # two filters: the first must be a BCJ filter
        if len(body) - pos < 2:
            raise _xz_refusal(_XZ_OPTIONS_ERROR, "xz block header too short for its filters")
        fid = body[pos]
        if fid not in filters.bcj:
            name = _BCJ_NAMES.get(fid)
            what = (
                f"BCJ filter {name}, which this kernel's xz decoder lacks "
                f"({XZ_BCJ_FILTERS[fid]} is not set)"
                if name
                else f"filter ID {fid:#x} before LZMA2, which the kernel's xz decoder lacks"
            )
            raise _xz_refusal(_XZ_OPTIONS_ERROR, f"xz block uses {what}")
        if body[pos + 1] != 0:  # "We don't support custom start offset"
            raise _xz_refusal(_XZ_OPTIONS_ERROR, "xz BCJ filter has a start offset")
        pos += 2
    if len(body) - pos < 2:
        raise _xz_refusal(_XZ_DATA_ERROR, "xz block header too short for its filters")
    if body[pos] != 0x21 or body[pos + 1] != 0x01:
        raise _xz_refusal(
            _XZ_OPTIONS_ERROR,
            f"xz block's last filter is ID {body[pos]:#x}, not LZMA2 (the kernel decodes "
            "LZMA2 only, no delta filter)",
        )
    pos += 2
    if len(body) - pos < 1:
        raise _xz_refusal(_XZ_DATA_ERROR, "xz block header too short for the LZMA2 properties")
    # xz_dec_lzma2_reset(): "This limits dictionary size to 3 GiB"; dict_max is
    # (u32)-1 (module_xz_decompress), so no dictionary size below is refused for size.
    if body[pos] > 39:
        raise _xz_refusal(_XZ_OPTIONS_ERROR, "xz LZMA2 dictionary larger than 3 GiB")
    pos += 1
    if any(body[pos:]):
        raise _xz_refusal(_XZ_OPTIONS_ERROR, "xz block header padding is not zero")


def _vli(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _xz_block_offsets(stream: bytes) -> list[int]:
    """Where each block of a decoded stream starts, from its Index (found via the footer)."""
    backward = (struct.unpack_from("<I", stream, len(stream) - 8)[0] + 1) * 4
    index_at = len(stream) - 12 - backward
    count, pos = _vli(stream, index_at + 1)
    offsets, at = [], 12
    for _ in range(count):
        unpadded, pos = _vli(stream, pos)
        _, pos = _vli(stream, pos)
        offsets.append(at)
        at += (unpadded + 3) & ~3
    return offsets


def _kernel_unxz(data: bytes, max_size: int, filters: XzFilters) -> Decoded:
    import lzma

    # module_xz_decompress(): the six magic bytes, then xz_dec_init(XZ_DYNALLOC, (u32)-1).
    if len(data) < 6 or data[:6] != XZ_MAGIC:
        raise KernelRefusal(
            "EINVAL", "not an xz stream (no xz magic bytes)", "not an xz compressed module"
        )
    _xz_stream_header(data)
    if len(data) > 12 and data[12] != 0:
        _xz_block_header(data, 12, filters)  # the first block, before any decoding
    unxz = _unxz(data)
    try:
        out, ended = bounded_decode(unxz, max_size)
    except lzma.LZMAError as err:
        if "nsupported" in str(err) or "options" in str(err):
            raise Unmodelled(f"this liblzma cannot decode the stream ({err})") from None
        raise _xz_refusal(_XZ_DATA_ERROR, f"corrupt xz data: {err}") from None
    if not ended:
        raise _xz_refusal(_XZ_BUF_ERROR, "xz stream ends before its footer")
    # xz_dec_run() in multi-call mode returns XZ_STREAM_END at the first Stream
    # Footer; module_xz_decompress stops there. Stream padding, further streams
    # and any other bytes after it are never read (xz_dec_catrun is not used).
    stream = data[: unxz.consumed]
    for at in _xz_block_offsets(stream):
        _xz_block_header(stream, at, filters)
    return Decoded(out, unxz.consumed, len(data) - unxz.consumed)


# --- zstd: module_zstd_decompress + lib/zstd/decompress -----------------------

#: lib/zstd/decompress/zstd_decompress.c ZSTD_MAXWINDOWSIZE_DEFAULT: the
#: (1 << ZSTD_WINDOWLOG_LIMIT_DEFAULT) + 1 a DStream starts with;
#: zstd_init_dstream() ignores its max_window_size argument.
_ZSTD_MAX_WINDOW = (1 << 27) + 1
_ZSTD_WINDOWLOG_MAX = 31  # ZSTD_WINDOWLOG_MAX_64
_ZSTD_BLOCKSIZE_MAX = 1 << 17
_INT_MAX = 2**31 - 1


def _zstd_window_size(data: bytes) -> int:
    """ZSTD_getFrameHeader() as zstd_get_frame_header() calls it: the window size."""
    incomplete = KernelRefusal(
        "EINVAL",
        "zstd frame header is incomplete",
        "ZSTD-compressed data has an incomplete frame header",
    )
    if len(data) < 5:
        raise incomplete
    fhd = data[4]
    single_segment = bool(fhd & 0x20)
    dict_id_size = (0, 1, 2, 4)[fhd & 0x03]
    fcs_code = fhd >> 6
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_code]
    header_size = 5 + (0 if single_segment else 1) + dict_id_size + fcs_size
    if len(data) < header_size:
        raise incomplete
    if fhd & 0x08:  # reserved bit: frameParameter_unsupported
        raise KernelRefusal(
            "EINVAL",
            "zstd frame header sets a reserved bit",
            "ZSTD-compressed data has an incomplete frame header",
        )
    pos = 5
    if single_segment:
        pos += dict_id_size
        raw = data[pos : pos + fcs_size]
        fcs = int.from_bytes(raw, "little") + (256 if fcs_size == 2 else 0)
        return fcs
    wd = data[5]
    window_log = 10 + (wd >> 3)
    if window_log > _ZSTD_WINDOWLOG_MAX:
        raise KernelRefusal(
            "EINVAL",
            f"zstd window log {window_log} is above {_ZSTD_WINDOWLOG_MAX}",
            "ZSTD-compressed data has an incomplete frame header",
        )
    base = 1 << window_log
    return base + (base >> 3) * (wd & 7)


def _kernel_unzstd(data: bytes, max_size: int) -> Decoded:
    if len(data) < 4 or data[:4] != ZSTD_MAGIC:
        # A skippable frame first is refused here too: its magic is 0x184D2A5?.
        raise KernelRefusal(
            "EINVAL",
            "not a zstd frame at the start of the file (the kernel does not skip skippable frames)",
            "not a zstd compressed module",
        )
    window = _zstd_window_size(data)
    if window > 1 << _ZSTD_WINDOWLOG_MAX:
        raise KernelRefusal(
            "EINVAL",
            f"zstd window of {window} bytes",
            "ZSTD-compressed data has too large a window size",
        )
    # wksp = kvmalloc(zstd_dstream_workspace_bound(windowSize)): ZSTD_estimateDStreamSize()
    # is at least the window plus two blocks, and kvmalloc() refuses any size
    # above INT_MAX (mm/util.c), so a window near 2 GiB is ENOMEM on every machine.
    if window + 2 * min(window, _ZSTD_BLOCKSIZE_MAX) > _INT_MAX:
        raise KernelRefusal(
            "ENOMEM",
            f"zstd window of {window} bytes: the kernel cannot allocate its decoder workspace "
            "(kvmalloc refuses more than INT_MAX bytes)",
        )
    if window > _ZSTD_MAX_WINDOW:
        raise KernelRefusal(
            "EINVAL",
            f"zstd window of {window} bytes is above the decoder's default limit of "
            f"{_ZSTD_MAX_WINDOW} (frameParameter_windowTooLarge; ENOMEM instead where the "
            "kernel cannot allocate that workspace)",
            "ZSTD-decompression failed with status 16",
        )
    import zstandard  # lazy

    unzstd = _unzstd(data)
    try:
        out, _ended = bounded_decode(unzstd, max_size)
    except zstandard.ZstdError as err:
        raise KernelRefusal(
            "EINVAL", f"zstd data the kernel cannot decode: {err}", "ZSTD-decompression failed"
        ) from None
    # module_zstd_decompress loops "while (zstd_dec.pos == PAGE_SIZE && ret != 0)":
    # it stops when the first frame is done (ret == 0), and also, without an
    # error, when the input runs out inside the frame (ret > 0 with a page not
    # full): a truncated frame yields the blocks decoded so far. Later frames,
    # skippable or not, and other trailing bytes are never read.
    return Decoded(out, unzstd.consumed, len(data) - unzstd.consumed)


def kernel_decompress(
    data: bytes,
    kernel_codec: str,
    *,
    max_size: int,
    xz_filters: XzFilters | None = None,
) -> Decoded:
    """The bytes a kernel with ``CONFIG_MODULE_COMPRESS_<kernel_codec>`` verifies.

    ``kernel_codec`` is ``"gzip"``, ``"xz"`` or ``"zstd"``: the one decoder
    ``module_decompress()`` has; the file's own format does not choose it (a
    module of another codec fails that decoder's magic check with EINVAL).
    Raises :class:`KernelRefusal` where ``finit_module`` fails,
    :class:`LimitExceeded` past ``max_size`` and :class:`Unmodelled` where this
    Python's liblzma cannot decode a filter the kernel can.
    """
    data = bytes(data)
    if kernel_codec == "gzip":
        return _kernel_gunzip(data, max_size)
    if kernel_codec == "xz":
        return _kernel_unxz(data, max_size, xz_filters or XzFilters())
    if kernel_codec == "zstd":
        return _kernel_unzstd(data, max_size)
    raise ValueError(f"no in-kernel module decompressor for {kernel_codec!r}")


def userspace_decompress(data: bytes, codec: str, *, max_size: int) -> Decoded:
    """What kmod passes to init_module after decompressing ``data`` itself.

    kmod (libkmod/libkmod-file-{zlib,xz,zstd}.c) reads the whole file: zlib's
    gzread over every member, liblzma with LZMA_CONCATENATED (streams and
    stream padding), ZSTD_decompressStream over every frame. Bytes that are
    not another member, stream or frame are an error for xz and zstd; zlib's
    gzread ignores trailing garbage after a member. This path is modelled from
    kmod's sources and was not judged by a real kernel.
    """
    import lzma

    data = bytes(data)
    pieces: list[bytes] = []
    pos = 0
    total = 0

    def take(piece: bytes) -> None:
        nonlocal total
        total += len(piece)
        if total > max_size:
            raise LimitExceeded(max_size)
        pieces.append(piece)

    magic = {"gzip": GZIP_MAGIC, "xz": XZ_MAGIC, "zstd": ZSTD_MAGIC}[codec]
    if not data.startswith(magic):
        raise KernelRefusal("ENOEXEC", f"kmod cannot decompress it: no {codec} magic bytes")
    try:
        while pos < len(data):
            rest = memoryview(data)[pos:]
            if codec == "xz" and not any(rest[: min(len(rest), 4)]):
                if len(rest) % 4 or any(rest):  # LZMA_CONCATENATED: padding in 4-byte units
                    break
                return Decoded(b"".join(pieces), len(data), 0)
            if bytes(rest[: len(magic)]) != magic:
                if codec == "gzip" and pieces:
                    return Decoded(b"".join(pieces), pos, len(data) - pos)  # gzread ignores it
                if (
                    codec == "zstd"
                    and bytes(rest[1:4]) == b"\x2a\x4d\x18"
                    and rest[0] & 0xF0 == 0x50
                ):
                    size = struct.unpack_from("<I", rest, 4)[0]
                    pos += 8 + size  # ZSTD_decompressStream skips skippable frames
                    continue
                raise KernelRefusal(
                    "ENOEXEC", f"kmod cannot decompress it: {len(rest)} bytes after the data"
                )
            decoder: Decoder
            if codec == "gzip":
                header = _gzip_full_header_len(rest)
                decoder = _raw_inflate(rest[header:])
                out, ended = bounded_decode(decoder, max_size - total)
                used = header + decoder.consumed + 8  # CRC32 + ISIZE
                if ended and zlib.crc32(out) != struct.unpack_from("<I", rest, used - 8)[0]:
                    raise KernelRefusal("ENOEXEC", "kmod cannot decompress it: gzip CRC32 is wrong")
            elif codec == "xz":
                decoder = _unxz(rest)
                out, ended = bounded_decode(decoder, max_size - total)
                used = decoder.consumed
            else:
                decoder = _unzstd(rest)
                out, ended = bounded_decode(decoder, max_size - total)
                used = decoder.consumed
            if not ended:
                raise KernelRefusal("ENOEXEC", f"kmod cannot decompress it: truncated {codec} data")
            take(out)
            pos += used
    except LimitExceeded:
        raise LimitExceeded(max_size) from None
    except (zlib.error, lzma.LZMAError, struct.error, IndexError) as err:
        raise KernelRefusal("ENOEXEC", f"kmod cannot decompress it: {err}") from None
    except Exception as err:  # zstandard.ZstdError, imported lazily
        if type(err).__name__ != "ZstdError":
            raise
        raise KernelRefusal("ENOEXEC", f"kmod cannot decompress it: {err}") from None
    if pos > len(data):
        raise KernelRefusal("ENOEXEC", "kmod cannot decompress it: truncated data")
    return Decoded(b"".join(pieces), len(data), 0)


def _gzip_full_header_len(data: bytes | memoryview) -> int:
    """RFC 1952 header length with every optional field (what zlib's gzip mode skips)."""
    if len(data) < 10 or data[2] != 8:
        raise zlib.error("bad gzip header")
    flags = data[3]
    pos = 10
    if flags & 0x04:  # FEXTRA
        pos += 2 + int.from_bytes(bytes(data[10:12]), "little")
    for bit in (0x08, 0x10):  # FNAME, FCOMMENT
        if flags & bit:
            end = bytes(data[pos:]).find(b"\x00")
            if end < 0:
                raise zlib.error("unterminated gzip header field")
            pos += end + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return pos
