# SPDX-License-Identifier: GPL-2.0-or-later
"""arm64 ``Image``: ``objcopy -O binary`` of vmlinux, starting with a 64-byte header.

``struct arm64_image_header`` of ``arch/arm64/include/asm/image.h``: the magic
``"ARM\\x64"`` at 0x38; ``flags`` (le64) at 0x18, whose bit 0 is
ARM64_IMAGE_FLAG_BE (the kernel's byte order). The image starts at ``_text``
(``arch/arm64/kernel/vmlinux.lds.S``: ``_text = .`` before HEAD_TEXT).
"""

from __future__ import annotations

from vmpatch.boot.image import Context, RawKernel
from vmpatch.records.root import ByteOrder

NAME = "arm64 Image"

_MAGIC_OFFSET = 0x38
_FLAGS = 0x18
_FLAG_BE = 0x1  # ARM64_IMAGE_FLAG_BE_MASK << ARM64_IMAGE_FLAG_BE_SHIFT


def recognise(data: bytes) -> bool:
    return data[_MAGIC_OFFSET : _MAGIC_OFFSET + 4] == b"ARM\x64"


def unwrap(data: bytes, ctx: Context) -> RawKernel:
    flags = int.from_bytes(data[_FLAGS : _FLAGS + 8], "little")
    order: ByteOrder = "big" if flags & _FLAG_BE else "little"
    return RawKernel(data, NAME, "aarch64", order, "_text")
