# SPDX-License-Identifier: GPL-2.0-or-later
"""The trailer appended to a module: a proof or a signature, then the marker.

Keep in sync with ``include/uapi/linux/module_signature.h`` and the v5
series (docs/format.md section 3)::

    <signature bytes: sig_len of them>
    struct module_signature {
        u8   algo;        /* 0 */
        u8   hash;        /* 0 */
        u8   id_type;     /* 2 = PKCS#7, 3 = Merkle proof */
        u8   signer_len;  /* 0 */
        u8   key_id_len;  /* 0 */
        u8   __pad[3];    /* 0 */
        be32 sig_len;
    };
    "~Module signature appended~\\n"      /* 28 bytes, no NUL */

For a Merkle proof (id_type 3) the signature bytes are ``be32 pos`` followed
by ``levels`` sibling digests, bottom-up.

This module only *describes* trailers (build one, find one, split it off).
The kernel's acceptance rules, with their exact errnos and order, live in
:mod:`vmpatch.verdict`, which deliberately re-reads the raw bytes itself.
This module is imported by the modules_install hook: standard library only.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "MARKER",
    "SIGNATURE_INFO",
    "SignatureType",
    "Trailer",
    "TrailerKind",
    "find_trailer",
    "merkle_trailer",
    "proof_sig_len",
]

#: MODULE_SIGNATURE_MARKER, without its NUL.
MARKER = b"~Module signature appended~\n"

#: struct module_signature: algo, hash, id_type, signer_len, key_id_len, __pad[3], be32 sig_len.
SIGNATURE_INFO = struct.Struct(">BBBBB3xI")

_POS = struct.Struct(">I")
_DIGEST_SIZE = 32


class SignatureType(IntEnum):
    """``enum module_signature_type`` (id_type); 0 and 1 are PGP/X.509, never used for modules."""

    PKCS7 = 2
    MERKLE = 3


class TrailerKind(StrEnum):
    """What a module's last trailer is, by its ``id_type`` (str-valued: JSON stays readable).

    ``NONE``: the module does not end with the marker; ``NOT_EXAMINED``: the
    trailer was never looked at (a kernel that authenticates nothing).
    """

    NONE = "none"
    MERKLE = "merkle"
    PKCS7 = "pkcs7"
    UNKNOWN = "unknown"
    NOT_EXAMINED = "n/a"


def proof_sig_len(levels: int) -> int:
    """sig_len of a Merkle proof: ``be32 pos`` plus one digest per level."""
    return _POS.size + _DIGEST_SIZE * levels


def merkle_trailer(position: int, siblings: Sequence[bytes]) -> bytes:
    """The bytes kbuild appends (the ``.merkle`` file): proof, signature info, marker."""
    proof = _POS.pack(position) + b"".join(siblings)
    info = SIGNATURE_INFO.pack(0, 0, SignatureType.MERKLE, 0, 0, len(proof))
    return proof + info + MARKER


@dataclass(frozen=True)
class Trailer:
    """The last trailer of a module, as its bytes lay it out (not yet judged).

    ``module_size`` is the offset where the trailer starts: the bytes before it
    are what the kernel hashes or verifies. ``well_formed`` is False when the
    signature info carries non-zero reserved fields or a ``sig_len`` that does
    not fit, in which case only ``id_type`` and ``sig_len`` are informative.
    """

    id_type: int
    sig_len: int
    module_size: int
    total_size: int
    algo: int
    hash: int
    signer_len: int
    key_id_len: int
    well_formed: bool

    @property
    def kind(self) -> TrailerKind:
        """MERKLE, PKCS7 or UNKNOWN."""
        if self.id_type == SignatureType.MERKLE:
            return TrailerKind.MERKLE
        if self.id_type == SignatureType.PKCS7:
            return TrailerKind.PKCS7
        return TrailerKind.UNKNOWN

    def signature(self, data: bytes | memoryview) -> bytes:
        """The signature bytes (the proof, for Merkle) out of the whole module ``data``."""
        return bytes(data[self.module_size : self.module_size + self.sig_len])

    @property
    def levels(self) -> int | None:
        """For a Merkle trailer whose sig_len is 4 + 32 * n, that n (the proof's levels)."""
        if self.kind != "merkle" or (self.sig_len - _POS.size) % _DIGEST_SIZE:
            return None
        return (self.sig_len - _POS.size) // _DIGEST_SIZE

    def position(self, data: bytes | memoryview) -> int | None:
        """For a Merkle trailer, ``pos`` (the module's index in modules.order)."""
        if self.kind != "merkle" or self.sig_len < _POS.size:
            return None
        return int(_POS.unpack_from(data, self.module_size)[0])


def find_trailer(data: bytes | memoryview) -> Trailer | None:
    """The last trailer of ``data``, or None when it does not end with the marker.

    A file that ends with the marker but is too short to hold the signature
    info, or whose sig_len points before the start of the file, still returns
    a Trailer (``well_formed=False``) so that callers refuse it rather than
    treat it as a plain module.
    """
    size = len(data)
    if size <= len(MARKER) or bytes(data[size - len(MARKER) :]) != MARKER:
        return None
    body = size - len(MARKER)
    if body < SIGNATURE_INFO.size:
        return Trailer(0, 0, 0, size, 0, 0, 0, 0, well_formed=False)
    info_at = body - SIGNATURE_INFO.size
    algo, hash_, id_type, signer_len, key_id_len, sig_len = SIGNATURE_INFO.unpack_from(
        data, info_at
    )
    pad = bytes(data[info_at + 5 : info_at + 8])
    fits = sig_len < info_at  # the kernel needs at least one module byte (mod_check_sig)
    zero_fields = not (algo or hash_ or signer_len or key_id_len or any(pad))
    module_size = info_at - sig_len if fits else 0
    return Trailer(
        id_type=id_type,
        sig_len=sig_len,
        module_size=module_size,
        total_size=size - module_size,
        algo=algo,
        hash=hash_,
        signer_len=signer_len,
        key_id_len=key_id_len,
        well_formed=fits and zero_fields,
    )
