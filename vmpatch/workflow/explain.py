# SPDX-License-Identifier: GPL-2.0-or-later
"""Why the kernel refuses a module: one cause a packager can act on, and its evidence.

The kernel says only "Key was rejected by service" (and, in dmesg, "module
with unavailable key"). A proof alone cannot tell "the bytes changed" from
"the proof belongs to another build": folding a wrong leaf never gives the
kernel's root either way. The expected leaf can. It comes from a
:class:`Reference`: the tree that was hashed (``--tree DIR``, kbuild or
install tree: its module at the proof's position) or the leaf manifest
``vmpatch reroot`` writes (``--manifest FILE``, or ``modules.leaves`` beside
the verified tree's modules.order, :mod:`vmpatch.records.leaves`).

Every cause states only what was checked here: a fold is recomputed, a strip
is run for real (on a temporary copy of the hashed module, never on the
tree), a root is compared byte for byte. :func:`explain` runs for rejected
modules only, so a run where every module is accepted costs nothing extra.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from vmpatch.errors import InputError, VmpatchError
from vmpatch.merkle import leaf_digest, node_digest
from vmpatch.records.leaves import LeafManifest, own_manifest, read_manifest
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.records.trailer import POSITION, SignatureType, Trailer, find_trailer
from vmpatch.verdict import KernelModel, VerdictKind

__all__ = [
    "Cause",
    "Explainer",
    "Explanation",
    "Reference",
    "explain",
    "first_difference",
    "fold",
    "module_key",
    "tree_listing",
]

#: Suffixes a module file may have in a kbuild or install tree, longest first.
_SUFFIXES = (".ko.stripped", ".ko.gz", ".ko.xz", ".ko.zst", ".ko", ".o")


class Cause(StrEnum):
    """Why a module is refused (stable strings: scripts match on them)."""

    STRIPPED_AFTER_HASHING = "stripped-after-hashing"
    BYTES_DIFFER = "bytes-differ"
    PROOF_OF_ANOTHER_MODULE = "proof-of-another-module"
    OTHER_BUILD = "other-build"
    STACKED_TRAILER = "stacked-trailer"
    LEVELS_MISMATCH = "levels-mismatch"
    POSITION_BEYOND_TREE = "position-beyond-tree"
    DECOMPRESS_REFUSED = "decompress-refused"
    NO_PROOF = "no-proof"
    MALFORMED_TRAILER = "malformed-trailer"
    KERNEL_NOT_PATCHED = "kernel-not-patched"
    NOT_IN_REFERENCE = "not-in-reference"
    DOES_NOT_FOLD = "does-not-fold"


@dataclass(frozen=True)
class Explanation:
    """One rejected module's cause, a one-line ``detail``, and the evidence behind it.

    Fields that do not apply to the cause are None. ``hint`` says what to do
    (or what to pass to learn more).
    """

    json_hex = ("first_difference",)

    cause: Cause
    detail: str
    hint: str | None = None
    reference: Path | None = None  # the tree or manifest the expected leaf came from
    proof_position: int | None = None  # the position the proof claims
    expected_position: int | None = None  # where the reference has this module
    expected_module: str | None = None  # the reference's module at proof_position
    hashed_sha256: str | None = None  # the reference's kernel-visible bytes
    installed_sha256: str | None = None  # this module's, without its proof
    first_difference: int | None = None  # offset of the first differing byte
    strip: list[str] | None = None  # the strip command that turns the hashed bytes into these
    other_root: ModuleHashesRoot | None = None  # the root the proof folds to
    other_kernel: Path | None = None  # the --other-kernel image carrying other_root
    trailers: list[str] | None = None  # the trailers at the end, last first
    proof_levels: int | None = None
    kernel_levels: int | None = None
    tree_modules: int | None = None  # how many modules the reference holds
    refusal: str | None = None  # decompress-refused: codec-mismatch, encoder-option, ...


def module_key(relpath: str) -> str:
    """The name that identifies a module across trees of both layouts.

    A kbuild tree's ``lib/crc7.o`` (``.ko``, ``.ko.stripped``) and an install
    tree's ``kernel/lib/crc7.ko.xz`` are the same module: ``lib/crc7``.
    Out-of-tree modules keep their directory (``updates/zfs``).
    """
    name = relpath.replace(os.sep, "/")
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.removeprefix("kernel/")


def fold(leaf: bytes, position: int, siblings: list[bytes]) -> bytes:
    """The root a proof gives with ``leaf``, bottom-up as kernel/module/hashes.c folds it."""
    cur = leaf
    for level, sibling in enumerate(siblings):
        cur = (
            node_digest(cur, sibling) if (position >> level) & 1 == 0 else node_digest(sibling, cur)
        )
    return cur


def first_difference(a: bytes, b: bytes) -> int | None:
    """The offset of the first byte where ``a`` and ``b`` differ (None when equal)."""
    if a == b:
        return None
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while high - low > 64:  # halve the common-prefix search: slices compare in C
        mid = (low + high) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid
    return next(i for i in range(low, high) if a[i] != b[i])


_Bytes = TypeVar("_Bytes", bytes, memoryview)


def strip_trailers(data: _Bytes) -> tuple[_Bytes, list[str]]:
    """``data`` without any trailer (stacked ones too), and their kinds, last first."""
    kinds: list[str] = []
    while (trailer := find_trailer(data)) is not None and trailer.fits:
        kinds.append(trailer.label)
        data = data[: trailer.module_size]
    return data, kinds


def tree_listing(directory: Path) -> list[tuple[str, Path]]:
    """Every position of a kbuild or install tree: its DIR-relative name and module file."""
    from vmpatch.records.modorder import Layout, layout_of

    if layout_of(directory, None) is Layout.INSTALLED:
        from vmpatch.workflow.installed import installed_modules

        top = len(os.fspath(directory)) + 1  # the files are DIR/<name>: no relpath per module
        return [(os.fspath(path)[top:], path) for _entry, path in installed_modules(directory)]
    from vmpatch.workflow.tree import plan_tree

    plan = plan_tree(directory, refuse_trailers=False)
    return [(m.entry.stem + plan.suffix, Path(m.file)) for m in plan.modules]


def hashed_bytes(path: Path, max_size: int | None = None) -> bytes:
    """A tree module's kernel-visible bytes without any trailer: what a re-root hashes."""
    from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED, read_module

    data = read_module(path, max_size=max_size or DEFAULT_MAX_DECOMPRESSED).data
    return strip_trailers(data)[0]


