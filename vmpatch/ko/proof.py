# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``.ko`` toolkit: append a proof, take a trailer off.

kbuild installs a module with ``cat x.merkle >> x.ko`` after copying a fresh
``.ko`` over the installed one, so its blind append never doubles a trailer
(docs/format.md section 6). Anyone else who appends to an installed module cannot
rely on that, and a doubled or stale proof is a module the kernel refuses at
boot. So every append here:

* validates the proof file as exactly one Merkle trailer (docs/format.md section 3);
* looks at the module's current trailer: an identical one is left alone, any
  other is refused unless the caller asks to ``replace`` it (one level only)
  or to ``stack`` the proof on top of it (a proof over a PKCS#7 signature,
  when the tree was hashed with the signature in place: the kernel checks
  only the last trailer and hashes everything before it, docs/format.md
  section 4);
* optionally checks the result against a vmlinux *before* writing, through
  the same kernel model as ``vmpatch verify`` (:mod:`vmpatch.elf.kernel`);
  given a kernel, a proof for a signed module is stacked or replaces the
  signature, whichever of the two the kernel accepts;
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
from enum import StrEnum

from vmpatch.errors import InputError, MismatchError, SystemFailure, UsageError
from vmpatch.frozen import frozen
from vmpatch.fs.atomic import atomic_write, open_input
from vmpatch.fs.lock import locked
from vmpatch.ko.compression import (
    DEFAULT_MAX_DECOMPRESSED,
    ModuleContent,
    codec_for_path,
    compress,
    read_module,
)
from vmpatch.records.root import MAX_LEVELS
from vmpatch.records.trailer import (
    MARKER,
    POSITION,
    TRAILER_END_SIZE,
    SignatureType,
    Trailer,
    find_trailer,
    proof_levels,
    proof_sig_len,
    signature_info,
)

#: typing loads only for type checkers (mypy reads this constant as true): the
#: install hook imports this module (vmpatch.frozen says what its imports cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from vmpatch.records.root import ModuleHashesRoot
    from vmpatch.verdict import KernelModel, Verdict, VerdictKind

__all__ = [
    "AppendAction",
    "AppendResult",
    "Proof",
    "StripAction",
    "StripProofResult",
    "append_proof",
    "strip_proof",
]

_MIN_PROOF = proof_sig_len(0) + TRAILER_END_SIZE
_MAX_PROOF = proof_sig_len(MAX_LEVELS) + TRAILER_END_SIZE

# ---------------------------------------------------------------------------
# Results


class AppendAction(StrEnum):
    """What an append did to the module."""

    APPENDED = "appended"  # it had no trailer
    REPLACED = "replaced"  # its old trailer was removed first
    STACKED = "stacked"  # its old trailer (a signature) stays under the proof
    UNCHANGED = "unchanged"  # it already ended with exactly this proof


class StripAction(StrEnum):
    """What a strip-proof did to the module."""

    STRIPPED = "stripped"
    NO_TRAILER = "no trailer"


@frozen
class AppendResult:
    """What one append did.

    ``action`` is ``"appended"`` (the module had no trailer), ``"replaced"``
    (an old trailer of kind ``replaced_kind`` was removed first),
    ``"stacked"`` (the proof went on top of a trailer of kind ``stacked_on``,
    which stays) or ``"unchanged"`` (the module already ended with exactly
    this proof; the file was not touched). ``chosen_by_kernel`` is True when
    neither ``--stack`` nor ``--replace`` was asked for and the kernel check
    chose the one it accepts. ``verdict`` is the kernel's verdict when a
    vmlinux was given, else None.
    """

    module: str | os.PathLike[str]  # as the caller named it
    proof: str | os.PathLike[str]
    action: AppendAction
    codec: str
    position: int
    levels: int
    replaced_kind: str | None = None
    verdict: VerdictKind | None = None
    stacked_on: str | None = None
    chosen_by_kernel: bool = False

    @property
    def changed(self) -> bool:
        return self.action is not AppendAction.UNCHANGED

    @property
    def replaced_trailer(self) -> dict[str, str] | None:
        """The trailer object of what was replaced (its kind), or None."""
        if self.replaced_kind is None:
            return None
        return {"kind": self.replaced_kind.split()[0], "label": self.replaced_kind}

    #: Read by vmpatch.cli.jsonout (docs/json.md): a module file is "path" everywhere.
    json_rename = (("module", "path"),)
    json_skip = ("replaced_kind",)
    json_extra = (("replaced_trailer", "replaced_trailer"), ("changed", "changed"))


