# SPDX-License-Identifier: GPL-2.0-or-later
"""What a kernel file says about hash-based module authentication, whatever its container.

:func:`read_kernel` takes a vmlinux ELF or any boot image :mod:`vmpatch.boot`
recognises and answers: container chain, arch, byte order, kernel version
(``linux_banner``), and the root, or that the kernel has no
``.module_hashes``, or that this cannot be told.

- From an ELF (vmlinux, or the one inside a bzImage): the ``.module_hashes``
  section (``vmpatch.elf.vmlinux``). The section headers survive kbuild's
  stripping, so no section means no feature.
- From a raw image: a symbol map gives ``module_hashes_root``'s address; the
  file offset is that address minus the image's base symbol's
  (``_text``, ``_start`` on riscv). The mapping is checked first by reading
  ``linux_banner`` at its computed offset, which must start with
  "Linux version": a map of another build is refused, not believed. Without
  a map the answer is "cannot tell", never "absent".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vmpatch.boot import Unwrapped, unwrap_bytes
from vmpatch.boot.image import BOOT_MAX_DECOMPRESSED, RawKernel
from vmpatch.boot.symbols import SymbolMap, beside, from_system_map, from_vmlinux, placeholder_hint
from vmpatch.elf.constants import ELF_MAGIC
from vmpatch.elf.identify import arch_of, banner_at, banner_of, find_banner, require_kernel
from vmpatch.elf.reader import ElfReader, open_elf, open_elf_bytes
from vmpatch.elf.vmlinux import SECTION_NAME, SYMBOL_NAME, locate_in
from vmpatch.errors import InputError
from vmpatch.records.root import ROOT_RECORD_SIZE, ByteOrder, HasRootRecord, ModuleHashesRoot

if TYPE_CHECKING:
    from vmpatch.verdict import KernelModel

__all__ = [
    "HashesState",
    "KernelFacts",
    "is_elf_file",
    "kernel_model",
    "read_kernel",
]

HashesState = Literal["present", "absent", "unknown"]


@dataclass(frozen=True)
class KernelFacts(HasRootRecord):
    """Everything `inspect` says about a kernel file."""

    path: Path
    chain: tuple[str, ...]
    arch: str
    byteorder: ByteOrder
    version: str | None
    hashes: HashesState
    root_record: ModuleHashesRoot | None
    evidence: str  # how hashes/root were told (or why they cannot be)
    root_offset: int | None = None  # in the innermost kernel (ELF file or raw image)

    #: Read by vmpatch.cli.jsonout (docs/json.md, "inspect": a kernel file).
    json_rename = (("hashes", "module_hashes"),)
    json_skip = ("root_record",)
    json_hex = ("root_offset",)
    json_extra = (
        ("kind", "kind"),
        ("levels", "levels"),
        ("root", "root_hex"),
        ("placeholder", "placeholder"),
    )
    kind = "kernel"


def _from_elf(reader: ElfReader, chain: tuple[str, ...]) -> KernelFacts:
    require_kernel(reader)
    arch, order = arch_of(reader), reader.identity.byteorder
    version = banner_of(reader)
    if reader.section(SECTION_NAME) is None:
        return KernelFacts(
            reader.path, chain, arch, order, version, "absent", None,
            f"no {SECTION_NAME} section: no hash-based module authentication",
        )  # fmt: skip
    location = locate_in(reader)
    root = location.root
    problem = location.content_problem() or (
        None if root else f"{SECTION_NAME} is {location.section.size} bytes or has no contents"
    )
    return KernelFacts(
        reader.path, chain, arch, order, version, "present", root,
        f"{SECTION_NAME} section" + (f" ({problem})" if problem else ""),
        location.section.offset,
    )  # fmt: skip


def _symbols(
    image: Path, system_map: Path | None, vmlinux: Path | None
) -> tuple[SymbolMap | None, str]:
    """The symbol map to use, or None and why there is none."""
    if system_map is not None:
        found = from_system_map(system_map)
        if found.placeholder:
            raise InputError(system_map, placeholder_hint(system_map))
        return found, ""
    if vmlinux is not None:
        return from_vmlinux(vmlinux), ""
    notes = []
    for candidate in beside(image):
        found = from_system_map(candidate)
        if not found.placeholder:
            return found, ""
        notes.append(placeholder_hint(candidate))
    return None, "; ".join(notes) or "no symbol map: give --system-map FILE or --vmlinux FILE"


def _from_raw(
    path: Path, raw: RawKernel, chain: tuple[str, ...], symbols: SymbolMap | None, why: str
) -> KernelFacts:
    def facts(hashes: HashesState, version: str | None, evidence: str, **kw: object) -> KernelFacts:
        return KernelFacts(
            path,
            chain,
            raw.arch,
            raw.byteorder,
            version,
            hashes,
            evidence=evidence,
            **kw,  # type: ignore[arg-type]
        )

    if symbols is None:
        return facts("unknown", find_banner(raw.data), f"cannot tell: {why}", root_record=None)
    where = symbols.describe
    base = symbols.addresses.get(raw.base_symbol)
    banner = symbols.addresses.get("linux_banner")
    if base is None or banner is None:
        missing = raw.base_symbol if base is None else "linux_banner"
        raise InputError(symbols.source, f"has no {missing}: cannot map {raw.label} addresses")
    version = banner_at(raw.data, banner - base)
    if version is None:
        raise InputError(
            symbols.source,
            f"does not belong to {path}: linux_banner at offset {banner - base:#x} "
            "does not read 'Linux version'",
        )
    address = symbols.addresses.get(SYMBOL_NAME)
    if address is None:
        return facts(
            "absent", version,
            f"{where} has no {SYMBOL_NAME}: no hash-based module authentication", root_record=None,
        )  # fmt: skip
    offset = address - base
    record = raw.data[offset : offset + ROOT_RECORD_SIZE]
    if offset < 0 or len(record) != ROOT_RECORD_SIZE:
        raise InputError(path, f"{SYMBOL_NAME} at offset {offset:#x} lies outside the image")
    try:
        root: ModuleHashesRoot | None = ModuleHashesRoot.decode(record, raw.byteorder)
        evidence = f"{SYMBOL_NAME} in {where}"
    except ValueError as err:
        root, evidence = None, f"{SYMBOL_NAME} in {where} holds no valid root: {err}"
    return facts("present", version, evidence, root_record=root, root_offset=offset)


def is_elf_file(path: Path) -> bool:
    """Whether ``path`` starts with the ELF magic; SystemFailure (exit 3) if it cannot be read."""
    from vmpatch.errors import SystemFailure
    from vmpatch.fs.atomic import open_input

    try:
        with open_input(path) as probe:
            return probe.read(4) == ELF_MAGIC
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from err


def read_kernel(
    path: str | os.PathLike[str],
    *,
    system_map: str | os.PathLike[str] | None = None,
    vmlinux: str | os.PathLike[str] | None = None,
    max_size: int = BOOT_MAX_DECOMPRESSED,
) -> KernelFacts:
    """The kernel facts of the vmlinux or boot image at ``path``."""
    path = Path(path)
    if is_elf_file(path):  # opened lazily: a vmlinux.unstripped may be 500 MB
        with open_elf(path) as reader:
            return _from_elf(reader, ("ELF",))
    from vmpatch.boot import _read

    unwrapped: Unwrapped = unwrap_bytes(path, _read(path), max_size)
    if unwrapped.elf is not None:
        with open_elf_bytes(path, unwrapped.elf) as reader:
            return _from_elf(reader, unwrapped.chain)
    assert unwrapped.raw is not None
    symbols, why = _symbols(
        path,
        Path(system_map) if system_map is not None else None,
        Path(vmlinux) if vmlinux is not None else None,
    )
    return _from_raw(path, unwrapped.raw, unwrapped.chain, symbols, why)


def kernel_model(
    path: str | os.PathLike[str], config: str | os.PathLike[str] | None = None
) -> KernelModel:
    """The one kernel model of any image: a vmlinux ELF, or a boot image unwrapped here.

    A boot image keeps no symbol table, so whether it can check PKCS#7
    signatures is unknown unless ``config`` says; a kernel where the feature
    cannot be told at all is an error naming what is missing.
    """
    from vmpatch.elf.kernel import elf_kernel_model, with_config
    from vmpatch.verdict import KernelModel, Pkcs7Support

    where = Path(path)
    if is_elf_file(where):
        with open_elf(where) as reader:  # one open: root and symbols from the same file
            model = elf_kernel_model(reader)
    else:
        facts = read_kernel(where)
        if facts.hashes == "unknown":
            raise InputError(
                where, f"cannot tell whether it authenticates modules: {facts.evidence}"
            )
        if facts.hashes == "present" and facts.root_record is None:
            raise InputError(where, facts.evidence)
        model = KernelModel(
            root=facts.root_record or ModuleHashesRoot.placeholder(),
            merkle=facts.hashes == "present",
            pkcs7=Pkcs7Support.UNKNOWN,
        )
    return model if config is None else with_config(model, where, config)