@dataclass
class Reference:
    """The expected leaves: a tree's modules (hashed on demand) or a leaf manifest."""

    source: Path
    names: list[str]  # DIR-relative, per position
    files: list[Path] | None = None  # a tree's module files (None for a manifest)
    manifest: LeafManifest | None = None
    strip_dir: Path | None = None  # where a strip record may lie (a kbuild tree)
    _content: dict[int, bytes] = field(default_factory=dict)
    _root: ModuleHashesRoot | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of_tree(cls, directory: str | os.PathLike[str]) -> Reference:
        top = Path(directory)
        listing = tree_listing(top)
        return cls(top, [name for name, _ in listing], [path for _, path in listing], strip_dir=top)

    @classmethod
    def of_manifest(cls, path: str | os.PathLike[str]) -> Reference:
        manifest = read_manifest(path)
        return cls(Path(path), [e.path for e in manifest.entries], manifest=manifest)

    @property
    def count(self) -> int:
        return len(self.names)

    def position_of(self, key: str) -> int | None:
        """Where the reference has the module named ``key``; a bare file name matches by its
        base name when only one module has it (module names are unique in a kernel)."""
        keys = [module_key(name) for name in self.names]
        matches = [i for i, k in enumerate(keys) if k == key]
        if not matches and "/" not in key:
            matches = [i for i, k in enumerate(keys) if k.rsplit("/", 1)[-1] == key]
        return matches[0] if len(matches) == 1 else None

    def content(self, position: int) -> bytes | None:
        """The hashed module's bytes (a tree only; a manifest holds digests)."""
        if self.files is None:
            return None
        with self._lock:
            if position not in self._content:
                self._content[position] = hashed_bytes(self.files[position])
            return self._content[position]

    def sha256(self, position: int) -> bytes:
        if self.manifest is not None:
            return self.manifest.entries[position].content_sha256
        return hashlib.sha256(self.content(position) or b"").digest()

    def leaf(self, position: int) -> bytes:
        if self.manifest is not None:
            return self.manifest.entries[position].leaf
        return leaf_digest(position, self.content(position) or b"")

    def root(self) -> ModuleHashesRoot:
        """The root the reference folds to (a tree is hashed whole, once, on first use)."""
        if self.manifest is not None:
            return self.manifest.root
        with self._lock:
            if self._root is None:
                from vmpatch.merkle import MerkleTree, hash_leaves

                def loader(path: Path) -> bytes:
                    return hashed_bytes(path)

                leaves = hash_leaves(list(self.files or []), loader=loader)
                self._root = MerkleTree.from_leaves(leaves).root
            return self._root


