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
from enum import IntEnum, StrEnum

from vmpatch.frozen import frozen

#: typing loads only for type checkers (mypy reads this constant as true): the
#: install hook imports this module (vmpatch.frozen says what its imports cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DIGEST_SIZE",
    "MARKER",
    "POSITION",
    "SIGNATURE_INFO",
    "TRAILER_END_SIZE",
    "SignatureInfo",
    "SignatureType",
    "Trailer",
    "TrailerKind",
    "count_trailers",
    "find_trailer",
    "merkle_trailer",
    "proof_levels",
    "proof_sig_len",
    "signature_info",
    "type_label",
]

#: MODULE_SIGNATURE_MARKER, without its NUL.
MARKER = b"~Module signature appended~\n"

#: struct module_signature: algo, hash, id_type, signer_len, key_id_len, __pad[3], be32 sig_len.
SIGNATURE_INFO = struct.Struct(">BBBBB3xI")

#: The fixed end of every trailer: the signature info, then the marker (40 bytes).
TRAILER_END_SIZE = SIGNATURE_INFO.size + len(MARKER)

#: A Merkle proof's ``be32 pos``; one SHA-256 sibling digest per level follows it.
POSITION = struct.Struct(">I")
DIGEST_SIZE = 32


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
    return POSITION.size + DIGEST_SIZE * levels


def proof_levels(sig_len: int) -> int | None:
    """The levels of a Merkle proof of ``sig_len`` bytes (4 + 32 * n), None if no n fits."""
    if sig_len < POSITION.size or (sig_len - POSITION.size) % DIGEST_SIZE:
        return None
    return (sig_len - POSITION.size) // DIGEST_SIZE


def merkle_trailer(position: int, siblings: Sequence[bytes]) -> bytes:
    """The bytes kbuild appends (the ``.merkle`` file): proof, signature info, marker."""
    proof = POSITION.pack(position) + b"".join(siblings)
    info = SIGNATURE_INFO.pack(0, 0, SignatureType.MERKLE, 0, 0, len(proof))
    return proof + info + MARKER


def type_label(id_type: int) -> str:
    """``merkle``, ``pkcs7`` or ``unknown type N``: how messages name a trailer's type."""
    if id_type == SignatureType.MERKLE:
        return "merkle"
    if id_type == SignatureType.PKCS7:
        return "pkcs7"
    return f"unknown type {id_type}"


@frozen
class SignatureInfo:
    """The ``struct module_signature`` in front of the marker at the end of some bytes.

    ``info_at`` is its offset in those bytes (so ``info_at`` bytes precede it:
    the signature and the module). ``zero_fields`` is True when algo, hash,
    signer_len, key_id_len and the padding are all zero, as the kernel
    requires of both trailer types (``mod_check_sig``).
    """

    id_type: int
    sig_len: int
    info_at: int
    zero_fields: bool


def signature_info(data: bytes | memoryview) -> SignatureInfo | None:
    """Parse the signature info at the end of ``data``; None without marker and info.

    This is the one parse of the trailer's fixed end: :func:`find_trailer`
    (whole modules), the proof-file check of :mod:`vmpatch.ko.proof` and the
    cheap tail check of ``vmpatch tree`` (the last 40 bytes only) all use it.
    """
    size = len(data)
    if size < TRAILER_END_SIZE or bytes(data[size - len(MARKER) :]) != MARKER:
        return None
    info_at = size - TRAILER_END_SIZE
    algo, hash_, id_type, signer_len, key_id_len, sig_len = SIGNATURE_INFO.unpack_from(
        data, info_at
    )
    pad = bytes(data[info_at + 5 : info_at + 8])
    zero = not (algo or hash_ or signer_len or key_id_len or any(pad))
    return SignatureInfo(id_type=id_type, sig_len=sig_len, info_at=info_at, zero_fields=zero)


@frozen
class Trailer:
    """The last trailer of a module, as its bytes lay it out (not yet judged).

    ``module_size`` is the offset where the trailer starts: the bytes before it
    are what the kernel hashes or verifies; it is 0 when ``sig_len`` does not
    fit (the module's end is then unknown). ``well_formed`` is False when the
    signature info carries non-zero reserved fields or a ``sig_len`` that does
    not fit, in which case only ``id_type`` and ``sig_len`` are informative.
    """

    id_type: int
    sig_len: int
    module_size: int
    well_formed: bool

    @property
    def kind(self) -> TrailerKind:
        """MERKLE, PKCS7 or UNKNOWN."""
        if self.id_type == SignatureType.MERKLE:
            return TrailerKind.MERKLE
        if self.id_type == SignatureType.PKCS7:
            return TrailerKind.PKCS7
        return TrailerKind.UNKNOWN

    @property
    def label(self) -> str:
        """``merkle``, ``pkcs7`` or ``unknown type N`` (N the id_type), for messages and reports."""
        return type_label(self.id_type)

    @property
    def fits(self) -> bool:
        """Whether the module's end is known (sig_len leaves at least one module byte)."""
        return self.module_size > 0

    def signature(self, data: bytes | memoryview) -> bytes:
        """The signature bytes (the proof, for Merkle) out of the whole module ``data``."""
        return bytes(data[self.module_size : self.module_size + self.sig_len])

    @property
    def levels(self) -> int | None:
        """For a Merkle trailer whose sig_len is 4 + 32 * n, that n (the proof's levels)."""
        return proof_levels(self.sig_len) if self.kind == "merkle" else None

    def position(self, data: bytes | memoryview) -> int | None:
        """For a Merkle trailer, ``pos`` (the module's index in modules.order)."""
        if self.kind != "merkle" or self.sig_len < POSITION.size:
            return None
        return int(POSITION.unpack_from(data, self.module_size)[0])


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
    info = signature_info(data)
    if info is None:  # the marker, but no room for the signature info
        return Trailer(0, 0, 0, well_formed=False)
    fits = info.sig_len < info.info_at  # the kernel needs at least one module byte (mod_check_sig)
    return Trailer(
        id_type=info.id_type,
        sig_len=info.sig_len,
        module_size=info.info_at - info.sig_len if fits else 0,
        well_formed=fits and info.zero_fields,
    )


def count_trailers(data: bytes | memoryview) -> int:
    """How many trailers are stacked at the end of ``data`` (a proof over a signature: 2).

    A malformed trailer counts, and ends the count: where it starts is unknown.
    """
    count = 0
    while (trailer := find_trailer(data)) is not None:
        count += 1
        if not trailer.fits:
            break
        data = data[: trailer.module_size]
    return count