@frozen
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
    def action(self) -> StripAction:
        return StripAction.STRIPPED if self.removed else StripAction.NO_TRAILER

    @property
    def removed_trailers(self) -> list[dict[str, str]]:
        """The trailer objects removed, last first: their kind and label."""
        return [{"kind": label.split()[0], "label": label} for label in self.removed]

    json_rename = (("module", "path"),)
    json_skip = ("removed",)
    json_extra = (("action", "action"), ("removed", "removed_trailers"))


# ---------------------------------------------------------------------------
# The proof file


@frozen
class Proof:
    path: str | os.PathLike[str]
    data: bytes
    position: int
    levels: int


def _parse_proof(path: str | os.PathLike[str], data: bytes) -> Proof:
    """Check that ``data`` is exactly one Merkle trailer (docs/format.md section 3)."""

    def bad(reason: str) -> InputError:
        return InputError(path, f"not a valid Merkle proof: {reason}")

    size = len(data)
    largest = _MAX_PROOF
    if size > largest or not data.endswith(MARKER):  # whatever it is, not a proof
        kind = _module_kind(data)
        if kind is not None:  # MODULE and PROOF swapped, most likely
            raise InputError(
                path,
                f"not a valid Merkle proof: it is {kind}",
                hint="the module comes first, then its .merkle proof: are they swapped?",
            )
        if size > largest:
            raise bad(f"more than {largest} bytes, larger than any proof")
    if size < _MIN_PROOF:
        raise bad(f"{size} bytes, shorter than the smallest proof ({_MIN_PROOF} bytes)")
    info = signature_info(data)
    if info is None:
        raise bad("does not end with the module signature marker")
    if info.id_type != SignatureType.MERKLE:
        name = {int(SignatureType.PKCS7): " (PKCS#7)"}.get(info.id_type, "")
        raise bad(f"signature type {info.id_type}{name}, expected {int(SignatureType.MERKLE)}")
    if not info.zero_fields:
        raise bad("non-zero algo/hash/signer_len/key_id_len/pad field")
    if info.sig_len != info.info_at:
        raise bad(f"sig_len {info.sig_len} but the file holds {info.info_at} proof bytes")
    levels = proof_levels(info.sig_len)
    if levels is None:
        raise bad(f"sig_len {info.sig_len} is not 4 + 32 * levels")
    if levels > MAX_LEVELS:
        raise bad(f"{levels} levels, more than {MAX_LEVELS}")
    position = int(POSITION.unpack_from(data)[0])
    if levels < MAX_LEVELS and position >> levels:
        raise bad(f"position {position} does not fit in a tree of {levels} levels")
    return Proof(path, data, position, levels)


def _module_kind(data: bytes) -> str | None:
    """What a would-be proof looks like when it is a module file instead."""
    from vmpatch.elf.constants import ELF_MAGIC
    from vmpatch.ko.compression import Codec

    if data.startswith(ELF_MAGIC):
        return "an ELF file (a kernel module?)"
    for codec in (Codec.GZIP, Codec.XZ, Codec.ZSTD):
        if data.startswith(codec.magic):
            return f"{codec.label}-compressed data (a .ko{codec.suffix} module?)"
    return None


def read_proof_file(path: str | os.PathLike[str]) -> Proof:
    try:
        with open_input(path) as fh:
            data = fh.read(_MAX_PROOF + 1)
    except OSError as err:  # missing or a directory: the input's fault (exit 2), else 3
        raise SystemFailure.from_oserror(path, err, "read proof") from None
    return _parse_proof(path, data)


# ---------------------------------------------------------------------------
# Appending


@frozen
class _Planned:
    content: ModuleContent
    new_data: bytes | None  # kernel-visible bytes to write; None when unchanged
    result: AppendResult