def find_reference(
    tree: str | os.PathLike[str] | None,
    manifest: str | os.PathLike[str] | None,
    modules_dir: str | os.PathLike[str] | None,
) -> Reference | None:
    """The reference ``verify`` explains with: ``--tree``, ``--manifest``, or the tree's own."""
    if tree is not None and manifest is not None:
        from vmpatch.errors import UsageError

        raise UsageError(None, "--tree and --manifest both give the expected leaves: pass one")
    if tree is not None:
        return Reference.of_tree(tree)
    if manifest is not None:
        return Reference.of_manifest(manifest)
    own = own_manifest(modules_dir) if modules_dir is not None else None
    return Reference.of_manifest(own) if own is not None else None


# ---------------------------------------------------------------------------
# Stripping


def _strip_candidates(reference: Reference) -> list[tuple[str, list[str]]]:
    """(program, options) a packager would strip with: recorded first, then the usual two."""
    from vmpatch.ko.strip import strip_options
    from vmpatch.records.striprecord import auto_conf_install_strip, read_record

    out: list[tuple[str, list[str]]] = []
    programs = ["strip"]
    if reference.strip_dir is not None:
        record = read_record(reference.strip_dir)
        if record is not None:
            programs.insert(0, record.program_path or record.program)
            options = strip_options(record.install_mod_strip)
            if options is not None:
                out.append((programs[0], options))
        try:
            configured = auto_conf_install_strip(reference.strip_dir, missing_ok=True)
        except VmpatchError:
            configured = None
        if configured:
            options = strip_options(configured)
            if options is not None:
                out.append((programs[0], options))
    for program in programs:
        for options in (["--strip-debug"], ["--strip-unneeded"]):
            if (program, options) not in out:
                out.append((program, options))
    return out


def _stripped_as(hashed: bytes, installed: bytes, reference: Reference) -> list[str] | None:
    """The strip command that turns the hashed module into the installed one, if any.

    Runs the real program on a temporary copy of the hashed bytes (outside
    every tree) and compares the result with the installed bytes exactly.
    """
    import shutil  # these three only for a module that is not accepted (8 ms of verify's start)
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vmpatch-explain-") as scratch:
        for program, options in _strip_candidates(reference):
            found = shutil.which(program)
            if found is None:
                continue
            copy = Path(scratch) / "hashed.ko"
            copy.write_bytes(hashed)
            try:
                proc = subprocess.run(
                    [found, *options, str(copy)], capture_output=True, check=False
                )
            except OSError:
                continue
            if proc.returncode == 0 and copy.read_bytes() == installed:
                return [program, *options]
    return None


# ---------------------------------------------------------------------------
# Causes


def _refusal_class(reason: str) -> str:
    """Classify the kernel decoder's refusal (its reason text, vmpatch.ko.kdecompress)."""
    text = reason.lower()
    if "no module_decompress" in text:
        return "no-in-kernel-decompression"
    if "cannot allocate" in text or "enomem" in text:
        return "memory"
    if text.startswith("not a") or "no xz magic" in text or "not a zstd frame" in text:
        return "codec-mismatch"
    markers = ("integrity check", "filter", "bcj", "dictionary", "window", "reserved")
    if any(m in text for m in markers):
        return "encoder-option"
    return "corrupt"


