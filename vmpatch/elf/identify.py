# SPDX-License-Identifier: GPL-2.0-or-later
"""Is this ELF file a Linux kernel? What `--kernel` and `inspect` ask before trusting it.

Every kernel links ``linux_banner`` (``init/version-timestamp.c``, a const
string in ``.rodata``: "Linux version ..."), stripped or not. A module is a
relocatable object (ET_REL, with ``.modinfo``/``.gnu.linkonce.this_module``),
a core dump is ET_CORE, and an ordinary program has no banner: each is named
for what it is rather than judged as a kernel without the feature.
"""

from __future__ import annotations

from vmpatch.elf.constants import ElfType
from vmpatch.elf.reader import ElfReader
from vmpatch.errors import InputError

__all__ = [
    "ARCH_NAMES",
    "BANNER",
    "arch_of",
    "banner_at",
    "banner_of",
    "find_banner",
    "kernel_problem",
    "require_kernel",
]

BANNER = b"Linux version "
_BANNER_MAX = 512

#: pyelftools' e_machine names -> the arch names vmpatch reports.
ARCH_NAMES = {
    "EM_X86_64": "x86_64",
    "EM_386": "i386",
    "EM_AARCH64": "aarch64",
    "EM_ARM": "arm",
    "EM_PPC": "powerpc",
    "EM_PPC64": "ppc64",
    "EM_S390": "s390x",
    "EM_RISCV": "riscv64",
}


def arch_of(reader: ElfReader) -> str:
    machine = reader.identity.machine
    name = ARCH_NAMES.get(machine, machine)
    if name == "ppc64" and reader.identity.byteorder == "little":
        return "ppc64le"
    if name == "s390x" and reader.identity.elfclass == 32:
        return "s390"
    if name == "riscv64" and reader.identity.elfclass == 32:
        return "riscv32"
    return name


def banner_at(data: bytes, offset: int = 0) -> str | None:
    """The banner string starting at ``offset``, or None if none starts there."""
    if data[offset : offset + len(BANNER)] != BANNER:
        return None
    end = offset + _BANNER_MAX
    text = data[offset:end].split(b"\0", 1)[0].split(b"\n", 1)[0]
    return text.decode("utf-8", "replace")


def find_banner(data: bytes) -> str | None:
    """linux_banner among the "Linux version " strings in ``data``.

    A kernel holds two: the weak one of ``init/version.c``, built before the
    build number is known (it ends in ``"# "``), and the one of
    ``init/version-timestamp.c`` that the final link uses (``"#1 SMP ..."``).
    The latter is preferred; either names the release.
    """
    import re

    found: list[str] = []
    at = data.find(BANNER)
    while at >= 0 and len(found) < 16:
        text = banner_at(data, at)
        if text and "(" in text:  # "Linux version 6.12.0 (user@host) ..."
            found.append(text)
        at = data.find(BANNER, at + 1)
    final = [text for text in found if re.search(r"#\d", text)]
    return (final or found)[0] if found else None


def banner_of(reader: ElfReader) -> str | None:
    """linux_banner of an ELF kernel, found in ``.rodata`` (symbols may be stripped)."""
    rodata = reader.section(".rodata")
    if rodata is None or rodata.type == "SHT_NOBITS":
        return None
    if rodata.offset + rodata.size > reader.file_size:
        return None
    return find_banner(reader.read(rodata.offset, rodata.size))


def kernel_problem(reader: ElfReader) -> str | None:
    """What this ELF file is, when it is not a Linux kernel; None for a kernel."""
    kind = reader.identity.elftype
    name = kind.name if isinstance(kind, ElfType) else f"{kind:#x}"
    if kind == ElfType.ET_REL:
        if reader.section(".gnu.linkonce.this_module") or reader.section(".modinfo"):
            return "a kernel module (ET_REL), not a kernel"
        return "a relocatable object (ET_REL), not a linked kernel"
    if kind == ElfType.ET_CORE:
        return "a core file (ET_CORE), not a kernel"
    if kind not in (ElfType.ET_EXEC, ElfType.ET_DYN):
        return f"an ELF file of type {name}, not a kernel"
    if reader.find_symbols("linux_banner") or banner_of(reader):
        return None
    what = "an executable" if kind == ElfType.ET_EXEC else "a shared object or PIE"
    return f"{what} ({name}) that is not a Linux kernel: it has no linux_banner"


def require_kernel(reader: ElfReader) -> None:
    """InputError naming what the file is, unless it is a Linux kernel."""
    problem = kernel_problem(reader)
    if problem:
        raise InputError(reader.path, problem)
