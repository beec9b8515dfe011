# SPDX-License-Identifier: GPL-2.0-or-later
"""The Merkle root record stored in vmlinux's ``.module_hashes`` section.

Keep in sync with ``include/linux/module_hashes.h`` of the v5 series
(docs/format.md section 1)::

    struct module_hashes_root {
        u32 levels;          /* TARGET byte order (ELF EI_DATA) */
        u8  hash[32];        /* SHA-256 */
    };                       /* 36 bytes, no padding */

``levels`` is a native ``u32`` of the *target*, so the same root is encoded
differently for s390x or ppc64 (big endian) than for x86_64. Only SHA-256 is
defined by the series; any other size is an unsupported layout, never guessed.
"""

from __future__ import annotations

import struct

from vmpatch.frozen import frozen

__all__ = [
    "DIGEST_SIZE",
    "MAX_LEVELS",
    "ROOT_RECORD_SIZE",
    "ByteOrder",
    "HasRootRecord",
    "ModuleHashesRoot",
]

#: typing loads only for type checkers (mypy reads this constant as true): the
#: install hook imports this module (vmpatch.frozen says what its imports cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    ByteOrder = Literal["little", "big"]
else:
    ByteOrder = str  # importable at run time too; only annotations use it

#: SHA-256, the only digest the series defines (MODULE_HASHES_HASH_SIZE).
DIGEST_SIZE = 32

_LEVELS = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}

#: sizeof(struct module_hashes_root): u32 levels + u8 hash[32].
ROOT_RECORD_SIZE = _LEVELS["little"].size + DIGEST_SIZE

#: pos is a be32: a tree over more than 2**32 modules cannot be addressed, and the
#: generator's log2_roundup() of a uint32_t count never exceeds 32
#: (scripts/modules-merkle-tree.c).
MAX_LEVELS = 32


@frozen
class ModuleHashesRoot:
    """A decoded root: the tree height and the root digest."""

    levels: int
    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE:
            raise ValueError(f"root digest must be {DIGEST_SIZE} bytes, not {len(self.digest)}")
        if not 0 <= self.levels <= MAX_LEVELS:
            raise ValueError(
                f"levels must be between 0 and {MAX_LEVELS}, not {self.levels} "
                f"(pos is a be32: no tree addresses more than 2**{MAX_LEVELS} modules)"
            )

    @classmethod
    def placeholder(cls) -> ModuleHashesRoot:
        """The blank root the build links in (and the generator's root for zero modules)."""
        return cls(0, bytes(DIGEST_SIZE))

    @property
    def is_placeholder(self) -> bool:
        """True for the blank record: levels 0 and an all-zero hash."""
        return self.levels == 0 and not any(self.digest)

    def unreachable_reason(self) -> str | None:
        """Why no tree of the series' generator has this root, or None if one may.

        The kernel would take levels 0 with any hash (hashes.c compares the lone
        leaf with it), but scripts/modules-merkle-tree.c writes levels 0 only for
        zero modules, with an all-zero hash (write_merkle_root); one module
        already gives levels 1 (log2_roundup). Such a root is a typo for a real
        one far more often than an intent, so writing it takes ``force``.
        """
        if self.levels == 0 and any(self.digest):
            return (
                "levels 0 with a non-zero hash: the generator writes levels 0 only with "
                "the all-zero hash of zero modules (one module gives levels 1)"
            )
        return None

    def encode(self, byteorder: ByteOrder) -> bytes:
        """The 36 section bytes, ``levels`` in the target's byte order."""
        return _LEVELS[byteorder].pack(self.levels) + self.digest

    @classmethod
    def decode(cls, data: bytes, byteorder: ByteOrder) -> ModuleHashesRoot:
        """Decode the 36 section bytes; raises ``ValueError`` on a wrong size or level count."""
        if len(data) != ROOT_RECORD_SIZE:
            raise ValueError(f"root record is {ROOT_RECORD_SIZE} bytes, not {len(data)}")
        (levels,) = _LEVELS[byteorder].unpack_from(data)
        return cls(levels, bytes(data[_LEVELS[byteorder].size :]))


class HasRootRecord:
    """``levels``, ``root_hex`` and ``placeholder`` of a result's optional root record.

    A mixin for the results of ``inspect`` and ``verify`` (one image's
    report, one kernel's facts, one verify run), whose JSON documents show
    the record as these three values, each None where the image holds no
    decodable record. The result declares the ``root_record`` field.
    """

    root_record: ModuleHashesRoot | None

    @property
    def levels(self) -> int | None:
        return self.root_record.levels if self.root_record else None

    @property
    def root_hex(self) -> str | None:
        return self.root_record.digest.hex() if self.root_record else None

    @property
    def placeholder(self) -> bool | None:
        return self.root_record.is_placeholder if self.root_record else None
