# SPDX-License-Identifier: GPL-2.0-or-later
"""riscv ``Image``: ``objcopy -O binary`` of vmlinux, starting with a 64-byte header.

``struct riscv_image_header`` of ``arch/riscv/include/asm/image.h``: ``magic2``
``"RSC\\x05"`` at 0x38 (and the deprecated ``"RISCV\\0\\0\\0"`` at 0x30);
``flags`` (le64) at 0x18, bit 0 RISCV_IMAGE_FLAG_BE. The header is the first
thing in ``_start`` (``arch/riscv/kernel/head.S``); ``_text`` comes later,
after the init sections (``arch/riscv/kernel/vmlinux.lds.S``), so the image's
base symbol is ``_start``.
"""

from __future__ import annotations

from vmpatch.boot.image import Context, RawKernel
from vmpatch.records.root import ByteOrder

NAME = "riscv Image"

_MAGIC2 = 0x38
_FLAGS = 0x18
_FLAG_BE = 0x1


def recognise(data: bytes) -> bool:
    return data[_MAGIC2 : _MAGIC2 + 4] == b"RSC\x05"


def unwrap(data: bytes, ctx: Context) -> RawKernel:
    flags = int.from_bytes(data[_FLAGS : _FLAGS + 8], "little")
    order: ByteOrder = "big" if flags & _FLAG_BE else "little"
    return RawKernel(data, NAME, "riscv64", order, "_start")
