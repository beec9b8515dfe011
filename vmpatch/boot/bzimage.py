# SPDX-License-Identifier: GPL-2.0-or-later
"""x86 bzImage: the real-mode setup, then the protected-mode code holding the payload.

Offsets are those of the setup header, ``arch/x86/boot/header.S`` and
``Documentation/arch/x86/boot.rst`` ("The real-mode kernel header"):

- 0x1f1 ``setup_sects`` (u8): the setup is ``setup_sects + 1`` 512-byte
  sectors (the boot sector counts), and 0 means 4 (boot.rst);
- 0x202 ``header``: ``"HdrS"``;
- 0x206 ``version`` (u16): payload_offset/payload_length exist from 2.08;
- 0x248 ``payload_offset`` (u32), relative to the protected-mode code;
- 0x24c ``payload_length`` (u32).

The payload is ``arch/x86/boot/compressed/vmlinux.bin`` (``objcopy -R
.comment -S`` of vmlinux: an ELF with section headers but no symbols),
compressed with the codec of CONFIG_KERNEL_* plus kbuild's size_append.
"""

from __future__ import annotations

from vmpatch.boot import codecs
from vmpatch.boot.image import Context, Payload
from vmpatch.errors import InputError, UnsupportedLayout

NAME = "bzImage"

_SETUP_SECTS = 0x1F1
_HEADER = 0x202
_VERSION = 0x206
_PAYLOAD_OFFSET = 0x248
_PAYLOAD_LENGTH = 0x24C
_SECTOR = 512
_PAYLOAD_FIELDS_SINCE = 0x0208


def recognise(data: bytes) -> bool:
    return data[_HEADER : _HEADER + 4] == b"HdrS"


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def unwrap(data: bytes, ctx: Context) -> Payload:
    version = int.from_bytes(data[_VERSION : _VERSION + 2], "little")
    if version < _PAYLOAD_FIELDS_SINCE:
        raise UnsupportedLayout(
            ctx.path,
            f"boot protocol {version >> 8}.{version & 0xFF:02d} has no payload_offset "
            "(needs 2.08, Linux 2.6.26 or later)",
        )
    setup_sects = data[_SETUP_SECTS] or 4
    start = (setup_sects + 1) * _SECTOR + _u32(data, _PAYLOAD_OFFSET)
    length = _u32(data, _PAYLOAD_LENGTH)
    if start + length > len(data) or length < 4:
        raise InputError(
            ctx.path,
            f"bzImage payload at {start:#x}+{length:#x} lies beyond the end of the file "
            f"({len(data):#x} bytes)",
        )
    payload = data[start : start + length]
    codec = codecs.codec_at(payload)
    if codec is None:
        raise InputError(
            ctx.path, f"bzImage payload at {start:#x} is in no kernel compression format"
        )
    return Payload(codecs.decompress(ctx.path, codec, payload, ctx.max_size), (NAME, codec))
