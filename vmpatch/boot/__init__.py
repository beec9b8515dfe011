# SPDX-License-Identifier: GPL-2.0-or-later
"""Boot images (bzImage, arm64/riscv Image, EFI zboot, zImage, s390, UKI).

Each format is one module with a ``recognise(data)`` function that tells from
magic bytes at fixed offsets (never the file name) whether a file is its
kind, and an ``unwrap(data, ctx)`` that returns what is inside, registered in
the ordered table :func:`formats`, like diffoscope's comparators: a new
format is a new module, never an edit of the others.

Order matters because formats nest and overlap: bzImage, arm64 and riscv
Images and zboot all start with ``MZ`` and are valid PE files (their EFI
stub), so their own marks (``HdrS`` at 0x202, ``ARM\\x64``/``RSC\\x05`` at
0x38, ``zimg`` at 4) are tested before a PE is taken for a UKI, and a bare
compressed stream comes last. :func:`unwrap_image` peels up to
:data:`MAX_DEPTH` layers, until an ELF (the kernel's vmlinux) or a raw
kernel image.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from vmpatch.boot.image import BOOT_MAX_DECOMPRESSED, Context, Payload, RawKernel
from vmpatch.elf.constants import ELF_MAGIC
from vmpatch.errors import InputError, SystemFailure
from vmpatch.frozen import frozen

__all__ = [
    "BOOT_MAX_DECOMPRESSED",
    "FORMATS",
    "MAX_DEPTH",
    "RawKernel",
    "Unwrapped",
    "format_of",
    "formats",
    "unwrap_image",
]

_FORMATS: tuple[ModuleType, ...] | None = None


def formats() -> tuple[ModuleType, ...]:
    """The recognisers in the order they are tried (see the module docstring for why).

    Imported when a file is no ELF: a vmlinux needs none of them, and their
    import was 8 ms of every ``verify`` and ``patch`` start.
    """
    global _FORMATS
    if _FORMATS is None:
        from vmpatch.boot import arm64, bzimage, compressed, riscv, s390, uki, zboot, zimage

        _FORMATS = (bzimage, arm64, riscv, zboot, zimage, s390, uki, compressed)
    return _FORMATS


def __getattr__(name: str) -> object:
    """``FORMATS``: :func:`formats`, for callers that name the table."""
    if name == "FORMATS":
        return formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Containers peeled at most (UKI > zboot > gzip > Image is the deepest real one).
MAX_DEPTH = 4

#: Largest boot image read (Debian's UKIs with an initrd run to ~100 MiB).
MAX_IMAGE_SIZE = 512 * 1024 * 1024


@frozen
class Unwrapped:
    """What a boot image holds: the kernel as ELF bytes, or as a raw image."""

    path: Path
    chain: tuple[str, ...]  # e.g. ("bzImage", "xz", "ELF")
    elf: bytes | None
    raw: RawKernel | None

    @property
    def chain_text(self) -> str:
        return " > ".join(self.chain)


def _read(path: Path) -> bytes:
    from vmpatch.fs.atomic import open_input

    try:
        with open_input(path) as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > MAX_IMAGE_SIZE:
                raise InputError(path, f"{size} bytes: larger than any boot image")
            return stream.read()
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from err


def unwrap_bytes(path: Path, data: bytes, max_size: int = BOOT_MAX_DECOMPRESSED) -> Unwrapped:
    """Peel ``data`` (the contents of ``path``) down to the kernel."""
    ctx = Context(path, max_size)
    chain: list[str] = []
    for _ in range(MAX_DEPTH + 1):
        if data[:4] == ELF_MAGIC:
            return Unwrapped(path, (*chain, "ELF"), data, None)
        kind = next((f for f in formats() if f.recognise(data)), None)
        if kind is None:
            what = f"the payload after {' > '.join(chain)}" if chain else "not an ELF file"
            raise InputError(path, f"{what}: no known kernel or boot-image format")
        step = kind.unwrap(data, ctx)
        if isinstance(step, RawKernel):
            return Unwrapped(path, (*chain, *step.label.split(" > ")), None, step)
        assert isinstance(step, Payload)
        chain.extend(step.labels)
        data = step.data
    raise InputError(path, f"more than {MAX_DEPTH} nested containers: {' > '.join(chain)}")


_HEAD_SIZE = 0x10010  # covers every recogniser's offsets (s390's EP at 0x10008)


def format_of(path: str | os.PathLike[str]) -> str | None:
    """The outermost boot-image format of the file at ``path``, or None (ELF or unknown).

    Reads only the head of the file: enough to name a boot image where it is
    refused (``patch``), without decompressing anything.
    """
    from vmpatch.fs.atomic import open_input

    try:
        with open_input(Path(path)) as stream:
            head = stream.read(_HEAD_SIZE)
    except OSError:
        return None  # the reader that follows says what is wrong with it
    if head[:4] == ELF_MAGIC:
        return None
    kind = next((f for f in formats() if f.recognise(head)), None)
    return None if kind is None else str(kind.NAME)


def unwrap_image(path: str | os.PathLike[str], max_size: int = BOOT_MAX_DECOMPRESSED) -> Unwrapped:
    """Read the file at ``path`` and peel it down to the kernel."""
    path = Path(path)
    return unwrap_bytes(path, _read(path), max_size)
