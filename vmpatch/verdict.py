# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel's verdict on a module, reproduced offline.

Keep in sync with the v5 series: ``kernel/module/auth.c`` (``module_auth_check``,
``mod_verify_sig``), ``kernel/module_signature.c`` (``mod_check_sig``) and
``kernel/module/hashes.c`` (``module_hash_check``); docs/format.md section 4 lists
the checks in the order the kernel makes them. The first failing check
decides the errno, exactly as at load time.

This module shares no tree-building code with :mod:`vmpatch.merkle`: it reads
the raw trailer bytes itself and recomputes the root bottom-up from the proof,
like the kernel, so that a bug in the generator cannot be hidden by the same
bug here.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import Enum, StrEnum

from vmpatch.frozen import frozen
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.records.trailer import TrailerKind

__all__ = [
    "KernelModel",
    "Pkcs7Support",
    "Verdict",
    "VerdictKind",
    "kernel_verdict",
    "load_refused",
]

_MARKER = b"~Module signature appended~\n"  # MODULE_SIGNATURE_MARKER
_INFO = struct.Struct(">BBBBB3sI")  # struct module_signature, 12 bytes
_TYPE_PKCS7 = 2
_TYPE_MERKLE = 3
_DIGEST = 32

#: errnos the kernel tolerates when it does not enforce (module_auth_check's switch).
_SOFT_ERRORS = {
    "ENODATA": "unsigned module",
    "ENOPKG": "unsupported crypto",
    "ENOKEY": "unavailable key",
}


class VerdictKind(StrEnum):
    """The kernel's answer, or UNCHECKED when vmpatch cannot give it (a PKCS#7 signature)."""

    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    UNCHECKED = "UNCHECKED"


class Pkcs7Support(Enum):
    """Whether the kernel can check a PKCS#7 signature (CONFIG_MODULE_SIG)."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True)  # once per run; callers derive variants with dataclasses.replace
class KernelModel:
    """What the verdict depends on: the root, and the signature types the kernel knows."""

    root: ModuleHashesRoot
    merkle: bool = True  # CONFIG_MODULE_HASHES: the image has .module_hashes
    pkcs7: Pkcs7Support = Pkcs7Support.UNKNOWN
    decompress: str | None = None
    """CONFIG_MODULE_DECOMPRESS's codec ("gzip", "xz", "zstd"), "" without it, None unknown."""
    sig_force: bool | None = None
    """CONFIG_MODULE_SIG_FORCE, None when no config was read."""
    xz_bcj: frozenset[int] | None = None
    """The BCJ filter IDs its xz decoder has (CONFIG_XZ_DEC_*), None when unknown."""
    config: str | None = None
    """The config file these options were read from, None when none was given."""


@frozen  # one per module judged: half the construction cost of a dataclass (vmpatch.frozen)
class Verdict:
    """The kernel's answer for one module.

    ``errno`` is None for ACCEPT; ``load_result`` is what ``finit_module``
    returns when the kernel enforces (module.sig_enforce / MODULE_SIG_FORCE),
    ``lockdown_result`` what it returns under lockdown without enforcement.
    ``checked`` is False for a PKCS#7 signature, which needs the kernel's
    keyring and is never judged here.
    """

    verdict: VerdictKind
    errno: str | None
    load_result: str
    lockdown_result: str
    reason: str
    trailer: TrailerKind
    position: int | None = None
    proof_levels: int | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict is VerdictKind.ACCEPT


def _reject(errno: str, reason: str, trailer: TrailerKind, **extra: int | None) -> Verdict:
    if errno in _SOFT_ERRORS:
        load, lockdown = "EKEYREJECTED", "EPERM"
        reason = f"{reason} ({_SOFT_ERRORS[errno]})"
    else:  # EBADMSG and the rest are fatal even when nothing is enforced
        load = lockdown = errno
    return Verdict(VerdictKind.REJECT, errno, load, lockdown, reason, trailer, **extra)  # type: ignore[arg-type]


def load_refused(errno: str, reason: str) -> Verdict:
    """``finit_module`` fails before the module is authenticated at all.

    kernel/module/main.c init_module_from_file() decompresses a
    MODULE_INIT_COMPRESSED_FILE module before load_module() checks its
    signature, so a decoder failure (EINVAL), a kernel without
    MODULE_DECOMPRESS (EOPNOTSUPP) or ENOMEM is the answer whatever the
    module carries, enforcing or not.
    """
    return Verdict(VerdictKind.REJECT, errno, errno, errno, reason, TrailerKind.NOT_EXAMINED)


_TYPE_NAMES = {_TYPE_PKCS7: TrailerKind.PKCS7, _TYPE_MERKLE: TrailerKind.MERKLE}


def _type_name(id_type: int) -> TrailerKind:
    return _TYPE_NAMES.get(id_type, TrailerKind.UNKNOWN)


#: The siblings of a proof of each height, unpacked at once (struct.Struct per height).
_SIBLINGS: dict[int, struct.Struct] = {}


