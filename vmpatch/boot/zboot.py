# SPDX-License-Identifier: GPL-2.0-or-later
"""EFI zboot (``vmlinuz.efi``): a PE decompressor with the compressed Image inside.

``drivers/firmware/efi/libstub/zboot-header.S`` lays out the DOS header as:
``"MZ"`` at 0, ``"zimg"`` at 4, the payload offset (le32) at 8, the payload
size (le32) at 12 (without the appended size, ZBOOT_SIZE_LEN), two reserved
words, and the compression type as a NUL-terminated string at 0x18
(COMP_TYPE: ``gzip`` or ``zstd``, ``drivers/firmware/efi/libstub/Makefile.zboot``).
The payload is the arch's Image, padded with zeros to its in-memory size.
"""

from __future__ import annotations

from vmpatch.boot import codecs
from vmpatch.boot.image import Context, Payload
from vmpatch.errors import InputError, UnsupportedLayout

NAME = "EFI zboot"

_TYPE = 4
_PAYLOAD_OFFSET = 8
_PAYLOAD_SIZE = 12
_COMP_TYPE = 0x18
_COMP_TYPE_END = 0x38  # LINUX_PE_MAGIC follows at .Ldoshdr + 0x38


def recognise(data: bytes) -> bool:
    return data[:2] == b"MZ" and data[_TYPE : _TYPE + 4] == b"zimg"


def unwrap(data: bytes, ctx: Context) -> Payload:
    offset = int.from_bytes(data[_PAYLOAD_OFFSET : _PAYLOAD_OFFSET + 4], "little")
    size = int.from_bytes(data[_PAYLOAD_SIZE : _PAYLOAD_SIZE + 4], "little")
    comp_type = data[_COMP_TYPE:_COMP_TYPE_END].split(b"\0", 1)[0].decode("ascii", "replace")
    if offset + size > len(data):
        raise InputError(
            ctx.path, f"zboot payload at {offset:#x}+{size:#x} lies beyond the end of the file"
        )
    codec = "zstd" if comp_type.startswith("zstd") else comp_type
    if codec not in codecs.MAGICS:
        raise UnsupportedLayout(ctx.path, f"zboot payload compression {comp_type!r} is unknown")
    payload = data[offset : offset + size]
    if codecs.codec_at(payload) != codec:
        raise InputError(ctx.path, f"zboot payload at {offset:#x} is not {comp_type} as declared")
    return Payload(codecs.decompress(ctx.path, codec, payload, ctx.max_size), (NAME, codec))