_REFUSAL_HINT = {
    "no-in-kernel-decompression": "load it through kmod (userspace decompression), or build "
    "the kernel with MODULE_DECOMPRESS",
    "memory": "recompress with a smaller window (kbuild: zstd -T0 without --long)",
    "codec-mismatch": "compress with the codec the kernel decompresses "
    "(/sys/module/compression), or let kmod decompress it",
    "encoder-option": "recompress with kbuild's options (xz --check=crc32 --lzma2=dict=1MiB, "
    "gzip -n, zstd -T0)",
    "corrupt": "the file is damaged: reinstall it",
}

_LEARN_MORE = (
    "pass --tree DIR (the tree that was hashed) or --manifest FILE (its modules.leaves) "
    "to tell which"
)


@dataclass(frozen=True)
class _Module:
    """What explaining one module needs of it."""

    path: Path
    key: str
    data: bytes  # kernel-visible bytes, trailers included
    trailer: Trailer | None


def _hex(digest: bytes | None) -> str | None:
    return None if digest is None else digest.hex()


def explain(
    path: Path,
    data: bytes,
    verdict_kind: VerdictKind,
    reason: str,
    kernel: KernelModel,
    *,
    reference: Reference | None = None,
    relpath: str | None = None,
    others: dict[Path, ModuleHashesRoot] | None = None,
) -> Explanation | None:
    """The cause of one module's rejection, from its kernel-visible ``data``.

    ``relpath`` names the module within its tree (for finding it in the
    reference); ``others`` are the ``--other-kernel`` roots. Returns None for
    a verdict with nothing to explain (accepted, or a PKCS#7 signature alone).
    """
    trailer = find_trailer(data)
    module = _Module(path, module_key(relpath or path.name), data, trailer)
    under = _trailers_of(data)
    if verdict_kind is VerdictKind.UNCHECKED:
        if len(under) > 1 and under[0] == "pkcs7" and "merkle" in under:
            return Explanation(
                Cause.STACKED_TRAILER,
                "a PKCS#7 signature was appended after the proof: the kernel checks only the "
                "signature, and would hash it under the proof",
                hint="remove the signature (vmpatch ko strip-proof --all, then re-append the "
                "proof), or re-root with vmpatch reroot",
                trailers=under,
            )
        return None
    if verdict_kind is not VerdictKind.REJECT:
        return None
    if trailer is None:
        if reason.startswith("no module signature marker"):
            return Explanation(
                Cause.NO_PROOF,
                "the module carries no proof (no trailer at all)",
                hint="append its proof (make modules_install, or vmpatch reroot)",
                trailers=[],
            )
        return _decompress_refused(reason)
    if not trailer.well_formed:
        return Explanation(
            Cause.MALFORMED_TRAILER,
            f"its trailer is malformed (id_type {trailer.id_type}, sig_len {trailer.sig_len})",
            trailers=under,
        )
    if trailer.id_type == SignatureType.PKCS7:
        return Explanation(
            Cause.STACKED_TRAILER if "merkle" in under else Cause.NO_PROOF,
            "a PKCS#7 signature was appended after the proof, and this kernel has no MODULE_SIG"
            if "merkle" in under
            else "a PKCS#7 signature, and no proof: this kernel has no MODULE_SIG",
            hint="remove the signature and keep the proof (vmpatch reroot does)",
            trailers=under,
        )
    if trailer.id_type != SignatureType.MERKLE:
        return None
    return _explain_proof(module, kernel, reference, others or {}, under)


def _trailers_of(data: bytes) -> list[str]:
    return strip_trailers(data)[1]


def _decompress_refused(reason: str) -> Explanation:
    refusal = _refusal_class(reason)
    return Explanation(
        Cause.DECOMPRESS_REFUSED,
        f"the kernel's module decompressor refuses the file ({refusal}): {reason}",
        hint=_REFUSAL_HINT[refusal],
        refusal=refusal,
    )


