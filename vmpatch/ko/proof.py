# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``.ko`` toolkit: append a proof, take a trailer off.

kbuild installs a module with ``cat x.merkle >> x.ko`` after copying a fresh
``.ko`` over the installed one, so its blind append never doubles a trailer
(docs/format.md section 6). Anyone else who appends to an installed module cannot
rely on that, and a doubled or stale proof is a module the kernel refuses at
boot. So every append here:

* validates the proof file as exactly one Merkle trailer (docs/format.md section 3);
* looks at the module's current trailer: an identical one is left alone, any
  other is refused unless the caller asks for ``replace`` (one level only);
* optionally checks the result against the root of a vmlinux *before* writing;
* works on the kernel-visible bytes of ``.ko.gz``/``.ko.xz``/``.ko.zst`` and
  recompresses with the same codec;
* writes through :func:`vmpatch.fs.atomic.atomic_write` (own temp file + rename,
  mode/owner/xattrs kept), so parallel ``make -j`` invocations on different
  modules share nothing and a crash never leaves half a trailer.

This module is imported by the lean install hook (:mod:`vmpatch.hook`): at
module level it imports the standard library and vmpatch's stdlib-only
modules; ELF parsing, the verifier and the strip machinery load on use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmpatch.errors import InputError, MismatchError, SystemFailure
from vmpatch.fs.atomic import atomic_write, open_input
from vmpatch.ko.compression import (
    DEFAULT_MAX_DECOMPRESSED,
    ModuleContent,
    codec_for_path,
    compress,
    read_module,
)
from vmpatch.records.root import MAX_LEVELS
from vmpatch.records.trailer import MARKER, SIGNATURE_INFO, SignatureType, Trailer, find_trailer

if TYPE_CHECKING:
    from vmpatch.records.root import ModuleHashesRoot

__all__ = [
    "AppendResult",
    "Proof",
    "StripProofResult",
    "append_proof",
    "strip_proof",
    "trailer_label",
]

_POS_SIZE = 4
_DIGEST_SIZE = 32
_MIN_PROOF = _POS_SIZE + SIGNATURE_INFO.size + len(MARKER)

# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class AppendResult:
    """What one append did.

    ``action`` is ``"appended"`` (the module had no trailer), ``"replaced"``
    (an old trailer of kind ``replaced_kind`` was removed first) or
    ``"unchanged"`` (the module already ended with exactly this proof; the
    file was not touched). ``verdict`` is the kernel's verdict when a vmlinux
    was given, else None.
    """

    module: Path
    proof: Path
    action: str
    codec: str
    position: int
    levels: int
    replaced_kind: str | None = None
    verdict: str | None = None

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": str(self.module),
            "proof": str(self.proof),
            "action": self.action,
            "codec": self.codec,
            "position": self.position,
            "levels": self.levels,
            "replaced_kind": self.replaced_kind,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class StripProofResult:
    """What one strip-proof did: the trailers removed, last first.

    ``removed`` is empty when the module had no trailer (``action`` is then
    ``"no trailer"`` and the module was not touched). ``module_size`` is the
    size of the kernel-visible bytes left, i.e. what the kernel hashes.
    """

    module: Path
    written: Path | None
    codec: str
    removed: tuple[str, ...]
    module_size: int

    @property
    def action(self) -> str:
        return "stripped" if self.removed else "no trailer"

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": str(self.module),
            "written": str(self.written) if self.written is not None else None,
            "action": self.action,
            "codec": self.codec,
            "removed": list(self.removed),
            "module_size": self.module_size,
        }


def trailer_label(trailer: Trailer) -> str:
    """``merkle``, ``pkcs7`` or ``unknown type N`` (N the id_type)."""
    kind = trailer.kind
    return kind if kind != "unknown" else f"unknown type {trailer.id_type}"


# ---------------------------------------------------------------------------
# The proof file


@dataclass(frozen=True)
class Proof:
    path: Path
    data: bytes
    position: int
    levels: int


def _parse_proof(path: Path, data: bytes) -> Proof:
    """Check that ``data`` is exactly one Merkle trailer (docs/format.md section 3)."""

    def bad(reason: str) -> InputError:
        return InputError(path, f"not a valid Merkle proof: {reason}")

    size = len(data)
    if size < _MIN_PROOF:
        raise bad(f"{size} bytes, shorter than the smallest proof ({_MIN_PROOF} bytes)")
    if not data.endswith(MARKER):
        raise bad("does not end with the module signature marker")
    info_at = size - len(MARKER) - SIGNATURE_INFO.size
    algo, hash_, id_type, signer_len, key_id_len, sig_len = SIGNATURE_INFO.unpack_from(
        data, info_at
    )
    if id_type != SignatureType.MERKLE:
        name = {SignatureType.PKCS7: " (PKCS#7)"}.get(id_type, "")
        raise bad(f"signature type {id_type}{name}, expected {int(SignatureType.MERKLE)}")
    pad = data[info_at + 5 : info_at + 8]
    if algo or hash_ or signer_len or key_id_len or any(pad):
        raise bad("non-zero algo/hash/signer_len/key_id_len/pad field")
    if sig_len != info_at:
        raise bad(f"sig_len {sig_len} but the file holds {info_at} proof bytes")
    if (sig_len - _POS_SIZE) % _DIGEST_SIZE:
        raise bad(f"sig_len {sig_len} is not 4 + 32 * levels")
    levels = (sig_len - _POS_SIZE) // _DIGEST_SIZE
    if levels > MAX_LEVELS:
        raise bad(f"{levels} levels, more than {MAX_LEVELS}")
    position = int.from_bytes(data[:_POS_SIZE], "big")
    if levels < MAX_LEVELS and position >> levels:
        raise bad(f"position {position} does not fit in a tree of {levels} levels")
    return Proof(path, data, position, levels)


