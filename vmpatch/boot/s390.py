# SPDX-License-Identifier: GPL-2.0-or-later
"""s390 ``bzImage``: the IPL loader and decompressor with the compressed kernel inside.

``arch/s390/boot/head.S`` places the string ``"S390EP"`` at EP_OFFSET
(0x10008): the one fixed mark of the format. The payload is the section
``.vmlinux.bin.compressed`` (``arch/s390/boot/Makefile``: vmlinux.bin, i.e.
``objcopy -O binary -S`` of vmlinux, compressed with ``gzip`` or a
``*_with_size`` command), which no header locates:
:func:`vmpatch.boot.search.find_sized_stream` finds the stream followed by
its decompressed size. The decompressed image starts at ``_text``
(``arch/s390/kernel/vmlinux.lds.S``); s390 is big-endian.
"""

from __future__ import annotations

from vmpatch.boot.image import Context, RawKernel
from vmpatch.boot.search import find_sized_stream

NAME = "s390 image"

_EP_OFFSET = 0x10008
_EP_STRING = b"S390EP"


def recognise(data: bytes) -> bool:
    return data[_EP_OFFSET : _EP_OFFSET + len(_EP_STRING)] == _EP_STRING


def unwrap(data: bytes, ctx: Context) -> RawKernel:
    found = find_sized_stream(data, ctx, lo=_EP_OFFSET, hi=len(data))
    return RawKernel(found.data, f"{NAME} > {found.codec} > s390 Image", "s390x", "big", "_text")