def resolve_kernel(kernel: Any) -> KernelModel | None:
    """The kernel model to check appends against: from a vmlinux path, a root, or as given.

    A vmlinux goes through :func:`vmpatch.elf.kernel.kernel_model`, the model
    ``vmpatch verify`` uses, so a kernel without MODULE_HASHES gets the
    verdict ``verify`` gives rather than being refused as unreadable. The ELF reader
    loads only here: this module stays standard-library-only at import time.
    """
    if kernel is None:
        return None
    from vmpatch.records.root import ModuleHashesRoot
    from vmpatch.verdict import KernelModel

    if isinstance(kernel, KernelModel):
        return kernel
    if isinstance(kernel, ModuleHashesRoot):
        return KernelModel(kernel)
    from vmpatch.boot.kernel import kernel_model  # a vmlinux or a boot image; refuses non-kernels

    return kernel_model(kernel)


def _judge(data: bytes, kernel: KernelModel) -> Verdict:
    from vmpatch.verdict import kernel_verdict

    return kernel_verdict(data, kernel)


def _rejection(verdict: Verdict) -> str:
    return verdict.reason + (f" ({verdict.errno})" if verdict.errno else "")


def _check_kernel(module: str | os.PathLike[str], data: bytes, kernel: KernelModel) -> VerdictKind:
    verdict = _judge(data, kernel)
    if not verdict.accepted:
        raise MismatchError(module, f"the kernel would reject the result: {_rejection(verdict)}")
    return verdict.verdict


def _stack_or_replace(
    module: str | os.PathLike[str], data: bytes, trailer: Trailer, proof: Proof, kernel: KernelModel
) -> tuple[AppendAction, bytes]:
    """Over a signature, the one of stacking and replacing that the kernel accepts.

    The kernel checks only the last trailer and hashes every byte before it
    (kernel/module/auth.c, docs/format.md section 4): stacking verifies when
    the tree was hashed with the signature in place, replacing when it was
    hashed without. Both candidates are judged. Only a kernel that checks
    nothing accepts both; stacking is then preferred, as it keeps the signature.
    """
    stacked = data + proof.data
    replaced = data[: trailer.module_size] + proof.data
    on_top, instead = _judge(stacked, kernel), _judge(replaced, kernel)
    if on_top.accepted:
        return AppendAction.STACKED, stacked
    if instead.accepted:
        return AppendAction.REPLACED, replaced
    raise MismatchError(
        module,
        f"the kernel would reject the proof both stacked on the {trailer.label} signature "
        f"({_rejection(on_top)}) and replacing it ({_rejection(instead)})",
    )


def _refuse_existing(module: str | os.PathLike[str], trailer: Trailer) -> InputError:
    kind = trailer.label
    article = "an" if kind[0] in "aeiou" else "a"
    malformed = "" if trailer.fits else " malformed"
    if trailer.kind == "pkcs7" and trailer.fits:
        return InputError(
            module,
            "already carries a pkcs7 trailer; use --stack if the tree was hashed with the "
            "signature in place, --replace if it was hashed without it (or give --kernel "
            "to let the kernel's root decide)",
        )
    return InputError(module, f"already carries {article}{malformed} {kind} trailer; use --replace")


