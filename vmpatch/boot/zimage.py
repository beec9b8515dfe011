# SPDX-License-Identifier: GPL-2.0-or-later
"""32-bit arm ``zImage``: a self-decompressor with the compressed Image appended.

``arch/arm/boot/compressed/head.S`` puts, after the initial nops and branch,
``_magic_sig`` (0x016f2818) at 0x24, ``_magic_start`` at 0x28, ``_magic_end``
at 0x2c, the endianness flag 0x04030201 at 0x30 (stored in the kernel's byte
order), 0x45454545 at 0x34 and ``_magic_table`` (the table's offset) at 0x38.
``arch/arm/boot/compressed/vmlinux.lds.S`` writes those words and the table
through ZIMAGE_MAGIC(), which byte-swaps on big-endian kernels, so they read
little-endian either way. Each table entry is a size in words (counting
itself), a tag, and values; the table ends with a 0 word. The ``KLSZ`` entry
(0x5a534c4b) holds ``__piggy_size_addr - _start``: where the le32
decompressed size sits, which is the last word of ``piggy_data`` (compressed
stream, then size_append) and so where the stream ends. No header gives where
the stream starts: :func:`vmpatch.boot.search.find_sized_stream` finds it.

The decompressed payload is ``arch/arm/boot/Image`` (``objcopy -O binary``
of vmlinux), whose first byte is ``_text`` (``arch/arm/kernel/vmlinux.lds.S``).
"""

from __future__ import annotations

from vmpatch.boot.image import Context, RawKernel
from vmpatch.boot.search import find_sized_stream
from vmpatch.errors import InputError
from vmpatch.records.root import ByteOrder

NAME = "zImage"

_MAGIC_SIG = 0x24
_ENDIAN_FLAG = 0x30
_MAGIC_TABLE = 0x38
_ZIMAGE_MAGIC = 0x016F2818
_TAG_KLSZ = 0x5A534C4B
_MAX_ENTRIES = 64


def _le32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def recognise(data: bytes) -> bool:
    return _le32(data, _MAGIC_SIG) == _ZIMAGE_MAGIC


def _piggy_size_offset(data: bytes, ctx: Context) -> int:
    if _le32(data, 0x34) != 0x45454545:
        raise InputError(ctx.path, "zImage without a data table (kernel older than 4.15?)")
    at = _le32(data, _MAGIC_TABLE)
    for _ in range(_MAX_ENTRIES):
        if at + 8 > len(data):
            break
        words = _le32(data, at)
        if words == 0:
            break
        if _le32(data, at + 4) == _TAG_KLSZ and words >= 3:
            return _le32(data, at + 8)
        at += 4 * words
    raise InputError(ctx.path, "zImage data table has no KLSZ entry")


def unwrap(data: bytes, ctx: Context) -> RawKernel:
    size_at = _piggy_size_offset(data, ctx)
    if size_at + 4 > len(data):
        raise InputError(ctx.path, f"zImage size word at {size_at:#x} lies beyond the file")
    flag = data[_ENDIAN_FLAG : _ENDIAN_FLAG + 4]
    order: ByteOrder = "big" if flag == b"\x04\x03\x02\x01" else "little"
    found = find_sized_stream(data, ctx, lo=_MAGIC_TABLE + 4, hi=size_at, size_at=size_at)
    return RawKernel(found.data, f"{NAME} > {found.codec} > arm Image", "arm", order, "_text")