def kernel_verdict(module: bytes | memoryview, kernel: KernelModel) -> Verdict:
    """Judge ``module`` (the kernel-visible, decompressed bytes) as the kernel would."""
    if not kernel.merkle and kernel.pkcs7 is not Pkcs7Support.YES:
        # Without MODULE_HASHES and MODULE_SIG there is no MODULE_AUTH, and
        # module_auth_check() is the inline stub that returns 0.
        if kernel.pkcs7 is Pkcs7Support.NO:
            return Verdict(
                VerdictKind.ACCEPT,
                None,
                "0",
                "0",
                "the kernel does not authenticate modules",
                TrailerKind.NOT_EXAMINED,
            )
        return Verdict(
            VerdictKind.UNCHECKED,
            None,
            "unknown",
            "unknown",
            "cannot tell whether the kernel authenticates modules (no symbols)",
            TrailerKind.NOT_EXAMINED,
        )
    length = len(module)
    # 1. The marker. (Modules loaded with --force skip the check; not modelled.)
    if length <= len(_MARKER) or bytes(module[length - len(_MARKER) :]) != _MARKER:
        return _reject("ENODATA", "no module signature marker", TrailerKind.NONE)
    remaining = length - len(_MARKER)
    # 2. Room for struct module_signature.
    if remaining <= _INFO.size:
        return _reject("EBADMSG", f"only {remaining} bytes before the marker", TrailerKind.UNKNOWN)
    algo, hash_, id_type, signer_len, key_id_len, pad, sig_len = _INFO.unpack_from(
        module, remaining - _INFO.size
    )
    kind = _type_name(id_type)
    # 3. A type this kernel supports, before any other field is looked at.
    if id_type == _TYPE_MERKLE and not kernel.merkle:
        return _reject("ENOPKG", "Merkle proof, but the kernel has no MODULE_HASHES", kind)
    if id_type == _TYPE_PKCS7 and kernel.pkcs7 is Pkcs7Support.NO:
        return _reject("ENOPKG", "PKCS#7 signature, but the kernel has no MODULE_SIG", kind)
    if id_type not in (_TYPE_MERKLE, _TYPE_PKCS7):
        return _reject("ENOPKG", f"unknown signature type {id_type}", kind)
    # 4. mod_check_sig: sig_len must leave module bytes; reserved fields zero.
    if sig_len >= remaining - _INFO.size:
        return _reject(
            "EBADMSG",
            f"sig_len {sig_len} does not fit in {remaining - _INFO.size} bytes",
            kind,
        )
    if algo or hash_ or signer_len or key_id_len or any(pad):
        return _reject("EBADMSG", "signature info has non-zero reserved fields", kind)
    # 5. The module proper.
    module_len = remaining - _INFO.size - sig_len
    if id_type == _TYPE_PKCS7:
        reason = (
            "PKCS#7 signature: needs the kernel's keyring, not checked here"
            if kernel.pkcs7 is Pkcs7Support.YES
            else "PKCS#7 signature: cannot tell whether the kernel has MODULE_SIG; not checked"
        )
        return Verdict(VerdictKind.UNCHECKED, None, "unknown", "unknown", reason, kind)
    # 6. module_hash_check.
    levels = kernel.root.levels
    if sig_len != 4 + _DIGEST * levels:
        if sig_len >= 4 and (sig_len - 4) % _DIGEST == 0:
            proof = f"proof has {(sig_len - 4) // _DIGEST} levels"
        else:
            proof = f"proof is {sig_len} bytes, not 4 + 32 per level"
        return _reject("ENOPKG", f"{proof}, kernel root has {levels}", kind)
    proof_at = module_len
    (pos,) = struct.unpack_from(">I", module, proof_at)
    # The leaf hashes the module in place: bytes(module[:module_len]) and the
    # concatenation each copied it whole (two memcpys of 507 MB over Debian's
    # tree, with the GIL held; measured by scripts/bench's verify rows, 1.5x
    # vmpatch tree before). hashlib releases the GIL while it hashes a view.
    leaf = hashlib.sha256(b"\x01" + struct.pack(">I", pos))
    leaf.update(memoryview(module)[:module_len])
    cur = leaf.digest()
    # Every sibling in one unpack: 17 us a module against 28 with a slice and a
    # copy per level (13 levels, the loop timed alone; Debian's tree has 4230).
    unpack = _SIBLINGS.get(levels)
    if unpack is None:
        unpack = _SIBLINGS[levels] = struct.Struct(f"{_DIGEST}s" * levels)
    siblings = unpack.unpack_from(module, proof_at + 4)
    cur = _fold(cur, pos, siblings)
    if cur != kernel.root.digest:
        return _reject(
            "ENOKEY", f"hash mismatch at position {pos}", kind, position=pos, proof_levels=levels
        )
    return Verdict(
        VerdictKind.ACCEPT, None, "0", "0", f"proof verifies at position {pos}", kind, pos, levels
    )


#: Inner nodes already computed: node input (0x02 || left || right) -> its SHA-256.
#: Neighbouring modules' paths meet a level or two up, so over a whole tree
#: about two of each module's 13 nodes are new and the rest repeat; judging
#: Debian's 4230 modules made 59,220 node hashes. Keyed by the full input, so
#: a hit is exactly the digest SHA-256 would give again. Bounded: cleared
#: when full (a tree of 16384 modules has fewer inner nodes).
_NODES: dict[bytes, bytes] = {}
_NODES_MAX = 1 << 14


def _fold(cur: bytes, pos: int, siblings: tuple[bytes, ...]) -> bytes:
    """The root a leaf's proof leads to (module_hash_check's loop, bottom-up)."""
    nodes = _NODES
    sha256 = hashlib.sha256
    for level, sibling in enumerate(siblings):
        node = b"\x02" + (cur + sibling if (pos >> level) & 1 == 0 else sibling + cur)
        known = nodes.get(node)
        if known is None:
            if len(nodes) >= _NODES_MAX:
                nodes.clear()
            known = nodes[node] = sha256(node).digest()
        cur = known
    return cur