def plan_append(
    module: str | os.PathLike[str],
    proof: Proof,
    *,
    replace: bool,
    root: KernelModel | ModuleHashesRoot | None,
    max_size: int,
    stack: bool = False,
) -> _Planned:
    """Decide what appending ``proof`` to ``module`` does, and check it; write nothing.

    ``root`` is the kernel to check against (a :class:`~vmpatch.verdict.KernelModel`,
    or a bare root), or None. Over an existing trailer, ``replace`` removes it
    first and ``stack`` keeps it under the proof; with neither, a kernel
    decides for a PKCS#7 signature (:func:`_stack_or_replace`) and any other
    trailer is refused.
    """
    if replace and stack:
        raise UsageError(None, "--stack and --replace exclude each other")
    kernel = resolve_kernel(root)
    content = read_module(module, max_size=max_size)
    data = content.data
    trailer = find_trailer(data)
    previous: str | None = None
    chosen = False
    new_data: bytes | None
    if trailer is None:
        action, new_data = AppendAction.APPENDED, data + proof.data
    elif trailer.fits and data[trailer.module_size :] == proof.data:
        action, new_data = AppendAction.UNCHANGED, None
    elif not trailer.fits and (replace or stack):
        raise InputError(
            module,
            f"carries a malformed {trailer.label} trailer (sig_len {trailer.sig_len} "
            f"does not fit); cannot {'remove' if replace else 'stack on'} it",
        )
    elif replace:
        action, new_data = AppendAction.REPLACED, data[: trailer.module_size] + proof.data
    elif stack:
        action, new_data = AppendAction.STACKED, data + proof.data
    elif kernel is not None and trailer.kind == "pkcs7" and trailer.fits:
        action, new_data = _stack_or_replace(module, data, trailer, proof, kernel)
        chosen = True
    else:
        raise _refuse_existing(module, trailer)
    if trailer is not None and action is not AppendAction.UNCHANGED:
        previous = trailer.label
    verdict = None
    if kernel is not None:
        verdict = _check_kernel(module, new_data if new_data is not None else data, kernel)
    result = AppendResult(
        module=module,
        proof=proof.path,
        action=action,
        codec=content.codec.label,
        position=proof.position,
        levels=proof.levels,
        replaced_kind=previous if action is AppendAction.REPLACED else None,
        verdict=verdict,
        stacked_on=previous if action is AppendAction.STACKED else None,
        chosen_by_kernel=chosen,
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
    stack: bool = False,
    kernel: str | os.PathLike[str] | ModuleHashesRoot | KernelModel | None = None,
    strip_check: Callable[[], None] | None = None,
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> AppendResult:
    """Append the Merkle proof file ``proof`` to ``module`` (``cat proof >> module``, safely).

    ``kernel`` (a vmlinux path, a decoded root or a kernel model) makes the
    result be checked as ``vmpatch verify`` would judge it before anything is
    written; a rejection is a :class:`MismatchError` and leaves the module
    untouched. ``replace`` and ``stack`` say what to do with an existing
    trailer (see :func:`plan_append`). ``strip_check`` (e.g. a
    :class:`StripCheck`) runs first of all. The module is locked
    (:func:`vmpatch.fs.lock.locked`, ``wait``/``waiting``) from its read to
    its rename, so two appends to one module never interleave.
    """
    if strip_check is not None:
        strip_check()
    parsed = read_proof_file(proof)  # names stay as given: no pathlib on the hook's path
    model = resolve_kernel(kernel)
    with locked([module], wait=wait, waiting=waiting, missing_ok=True):
        planned = plan_append(
            module, parsed, replace=replace, stack=stack, root=model, max_size=max_size
        )
        write_planned(planned)
    return planned.result


# ---------------------------------------------------------------------------
# Removing trailers


def _removable(module: Path, trailer: Trailer) -> None:
    if not trailer.fits:
        raise InputError(
            module,
            f"ends with a malformed {trailer.label} trailer (sig_len {trailer.sig_len} "
            "does not fit); cannot tell where the module ends",
        )


def strip_proof(
    module: str | os.PathLike[str],
    *,
    all_trailers: bool = False,
    output: str | os.PathLike[str] | None = None,
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> StripProofResult:
    """Remove the last trailer (any type), leaving exactly the bytes the kernel hashes.

    ``all_trailers`` repeats until no trailer is left (a proof stacked on a
    PKCS#7 signature). Without ``output`` the module is rewritten in place
    (atomically, same codec) and left untouched when it has no trailer; with
    ``output`` the result is written there, compressed as the output's
    suffix says. The module (and an existing ``output``) is locked from the
    read to the rename, as :func:`append_proof` locks it.
    """
    from pathlib import Path  # here, not at import: the install hook appends only

    targets = [module] if output is None else [module, output]
    with locked(targets, wait=wait, waiting=waiting, missing_ok=True):
        return _strip_proof(Path(module), all_trailers, output, max_size)


def _strip_proof(
    path: Path,
    all_trailers: bool,
    output: str | os.PathLike[str] | None,
    max_size: int,
) -> StripProofResult:
    content = read_module(path, max_size=max_size)
    data = content.data
    removed: list[str] = []
    while (trailer := find_trailer(data)) is not None:
        _removable(path, trailer)
        removed.append(trailer.label)
        data = data[: trailer.module_size]
        if not all_trailers:
            break
    from pathlib import Path

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
