# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``.ko`` side of ``vmpatch inspect``: what a module is and what it carries.

A user holding a module wants to know, without a kernel at hand, whether it
is hash-authenticated (and at which position of which tree height) or
classically signed (and by whom), and which module it is at all. Everything
is read from the kernel-visible bytes (decompressed), and ``.modinfo`` is read
from the bytes *before* the trailer, which are the bytes the kernel hashes.
The report is a frozen model; rendering (table rows or JSON) is separate so
the CLI stays a thin client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmpatch.errors import InputError, SystemFailure, ToolError
from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED, read_module
from vmpatch.records.trailer import TrailerKind, count_trailers, find_trailer

__all__ = ["MODINFO_FIELDS", "ModuleReport", "module_report"]

#: The .modinfo keys shown first, in this order (as ``modinfo`` lists them).
MODINFO_FIELDS = (
    "name",
    "vermagic",
    "license",
    "description",
    "author",
    "version",
    "srcversion",
    "depends",
    "intree",
    "retpoline",
)


@dataclass(frozen=True)
class ModuleReport:
    """Everything ``inspect`` says about one module file.

    ``size`` is the file's size on disk, ``content_size`` the decompressed
    size, ``module_size`` the bytes before the last trailer (what the kernel
    hashes). ``trailer`` is ``"none"``, ``"merkle"``, ``"pkcs7"`` or
    ``"unknown type N"``; ``trailers`` counts stacked trailers (a proof over
    a signed module counts two). ``notes`` carry what could not be decoded.
    """

    path: Path
    codec: str
    size: int
    content_size: int
    module_size: int
    trailer: str
    trailers: int = 0
    sig_len: int | None = None
    well_formed: bool | None = None
    position: int | None = None
    levels: int | None = None
    proof_length: int | None = None
    signer: str | None = None
    key_id: str | None = None
    hash_algo: str | None = None
    modinfo: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    #: Read by vmpatch.cli.jsonout: the trailer's details go under "trailer".
    json_skip = (
        "trailer",
        "trailers",
        "sig_len",
        "well_formed",
        "proof_length",
        "signer",
        "key_id",
        "hash_algo",
    )
    json_extra = (("kind", "kind"), ("trailer", "trailer_info"))
    kind = "module"

    @property
    def trailer_kind(self) -> TrailerKind:
        """The last trailer's kind (``trailer`` is its label: ``unknown type N``)."""
        return TrailerKind(self.trailer.split()[0])

    @property
    def trailer_info(self) -> dict[str, Any]:
        """The trailer object of ``inspect --json``: every key always there, null when it
        does not apply, so ``jq .trailer.signer`` never fails on a module with a proof."""
        kind = self.trailer_kind
        present = kind is not TrailerKind.NONE
        merkle = kind is TrailerKind.MERKLE
        pkcs7 = kind is TrailerKind.PKCS7
        return {
            "kind": kind,
            "label": self.trailer,
            "count": self.trailers,
            "sig_len": self.sig_len if present else None,
            "well_formed": self.well_formed if present else None,
            "position": self.position if merkle else None,
            "levels": self.levels if merkle else None,
            "proof_length": self.proof_length if merkle else None,
            "signer": self.signer if pkcs7 else None,
            "key_id": self.key_id if pkcs7 else None,
            "hash_algo": self.hash_algo if pkcs7 else None,
        }

    def rows(self) -> list[tuple[str, str]]:
        """Label/value pairs for a human-readable table."""
        rows = [("file", str(self.path))]
        if self.codec != "none":
            rows.append(("compression", f"{self.codec} ({self.size} bytes on disk)"))
            rows.append(("size", f"{self.content_size} bytes decompressed"))
        else:
            rows.append(("size", f"{self.size} bytes"))
        trailer = self.trailer
        if self.trailers > 1:
            trailer += f" (last of {self.trailers} stacked trailers)"
        if self.well_formed is False:
            trailer += " (malformed)"
        rows.append(("trailer", trailer))
        if self.trailer != "none":
            rows.append(("sig_len", str(self.sig_len)))
            rows.append(("module bytes", str(self.module_size)))
        if self.trailer == "merkle" and self.position is not None:
            rows.append(("position", str(self.position)))
            rows.append(("levels", str(self.levels) if self.levels is not None else "?"))
            rows.append(("proof length", f"{self.proof_length} bytes"))
        if self.trailer == "pkcs7":
            rows.extend(
                (label, value)
                for label, value in (
                    ("signer", self.signer),
                    ("key id", self.key_id),
                    ("hash algo", self.hash_algo),
                )
                if value is not None
            )
        for key in MODINFO_FIELDS:
            if key in self.modinfo:
                rows.append((key, ", ".join(self.modinfo[key])))
        others = sorted(k for k in self.modinfo if k not in MODINFO_FIELDS)
        for key in others:
            rows.append((key, ", ".join(self.modinfo[key])))
        rows.extend(("note", note) for note in self.notes)
        return rows


def _values(key: str, values: list[str]) -> tuple[str, ...]:
    """A key's values; ``depends=`` (no dependencies) is no value, not one empty name."""
    if key == "depends":
        return tuple(v for v in values if v)
    return tuple(values)


def module_report(
    path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_DECOMPRESSED
) -> ModuleReport:
    """Read ``path`` (any of .ko, .ko.gz, .ko.xz, .ko.zst) and describe it."""
    from vmpatch.ko.modinfo import describe_pkcs7, read_modinfo

    where = Path(path)
    content = read_module(where, max_size=max_size)
    try:
        size = where.stat().st_size
    except OSError as err:
        raise SystemFailure.from_oserror(where, err, "stat") from None
    data = content.data
    trailer = find_trailer(data)
    notes: list[str] = []
    details: dict[str, Any] = {}
    if trailer is None:
        kind, module_size = "none", len(data)
    else:
        kind = trailer.label
        fits = trailer.fits
        module_size = trailer.module_size if fits else len(data)
        details.update(sig_len=trailer.sig_len, well_formed=trailer.well_formed)
        if not fits:
            notes.append(
                f"sig_len {trailer.sig_len} does not fit in the file: cannot tell where the "
                "module ends"
            )
        elif trailer.kind == "merkle":
            details.update(
                position=trailer.position(data),
                levels=trailer.levels,
                proof_length=trailer.sig_len,
            )
            if trailer.levels is None:
                notes.append(f"sig_len {trailer.sig_len} is not 4 + 32 * levels")
        elif trailer.kind == "pkcs7":
            try:
                info = describe_pkcs7(trailer.signature(data), path=where)
            except (InputError, ToolError) as err:
                notes.append(f"cannot describe the PKCS#7 signature: {err.reason}")
            else:
                details.update(signer=info.signer, key_id=info.key_id, hash_algo=info.hash_algo)
    modinfo = read_modinfo(data[:module_size], where)
    return ModuleReport(
        path=where,
        codec=content.codec.label,
        size=size,
        content_size=len(data),
        module_size=module_size,
        trailer=kind,
        trailers=count_trailers(data),
        modinfo={key: _values(key, values) for key, values in modinfo.items()},
        notes=tuple(notes),
        **details,
    )
