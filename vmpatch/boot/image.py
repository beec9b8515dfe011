# SPDX-License-Identifier: GPL-2.0-or-later
"""What a boot-image format hands back when it unwraps one layer.

A format's ``unwrap`` returns either a :class:`Payload` (another container or
compressed stream to look at next) or a :class:`RawKernel` (the kernel's
memory image without ELF headers: ``objcopy -O binary`` of vmlinux). An ELF
payload is recognised by the loop itself, so no format needs to say so.
"""

from __future__ import annotations

from pathlib import Path

from vmpatch.frozen import frozen
from vmpatch.records.root import ByteOrder

__all__ = ["BOOT_MAX_DECOMPRESSED", "Context", "Payload", "RawKernel", "Unwrapped"]

BOOT_MAX_DECOMPRESSED = 1024 * 1024 * 1024
"""Bound on any decompressed boot-image payload.

The largest distro kernels decompress to well under 100 MiB (Debian's amd64
vmlinux ELF is ~60 MiB); 1 GiB leaves room and still stops a decompression
bomb before it exhausts memory.
"""


@frozen
class Context:
    """What every format needs besides the bytes: the file to name, the bound."""

    path: Path
    max_size: int = BOOT_MAX_DECOMPRESSED


@frozen
class Payload:
    """The bytes inside one layer, and the labels this layer adds to the chain."""

    data: bytes
    labels: tuple[str, ...]


@frozen
class RawKernel:
    """A kernel memory image: file offset 0 is the address of ``base_symbol``."""

    data: bytes
    label: str  # e.g. "arm64 Image"
    arch: str  # e.g. "aarch64", as the ELF readers name arches
    byteorder: ByteOrder
    base_symbol: str  # "_text" on most arches, "_start" on riscv


Unwrapped = Payload | RawKernel
