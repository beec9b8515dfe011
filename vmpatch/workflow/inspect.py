# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch inspect``: describe each file given, an image or a module, whatever the others are.

Each file is told apart by name or ELF type (a module is ``ET_REL``) and read
by its own reporter (:mod:`vmpatch.elf.vmlinux` or :mod:`vmpatch.ko.report`).
A file that cannot be read is reported as an error entry and the rest are
still described (issue 8.7); the run's exit code is the most severe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vmpatch.errors import EXIT_INPUT, InputError, VmpatchError
from vmpatch.ko.compression import MODULE_SUFFIXES
from vmpatch.workflow.results import FileError, most_severe
from vmpatch.workflow.tree import STRIPPED_SUFFIX

if TYPE_CHECKING:
    from vmpatch.boot.kernel import KernelFacts
    from vmpatch.elf.vmlinux import ImageReport
    from vmpatch.ko.report import ModuleReport

__all__ = ["InspectReport", "is_module", "kernel_entry", "run_inspect"]

#: A module by its name: any kbuild module file, or the build-time stripped copy.
_MODULE_SUFFIXES = (*MODULE_SUFFIXES, STRIPPED_SUFFIX)


def is_module(path: Path) -> bool:
    """Modules by name, or relocatable ELF files whatever their name."""
    if path.name.endswith(_MODULE_SUFFIXES):
        return True
    from vmpatch.elf.constants import ELF_MAGIC, ElfType
    from vmpatch.fs.atomic import open_input

    try:
        with open_input(path) as f:
            head = f.read(18)
    except (OSError, InputError):
        return False  # the reader that follows says what is wrong with it
    if head[:4] != ELF_MAGIC or len(head) < 18:
        return False
    e_type = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
    return e_type == ElfType.ET_REL


@dataclass(frozen=True)
class InspectReport:
    """One entry per file, in the order given."""

    files: tuple[ImageReport | KernelFacts | ModuleReport | FileError, ...]

    @property
    def exit_code(self) -> int:
        """An error's code; 2 for an image without a supported root; else 0."""
        from vmpatch.elf.vmlinux import ImageReport

        codes = [f.error.exit_code for f in self.files if isinstance(f, FileError)]
        codes += [EXIT_INPUT for f in self.files if isinstance(f, ImageReport) and not f.supported]
        return most_severe(codes)


def kernel_entry(
    path: Path,
    *,
    system_map: str | os.PathLike[str] | None = None,
    vmlinux: str | os.PathLike[str] | None = None,
) -> ImageReport | KernelFacts:
    """A vmlinux with ``.module_hashes`` in full (section, symbol, patchable or not);
    any other kernel file (a boot image, a vmlinux without the feature) as the
    boot reader tells it: container chain, arch, version, root or why not."""
    from vmpatch.boot.kernel import is_elf_file, read_kernel
    from vmpatch.elf.vmlinux import SECTION_NAME, locate, location_report

    if system_map is None and vmlinux is None and is_elf_file(path):
        from vmpatch.elf.reader import open_elf

        with open_elf(path) as reader:
            has_section = reader.section(SECTION_NAME) is not None
        if has_section:
            return location_report(locate(path))
    return read_kernel(path, system_map=system_map, vmlinux=vmlinux)


def run_inspect(
    paths: Sequence[str | os.PathLike[str]],
    *,
    max_size: int | None = None,
    system_map: str | os.PathLike[str] | None = None,
    vmlinux: str | os.PathLike[str] | None = None,
) -> InspectReport:
    """Describe every file of ``paths``; a file that cannot be read is a FileError entry.

    ``system_map`` and ``vmlinux`` give a raw boot image (arm64/riscv
    ``Image``, zImage, s390) the symbols it lacks.
    """
    from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED
    from vmpatch.ko.report import module_report

    limit = DEFAULT_MAX_DECOMPRESSED if max_size is None else max_size
    entries: list[ImageReport | KernelFacts | ModuleReport | FileError] = []
    for name in paths:
        path = Path(name)
        try:
            if is_module(path):
                entries.append(module_report(path, max_size=limit))
            else:
                entries.append(kernel_entry(path, system_map=system_map, vmlinux=vmlinux))
        except VmpatchError as err:
            entries.append(FileError.of(path, err))
    return InspectReport(tuple(entries))