def read_proof_file(path: Path) -> Proof:
    try:
        with open_input(path) as fh:
            data = fh.read(_MIN_PROOF + _DIGEST_SIZE * MAX_LEVELS + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
        raise InputError(path, f"cannot read proof: {err.strerror}") from None
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read proof") from None
    return _parse_proof(path, data)


# ---------------------------------------------------------------------------
# Appending


@dataclass(frozen=True)
class _Planned:
    content: ModuleContent
    new_data: bytes | None  # kernel-visible bytes to write; None when unchanged
    result: AppendResult


def resolve_root(kernel: Any) -> ModuleHashesRoot | None:
    if kernel is None:
        return None
    from vmpatch.records.root import ModuleHashesRoot

    if isinstance(kernel, ModuleHashesRoot):
        return kernel
    from vmpatch.boot.kernel import kernel_root  # refuses what is not a kernel

    return kernel_root(kernel)


def _check_kernel(module: Path, data: bytes, root: ModuleHashesRoot) -> str:
    from vmpatch.verdict import KernelModel, kernel_verdict

    verdict = kernel_verdict(data, KernelModel(root))
    if not verdict.accepted:
        errno = f" ({verdict.errno})" if verdict.errno else ""
        raise MismatchError(module, f"the kernel would reject the result: {verdict.reason}{errno}")
    return verdict.verdict


def plan_append(
    module: Path,
    proof: Proof,
    *,
    replace: bool,
    root: ModuleHashesRoot | None,
    max_size: int,
) -> _Planned:
    content = read_module(module, max_size=max_size)
    data = content.data
    trailer = find_trailer(data)
    replaced: str | None = None
    if trailer is None:
        action, new_data = "appended", data + proof.data
    elif trailer.module_size > 0 and data[trailer.module_size :] == proof.data:
        action, new_data = "unchanged", None
    elif not replace:
        kind = trailer_label(trailer)
        article = "an" if kind[0] in "aeiou" else "a"
        malformed = "" if trailer.module_size > 0 else " malformed"
        raise InputError(
            module,
            f"already carries {article}{malformed} {kind} trailer; use --replace",
        )
    elif trailer.module_size <= 0:
        raise InputError(
            module,
            f"carries a malformed {trailer_label(trailer)} trailer (sig_len {trailer.sig_len} "
            "does not fit); cannot remove it",
        )
    else:
        replaced = trailer_label(trailer)
        action, new_data = "replaced", data[: trailer.module_size] + proof.data
    verdict = None
    if root is not None:
        verdict = _check_kernel(module, new_data if new_data is not None else data, root)
    result = AppendResult(
        module=module,
        proof=proof.path,
        action=action,
        codec=content.codec.label,
        position=proof.position,
        levels=proof.levels,
        replaced_kind=replaced,
        verdict=verdict,
    )
    return _Planned(content, new_data, result)


def write_planned(planned: _Planned) -> None:
    if planned.new_data is None:
        return
    content = planned.content
    atomic_write(content.path, compress(planned.new_data, content.codec))


def append_proof(
    module: str | os.PathLike[str],
    proof: str | os.PathLike[str],
    *,
    replace: bool = False,
    kernel: str | os.PathLike[str] | ModuleHashesRoot | None = None,
    strip_check: Callable[[], None] | None = None,
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
) -> AppendResult:
    """Append the Merkle proof file ``proof`` to ``module`` (``cat proof >> module``, safely).

    ``kernel`` (a vmlinux path or a decoded root) makes the result be checked
    as the kernel would check it before anything is written; a rejection is
    a :class:`MismatchError` and leaves the module untouched. ``strip_check``
    (e.g. a :class:`StripCheck`) runs first of all.
    """
    if strip_check is not None:
        strip_check()
    parsed = read_proof_file(Path(proof))
    root = resolve_root(kernel)
    planned = plan_append(Path(module), parsed, replace=replace, root=root, max_size=max_size)
    write_planned(planned)
    return planned.result


# ---------------------------------------------------------------------------
# Removing trailers


def _removable(module: Path, trailer: Trailer) -> None:
    if trailer.module_size <= 0:
        raise InputError(
            module,
            f"ends with a malformed {trailer_label(trailer)} trailer (sig_len {trailer.sig_len} "
            "does not fit); cannot tell where the module ends",
        )


def strip_proof(
    module: str | os.PathLike[str],
    *,
    all_trailers: bool = False,
    output: str | os.PathLike[str] | None = None,
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
) -> StripProofResult:
    """Remove the last trailer (any type), leaving exactly the bytes the kernel hashes.

    ``all_trailers`` repeats until no trailer is left (a proof stacked on a
    PKCS#7 signature). Without ``output`` the module is rewritten in place
    (atomically, same codec) and left untouched when it has no trailer; with
    ``output`` the result is written there, compressed as the output's
    suffix says.
    """
    path = Path(module)
    content = read_module(path, max_size=max_size)
    data = content.data
    removed: list[str] = []
    while (trailer := find_trailer(data)) is not None:
        _removable(path, trailer)
        removed.append(trailer_label(trailer))
        data = data[: trailer.module_size]
        if not all_trailers:
            break
    written: Path | None = None
    if output is not None:
        written = Path(output)
        out_codec = codec_for_path(written)
        if written.exists() and written.resolve() == path.resolve():
            out_codec = content.codec
        atomic_write(written, compress(data, out_codec), like=None if written.exists() else path)
    elif removed:
        written = path
        atomic_write(path, compress(data, content.codec))
    return StripProofResult(path, written, content.codec.label, tuple(removed), len(data))