def _explain_proof(
    module: _Module,
    kernel: KernelModel,
    reference: Reference | None,
    others: dict[Path, ModuleHashesRoot],
    under: list[str],
) -> Explanation:
    trailer = module.trailer
    assert trailer is not None
    data = module.data
    levels = trailer.levels
    kernel_levels = kernel.root.levels
    if kernel.root.is_placeholder:
        return Explanation(
            Cause.KERNEL_NOT_PATCHED,
            "the kernel's root is the blank placeholder: the image was never patched",
            hint="run vmpatch patch (or vmpatch reroot) on the image",
        )
    if levels != kernel_levels:
        shown = f"{levels} levels" if levels is not None else f"sig_len {trailer.sig_len}"
        size = (
            f" (a tree of {2 ** (levels - 1) + 1} to {2**levels} modules)"
            if levels is not None and levels > 1
            else ""
        )
        return Explanation(
            Cause.LEVELS_MISMATCH,
            f"the proof has {shown}{size}, the kernel's root {kernel_levels}: the proof "
            "comes from a tree of another size",
            hint="re-append the proofs of the tree this kernel was patched with",
            proof_levels=levels,
            kernel_levels=kernel_levels,
            tree_modules=reference.count if reference else None,
        )
    position = trailer.position(data)
    assert position is not None
    body = data[: trailer.module_size]
    siblings = [
        bytes(data[start : start + 32])
        for start in range(
            trailer.module_size + POSITION.size, trailer.module_size + trailer.sig_len, 32
        )
    ]
    if position >= 1 << kernel_levels and kernel_levels:
        return Explanation(
            Cause.POSITION_BEYOND_TREE,
            f"the proof claims position {position}, beyond any tree of {kernel_levels} levels",
            proof_position=position,
            kernel_levels=kernel_levels,
        )
    if reference is None:
        own = fold(leaf_digest(position, body), position, siblings)
        named = _other_kernel(own, kernel_levels, others)
        if named is not None:
            return _other_build(own, kernel_levels, position, named, None, others)
        return Explanation(
            Cause.DOES_NOT_FOLD,
            f"the proof for position {position} does not fold to the kernel's root: the "
            "module changed after it was hashed, or the proof belongs to another build",
            hint=_LEARN_MORE,
            proof_position=position,
        )
    if position >= reference.count:
        return Explanation(
            Cause.POSITION_BEYOND_TREE,
            f"the proof claims position {position}, but {reference.source} holds "
            f"{reference.count} modules: it comes from a tree with more modules",
            reference=reference.source,
            proof_position=position,
            tree_modules=reference.count,
        )
    expected = reference.position_of(module.key)
    hashed_leaf = reference.leaf(position)
    folded = fold(hashed_leaf, position, siblings)
    common = {
        "reference": reference.source,
        "proof_position": position,
        "expected_position": expected,
        "expected_module": reference.names[position],
    }
    if folded != kernel.root.digest:
        return _other_build(
            folded,
            kernel_levels,
            position,
            _other_kernel(folded, kernel_levels, others),
            reference,
            others,
        )
    if expected is not None and expected != position:
        return Explanation(
            Cause.PROOF_OF_ANOTHER_MODULE,
            f"it carries the proof of position {position} ({reference.names[position]}); "
            f"this module is at position {expected}",
            hint="append each module's own proof (the .merkle of its position)",
            **common,  # type: ignore[arg-type]
        )
    if expected is None:
        return Explanation(
            Cause.NOT_IN_REFERENCE,
            f"the proof is right for position {position} ({reference.names[position]}), and "
            f"{reference.source} has no module named {module.key}",
            **common,  # type: ignore[arg-type]
        )
    return _bytes_changed(body, reference, position, under, common)


def _other_kernel(root: bytes, levels: int, others: dict[Path, ModuleHashesRoot]) -> Path | None:
    return next((p for p, r in others.items() if r.digest == root and r.levels == levels), None)


def _other_build(
    folded: bytes,
    levels: int,
    position: int,
    carrier: Path | None,
    reference: Reference | None,
    others: dict[Path, ModuleHashesRoot],
) -> Explanation:
    root = ModuleHashesRoot(levels, folded)
    with_leaf = "the hashed module's leaf" if reference is not None else "this module's own leaf"
    where = f": {carrier} carries it" if carrier is not None else ""
    if carrier is None and others:
        where = ": none of the --other-kernel images carries it"
    if carrier is None and reference is not None and reference.root() == root:
        where = (
            f": the root of {reference.source} itself, so the kernel was patched with "
            "another tree's root"
        )
    hint = (
        None
        if carrier is not None or others
        else ("pass --other-kernel IMAGE to find the image that carries it")
    )
    return Explanation(
        Cause.OTHER_BUILD,
        f"the proof belongs to another build: with {with_leaf} it folds to root "
        f"{folded.hex()}, not the kernel's{where}",
        hint=hint,
        reference=reference.source if reference else None,
        proof_position=position,
        other_root=root,
        other_kernel=carrier,
    )


