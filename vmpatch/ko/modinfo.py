# SPDX-License-Identifier: GPL-2.0-or-later
"""What ``modinfo`` would show about a module: its ``.modinfo`` and its PKCS#7 signer.

``vmpatch inspect`` names modules by what they declare (name, vermagic,
depends) and, for classically signed modules, by who signed them, so users
can tell a hash-authenticated module from a PKCS#7-signed one at a glance.
Modules are untrusted input: every parser failure becomes an
:class:`~vmpatch.errors.InputError` naming the file. pyelftools and
asn1crypto are imported inside the functions so importing this module is
cheap.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

from vmpatch.elf.constants import ELF_MAGIC, ElfType, SectionType
from vmpatch.errors import InputError, ToolError

__all__ = ["Pkcs7Info", "describe_pkcs7", "read_modinfo"]

_ET_REL = ElfType.ET_REL.name  # pyelftools hands out e_type by name


def read_modinfo(data: bytes, path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Parse the ``.modinfo`` section of the relocatable ELF object ``data``.

    The section holds NUL-separated ``key=value`` strings; keys repeat
    (``alias``, ``parm``...), so each maps to its values in file order. A
    string without ``=`` maps to ``""``. Bytes that are not UTF-8 are kept as
    backslash escapes, so values stay printable and nothing is lost silently.
    A module without ``.modinfo`` gives an empty dict. ``path`` only names the
    module in errors. Any ELF class and byte order is accepted; an object
    that is not ``ET_REL`` (what every ``.ko`` is) is refused.
    """
    from elftools.elf.elffile import ELFFile

    from vmpatch.elf.translate import elf_errors  # lazy: ko/ loads pyelftools only here

    if not data.startswith(ELF_MAGIC):
        raise InputError(path, "not an ELF file")
    with elf_errors(path):
        elf = ELFFile(io.BytesIO(data))
        e_type = elf["e_type"]
        if e_type != _ET_REL:
            raise InputError(path, f"not a kernel module: ELF type {e_type}, expected {_ET_REL}")
        section = elf.get_section_by_name(".modinfo")
        if section is None:
            return {}
        if section["sh_type"] == SectionType.SHT_NOBITS.name:
            raise InputError(path, ".modinfo has no contents (SHT_NOBITS)")
        offset, size = section["sh_offset"], section["sh_size"]
        if offset + size > len(data):
            raise InputError(path, ".modinfo extends past the end of the file (truncated?)")
        raw = section.data()
    return _parse_strings(raw)


def _parse_strings(raw: bytes) -> dict[str, list[str]]:
    info: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        if not item:
            continue  # padding between entries (alignment, merged sections)
        key, _sep, value = item.decode("utf-8", "backslashreplace").partition("=")
        info.setdefault(key, []).append(value)
    return info


@dataclass(frozen=True)
class Pkcs7Info:
    """The PKCS#7 signer as ``modinfo`` prints it.

    ``signer`` is the issuer's common name (the whole issuer name when it has
    none), ``key_id`` the certificate serial number as colon-separated
    upper-case hex bytes (modinfo's ``sig_key``), ``hash_algo`` the digest
    (``sha256``...) and ``signature_algo`` the signature scheme
    (``rsassa_pkcs1v15``, ``ecdsa``...).
    """

    signer: str
    key_id: str
    hash_algo: str
    signature_algo: str


def _hex_serial(serial: int) -> str:
    """Serial as modinfo prints it: big-endian magnitude bytes, ``AB:CD:...``."""
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    return ":".join(f"{byte:02X}" for byte in raw)


def _signature_algo(algorithm: Any) -> str:
    """The scheme's name, or the dotted OID when asn1crypto does not know it."""
    try:
        return str(algorithm.signature_algo)
    except ValueError:
        return str(algorithm["algorithm"].dotted)


def describe_pkcs7(signature: bytes, *, path: str | os.PathLike[str] | None = None) -> Pkcs7Info:
    """Describe the first signer of a DER PKCS#7/CMS ``SignedData`` blob.

    ``signature`` is the ``sig_len`` bytes of a type-2 module signature.
    Malformed DER, a ContentInfo that is not SignedData, or one without
    signers is an :class:`InputError` naming ``path``. asn1crypto is a
    declared dependency; if it is missing anyway, that is a
    :class:`ToolError` (a required component is absent), never a silent
    ``None``: callers that want best-effort output catch the error.
    """
    try:
        from asn1crypto import cms
    except ImportError:
        raise ToolError(
            path,
            "cannot describe PKCS#7 signatures: asn1crypto is not installed",
            hint="pip install asn1crypto",
        ) from None
    try:
        info = cms.ContentInfo.load(signature, strict=True)
        if info["content_type"].native != "signed_data":
            raise InputError(
                path, f"PKCS#7 content type is {info['content_type'].native}, not signed_data"
            )
        signers = info["content"]["signer_infos"]
        if len(signers) == 0:
            raise InputError(path, "PKCS#7 SignedData has no signers")
        signer = signers[0]
        sid = signer["sid"]
        if sid.name != "issuer_and_serial_number":
            raise InputError(
                path, "PKCS#7 signer is identified by subject key id, not issuer and serial"
            )
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
        common_names = [v for k, v in issuer.native.items() if k == "common_name"]
        name = common_names[0] if common_names else issuer.human_friendly
        if isinstance(name, list):
            name = name[0]
        return Pkcs7Info(
            signer=str(name),
            key_id=_hex_serial(int(serial)),
            hash_algo=str(signer["digest_algorithm"]["algorithm"].native),
            signature_algo=_signature_algo(signer["signature_algorithm"]),
        )
    except InputError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as err:
        raise InputError(path, f"malformed PKCS#7 signature: {err}") from None
