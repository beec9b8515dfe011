# SPDX-License-Identifier: GPL-2.0-or-later
"""The few symbol addresses a raw kernel image needs, from System.map or vmlinux.

A raw image (``objcopy -O binary`` of vmlinux) has no symbol table; where
``module_hashes_root`` sits is told by the build's symbol map: ``System.map``
as ``scripts/mksysmap`` writes it (``nm -n`` lines "ADDRESS TYPE NAME"), or
the vmlinux itself. Debian installs a one-line placeholder as
``/boot/System.map-$KVER``; the real map is in ``linux-image-$KVER-dbg``
under ``/usr/lib/debug/boot/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure
from vmpatch.frozen import frozen

__all__ = ["WANTED", "SymbolMap", "beside", "from_system_map", "from_vmlinux"]

WANTED = ("_text", "_start", "_stext", "linux_banner", "module_hashes_root")

_PLACEHOLDER = b"The real System.map is in"  # Debian's linux-image postinst placeholder
_MAX_MAP = 256 * 1024 * 1024


@frozen
class SymbolMap:
    """Addresses of :data:`WANTED` symbols, where they came from, or why there are none."""

    source: Path
    addresses: dict[str, int]
    placeholder: bool = False

    @property
    def describe(self) -> str:
        return str(self.source)


def _placeholder_hint(path: Path) -> str:
    kver = path.name.removeprefix("System.map-") if path.name.startswith("System.map-") else None
    where = (
        f"/usr/lib/debug/boot/System.map-{kver} (package linux-image-{kver}-dbg)"
        if kver
        else "/usr/lib/debug/boot/ (the linux-image-*-dbg package)"
    )
    return f"{path} is Debian's placeholder, not a symbol map: the real one is {where}"


def from_system_map(path: str | os.PathLike[str]) -> SymbolMap:
    """Parse ``path`` as System.map; a Debian placeholder comes back with ``placeholder``."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            text = stream.read(_MAX_MAP + 1)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from err
    if _PLACEHOLDER in text[:4096] and text.count(b"\n") <= 2:
        return SymbolMap(path, {}, placeholder=True)
    found: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if len(fields) < 3:
            continue
        name = fields[2].decode("ascii", "replace")
        if name in WANTED and name not in found:
            try:
                found[name] = int(fields[0], 16)
            except ValueError as err:
                raise InputError(path, f"line {number}: not a System.map line") from err
    if not found:
        raise InputError(path, "not a System.map: none of _text, _start, linux_banner in it")
    return SymbolMap(path, found)


def from_vmlinux(path: str | os.PathLike[str]) -> SymbolMap:
    """The wanted symbols from the symbol table of the vmlinux ELF at ``path``."""
    from vmpatch.elf.reader import open_elf

    path = Path(path)
    found: dict[str, int] = {}
    with open_elf(path) as reader:
        for name in WANTED:
            symbols = reader.find_symbols(name)
            if symbols:
                found[name] = symbols[0].value
    if not found:
        raise InputError(path, "has no symbol table with _text, _start or linux_banner")
    return SymbolMap(path, found)


def beside(image: Path) -> list[Path]:
    """Where a build or an installation keeps the map of ``image``, most specific first.

    ``/boot/vmlinuz-KVER`` has ``/boot/System.map-KVER``; a kbuild tree's
    ``arch/*/boot/Image`` has ``System.map`` three levels up.
    """
    candidates = []
    name = image.name
    if "-" in name:
        candidates.append(image.with_name("System.map-" + name.split("-", 1)[1]))
    candidates.append(image.with_name("System.map"))
    if image.parent.name == "boot" and image.parent.parent.parent.name == "arch":
        candidates.append(image.parent.parent.parent.parent / "System.map")
    return [c for c in candidates if c.is_file()]


def placeholder_hint(path: Path) -> str:
    return _placeholder_hint(path)