def _bytes_changed(
    body: bytes,
    reference: Reference,
    position: int,
    under: list[str],
    common: dict[str, object],
) -> Explanation:
    installed_sha = hashlib.sha256(body).digest()
    hashed_sha = reference.sha256(position)
    digests = {"hashed_sha256": _hex(hashed_sha), "installed_sha256": _hex(installed_sha)}
    bare, kinds = strip_trailers(body)
    if kinds and hashlib.sha256(bare).digest() == hashed_sha:
        return Explanation(
            Cause.STACKED_TRAILER,
            f"the proof was appended over a {kinds[0]} trailer: the module was hashed "
            "without it, and the kernel hashes it under the proof",
            hint="remove the trailer under the proof (vmpatch reroot removes every trailer)",
            trailers=under,
            **common,  # type: ignore[arg-type]
            **digests,  # type: ignore[arg-type]
        )
    hashed = reference.content(position)
    if hashed is None:
        return Explanation(
            Cause.BYTES_DIFFER,
            f"the proof is right for the module that was hashed at position {position}, but "
            "the bytes differ from it (SHA-256 of the manifest)",
            hint="pass --tree DIR to find where they differ and whether a strip explains it",
            **common,  # type: ignore[arg-type]
            **digests,  # type: ignore[arg-type]
        )
    stripped = _stripped_as(hashed, body, reference)
    if stripped is not None:
        return Explanation(
            Cause.STRIPPED_AFTER_HASHING,
            f"the module was stripped after it was hashed: `{' '.join(stripped)}` of the "
            "hashed module gives exactly these bytes",
            hint="hash the stripped modules (INSTALL_MOD_STRIP at build time, or vmpatch "
            "reroot after the strip step)",
            strip=stripped,
            **common,  # type: ignore[arg-type]
            **digests,  # type: ignore[arg-type]
        )
    offset = first_difference(hashed, body)
    return Explanation(
        Cause.BYTES_DIFFER,
        f"the proof is right for the module that was hashed, but the bytes differ from "
        f"offset {offset:#x} ({len(body)} bytes, hashed {len(hashed)}); no strip with "
        "--strip-debug, --strip-unneeded or the recorded options explains it",
        hint="re-root after the last step that changes modules (vmpatch reroot)",
        first_difference=offset,
        **common,  # type: ignore[arg-type]
        **digests,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Explainer:
    """What ``verify`` explains rejections with: the kernel, a reference, other roots."""

    kernel: KernelModel
    reference: Reference | None = None
    others: dict[Path, ModuleHashesRoot] = field(default_factory=dict)
    base: Path | None = None  # the verified tree, for naming its modules

    def __call__(
        self, path: Path, data: bytes | None, verdict: VerdictKind, reason: str
    ) -> Explanation | None:
        relpath = None
        if self.base is not None:
            try:
                relpath = os.path.relpath(path, self.base)
            except ValueError:
                relpath = None
        try:
            return explain(
                path,
                data or b"",
                verdict,
                reason,
                self.kernel,
                reference=self.reference,
                relpath=relpath,
                others=self.others,
            )
        except VmpatchError as err:  # the reference module is unreadable: say so, no cause
            return Explanation(
                Cause.DOES_NOT_FOLD,
                f"cannot compare with the reference: {err}",
                reference=self.reference.source if self.reference else None,
            )


def other_roots(images: list[Path]) -> dict[Path, ModuleHashesRoot]:
    """The roots the ``--other-kernel`` images carry (an image without one is an error)."""
    from vmpatch.boot.kernel import kernel_model

    out = {}
    for image in images:
        model = kernel_model(image, None)
        if not model.merkle:
            raise InputError(image, "--other-kernel has no .module_hashes root")
        out[image] = model.root
    return out
