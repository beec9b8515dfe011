# SPDX-License-Identifier: GPL-2.0-or-later
"""Unified kernel image: a PE (systemd-stub) whose ``.linux`` section is the kernel.

The UAPI Group's UKI specification names the sections: ``.linux`` holds the
kernel image (a bzImage, arm64 Image or zboot image), ``.osrel``,
``.cmdline``, ``.initrd`` and others ride along. Several other formats are PE
files too (bzImage, arm64/riscv Image and zboot all carry an EFI stub), so
this recogniser runs after theirs in :data:`vmpatch.boot.FORMATS`.

The PE is read with pefile (pure Python, every host) or, when only it is
installed, LIEF (``vmpatch[lief]``); ARCHITECTURE.md ("Boot images") gives
the measurements behind preferring pefile.
"""

from __future__ import annotations

import struct

from vmpatch.boot.image import Context, Payload
from vmpatch.errors import InputError, UnsupportedLayout

NAME = "UKI"

_E_LFANEW = 0x3C  # IMAGE_DOS_HEADER.e_lfanew
_SECTION_NAME = b".linux\0\0"  # IMAGE_SECTION_HEADER.Name, 8 bytes, NUL-padded
_HEADERS = 4096


def recognise(data: bytes) -> bool:
    """MZ, a PE signature where e_lfanew points, and a ``.linux`` section header."""
    if data[:2] != b"MZ" or len(data) < _E_LFANEW + 4:
        return False
    (pe_at,) = struct.unpack_from("<I", data, _E_LFANEW)
    if data[pe_at : pe_at + 4] != b"PE\0\0":
        return False
    return data.find(_SECTION_NAME, pe_at, pe_at + _HEADERS) >= 0


def _with_pefile(data: bytes, ctx: Context) -> bytes | None:
    import pefile

    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as err:
        raise InputError(ctx.path, f"malformed PE: {err}") from err
    for section in pe.sections:
        if section.Name == _SECTION_NAME:
            raw = section.get_data()
            size = min(section.Misc_VirtualSize or len(raw), len(raw))
            return bytes(raw[:size])
    return None


def _with_lief(data: bytes, ctx: Context) -> bytes | None:
    import lief

    binary = lief.PE.parse(list(data))
    if binary is None:
        raise InputError(ctx.path, "malformed PE (LIEF could not parse it)")
    section = binary.get_section(".linux")
    if section is None:
        return None
    content = bytes(section.content)
    size = section.virtual_size or len(content)
    return content[: min(size, len(content))]


def _reader() -> str | None:
    import importlib.util

    for name in ("pefile", "lief"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def unwrap(data: bytes, ctx: Context) -> Payload:
    reader = _reader()
    if reader is None:
        raise UnsupportedLayout(
            ctx.path,
            "a UKI (PE with a .linux section): reading it needs pefile "
            "(pip install pefile, or vmpatch[pe]) or LIEF (vmpatch[lief])",
        )
    kernel = _with_pefile(data, ctx) if reader == "pefile" else _with_lief(data, ctx)
    if not kernel:
        raise InputError(ctx.path, "UKI has no .linux section contents")
    return Payload(kernel, (NAME,))
