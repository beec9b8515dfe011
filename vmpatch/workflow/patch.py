# SPDX-License-Identifier: GPL-2.0-or-later
"""Write a new root into ``.module_hashes``, in place or into an atomic copy.

This replaces kbuild's ``objcopy --update-section .module_hashes=...``, which
needs the target's own objcopy, rewrites the whole (possibly huge) file, and
with a payload of the wrong size "succeeds" while shifting later sections.
Here exactly the section's bytes are written, once, at ``sh_offset``; the file
is synced and read back. Every file named in one call is validated before any
is written, so a bad second file leaves the first untouched too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vmpatch.elf.vmlinux import SECTION_NAME, RootLocation, locate
from vmpatch.errors import InputError, SystemFailure, UsageError
from vmpatch.frozen import frozen
from vmpatch.fs.atomic import atomic_copy, check_target, file_identity, open_input
from vmpatch.records.root import ModuleHashesRoot

if TYPE_CHECKING:
    from vmpatch.workflow.tree import Progress, TreeResult

__all__ = [
    "PatchPlan",
    "PatchReport",
    "PatchResult",
    "RootSource",
    "apply_patches",
    "decode_root_file",
    "patch_images",
    "plan_patches",
    "run_patch",
]


@frozen
class RootSource:
    """Where the new root comes from: raw section bytes, or a decoded root.

    ``raw`` is the section content exactly as kbuild's ``.tmp_module_hashes.bin``
    holds it (already in the target's byte order); ``root`` is encoded for each
    target separately, so one call can patch images of different byte orders.
    ``force`` accepts a root no tree of the generator has
    (:meth:`ModuleHashesRoot.unreachable_reason`).
    """

    raw: bytes | None = None
    root: ModuleHashesRoot | None = None
    origin: str = "root"
    force: bool = False

    def payload_for(self, location: RootLocation) -> bytes:
        if self.raw is not None:
            return self.raw
        assert self.root is not None
        return self.root.encode(location.identity.byteorder)


@frozen
class PatchResult:
    """What one patch did: where, from what, to what."""

    #: Read by vmpatch.cli.jsonout: roots as {levels, root}, the offset as hex.
    json_rename = (("source", "path"),)
    json_skip = ("old", "new")
    json_hex = ("offset",)
    json_extra = (("changed", "changed"), ("old", "old_root"), ("new", "new_root"))

    source: Path
    written: Path
    offset: int
    old: bytes
    new: bytes
    byteorder: str

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def old_root(self) -> ModuleHashesRoot | None:
        """The root the image carried, or None when its bytes were no valid root."""
        return _decoded(self.old, self.byteorder)

    @property
    def new_root(self) -> ModuleHashesRoot | None:
        return _decoded(self.new, self.byteorder)


def _decoded(raw: bytes, byteorder: str) -> ModuleHashesRoot | None:
    try:
        return ModuleHashesRoot.decode(raw, "big" if byteorder == "big" else "little")
    except ValueError:
        return None


@frozen
class PatchReport:
    """What ``vmpatch patch`` did: where the root came from, the tree it built, each image."""

    root_source: str
    tree: TreeResult | None
    images: tuple[PatchResult, ...]


def decode_root_file(path: str | os.PathLike[str]) -> bytes:
    """Read a root file (kbuild's ``.tmp_module_hashes.bin``): the raw section bytes."""
    try:
        with open_input(path) as stream:
            return stream.read()
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from err


def _validate(location: RootLocation, source: RootSource) -> bytes:
    location.check_patchable()
    payload = source.payload_for(location)
    if len(payload) != location.section.size:
        raise InputError(
            location.path,
            f"{source.origin} is {len(payload)} bytes but {SECTION_NAME} is "
            f"{location.section.size} bytes",
        )
    try:
        decoded = ModuleHashesRoot.decode(payload, location.identity.byteorder)
    except ValueError as err:
        raise InputError(
            location.path,
            f"{source.origin} is not a valid {location.identity.byteorder}-endian root: {err}",
        ) from err
    reason = decoded.unreachable_reason()
    if reason is not None and not source.force:
        raise UsageError(source.origin, reason, hint="--force writes it anyway")
    return payload


def _writable(path: Path, output: Path | None) -> None:
    if output is None:
        if not os.access(path, os.W_OK):
            raise SystemFailure(path, "cannot patch in place: file is not writable")
    else:
        check_target(output)


def _check_aliasing(sources: list[Path], targets: list[Path | None]) -> None:
    """Refuse names that would make one write clobber another image of the call.

    An --output that is another input (or another --output) would be replaced
    by a copy of a different image, patched at an offset valid only for the
    image it was planned on.
    """
    seen: dict[object, Path] = {}
    for path in sources:
        key = file_identity(path)
        if key in seen:
            raise UsageError(path, f"named twice (also as {seen[key]})")
        seen[key] = path
    for path, output in zip(sources, targets, strict=True):
        if output is None:
            continue
        key = file_identity(output)
        if key == file_identity(path):
            continue  # --output naming the image itself: patch in place
        if key in seen:
            raise UsageError(
                output, f"--output would overwrite {seen[key]}, also named in the call"
            )
        seen[key] = output


def _write_at(
    fd: int, *, path: Path, offset: int, payload: bytes, expect: bytes | None = None
) -> None:
    """One pwrite of the section bytes, then fsync and a read-back.

    With ``expect``, the bytes there must still be the validated section
    content: a copy of a file that changed since it was planned is refused.
    """
    if expect is not None and os.pread(fd, len(expect), offset) != expect:
        raise InputError(path, "source changed while being copied; nothing written")
    written = os.pwrite(fd, payload, offset)
    if written != len(payload):
        raise SystemFailure(path, f"short write: {written} of {len(payload)} bytes")
    os.fsync(fd)
    if os.pread(fd, len(payload), offset) != payload:
        raise SystemFailure(path, f"read-back of {SECTION_NAME} differs from what was written")


@frozen
class PatchPlan:
    """One validated patch, ready to apply."""

    location: RootLocation
    payload: bytes
    output: Path | None


def _refuse_boot_image(path: Path) -> None:
    """Boot images are read-only: a compressed or signed payload cannot be patched in place.

    An ELF file is no boot image: its first four bytes say so without
    importing the boot-image readers (9 ms of ``vmpatch patch``'s start-up,
    ``python -X importtime``).
    """
    from vmpatch.elf.constants import ELF_MAGIC

    try:
        with open_input(path) as stream:
            if stream.read(len(ELF_MAGIC)) == ELF_MAGIC:
                return
    except OSError:
        return  # the ELF reader that follows says what is wrong with it
    from vmpatch.boot import format_of

    kind = format_of(path)
    if kind is not None:
        raise InputError(
            path,
            f"is a boot image ({kind}), which vmpatch only reads: patch the vmlinux "
            "it was built from and rebuild (and re-sign) the image",
        )


def plan_patches(
    paths: Sequence[str | os.PathLike[str]],
    source: RootSource,
    *,
    outputs: Sequence[str | os.PathLike[str]] | None = None,
) -> list[PatchPlan]:
    """Locate and validate every image; raise the first reason one cannot be patched."""
    sources = [Path(p) for p in paths]
    targets: list[Path | None] = [Path(o) for o in outputs] if outputs else [None] * len(sources)
    if len(targets) != len(sources):
        raise UsageError(None, f"{len(sources)} images but {len(targets)} --output paths")
    _check_aliasing(sources, targets)
    plans = []
    for path, output in zip(sources, targets, strict=True):
        _refuse_boot_image(path)
        location = locate(path)
        payload = _validate(location, source)
        _writable(path, output)
        plans.append(PatchPlan(location, payload, output))
    return plans


def apply_patches(plans: Sequence[PatchPlan]) -> list[PatchResult]:
    """Write each planned root: in place, or into an atomic copy."""
    results = []
    for plan in plans:
        location, payload, output = plan.location, plan.payload, plan.output
        offset = location.section.offset
        old = location.content or b""
        if output is None or file_identity(output) == file_identity(location.path):
            written = location.path
            if old != payload:
                _patch_in_place(location, payload)
        else:
            written = output
            edit = partial(
                _write_at, path=output, offset=offset, payload=payload, expect=location.content
            )
            atomic_copy(location.path, output, edit=edit)
        results.append(
            PatchResult(location.path, written, offset, old, payload, location.identity.byteorder)
        )
    return results


def patch_images(
    paths: Sequence[str | os.PathLike[str]],
    source: RootSource,
    *,
    outputs: Sequence[str | os.PathLike[str]] | None = None,
) -> list[PatchResult]:
    """Patch each image's root from ``source``; ``outputs`` makes copies instead.

    All images are located and validated first; nothing is written unless
    every one of them can be patched.
    """
    return apply_patches(plan_patches(paths, source, outputs=outputs))


def _patch_in_place(location: RootLocation, payload: bytes) -> None:
    path = location.path
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "open for writing") from err
    try:
        # The file must still be the one validated: same size, same section bytes.
        if os.fstat(fd).st_size != location.file_size or (
            os.pread(fd, len(payload), location.section.offset) != location.content
        ):
            raise InputError(path, "file changed while being patched; nothing written")
        _write_at(fd, path=path, offset=location.section.offset, payload=payload)
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "patch") from err
    finally:
        os.close(fd)


def run_patch(
    images: Sequence[str | os.PathLike[str]],
    source: RootSource | None = None,
    *,
    from_tree: str | os.PathLike[str] | None = None,
    outputs: Sequence[str | os.PathLike[str]] | None = None,
    suffix: str | None = None,
    proofs: bool = True,
    workers: int | None = None,
    progress: Progress | None = None,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> PatchReport:
    """``vmpatch patch``: the root from ``source`` or the tree of ``from_tree``, into each image.

    Plan then apply: with ``from_tree`` the tree is hashed first (nothing
    written), then every image is located and validated, and only then are
    the proofs written and the images patched, so a bad image leaves both
    the build tree and the other images as they were. Every image, every
    existing output and the ``from_tree`` directory are locked
    (:func:`vmpatch.fs.lock.locked`) for the whole run.
    """
    from vmpatch.fs.lock import locked

    lock = [*images, *(outputs or ()), *([from_tree] if from_tree is not None else [])]
    with locked(lock, wait=wait, waiting=waiting, missing_ok=True):
        return _run_patch(
            images,
            source,
            from_tree=from_tree,
            outputs=outputs,
            suffix=suffix,
            proofs=proofs,
            workers=workers,
            progress=progress,
        )


def _run_patch(
    images: Sequence[str | os.PathLike[str]],
    source: RootSource | None,
    *,
    from_tree: str | os.PathLike[str] | None,
    outputs: Sequence[str | os.PathLike[str]] | None,
    suffix: str | None,
    proofs: bool,
    workers: int | None,
    progress: Progress | None,
) -> PatchReport:
    if (source is None) == (from_tree is None):
        raise UsageError(None, "give the root: --root-file, --root with --levels, or --from-tree")
    plan = merkle = None
    if from_tree is not None:
        # Only here: a plain in-place patch is start-up bound (issue 12), and the
        # tree workflow's import (hashlib, threads, the compressed readers) is 20 ms of it.
        from vmpatch.workflow.tree import build_tree, no_progress, plan_tree

        plan = plan_tree(from_tree, suffix=suffix, check_trailers_when_hashing=True)
        with (progress or no_progress)("hashing modules", len(plan.modules)) as done:
            merkle = build_tree(plan, workers=workers, progress=done)
        source = RootSource(root=merkle.root, origin=f"tree of {from_tree}")
    assert source is not None
    plans = plan_patches(images, source, outputs=outputs)  # validates every image first
    tree = None
    if plan is not None and merkle is not None:
        from vmpatch.workflow.tree import tree_result, write_proofs

        if proofs:
            write_proofs(plan, merkle, workers=workers)
        tree = tree_result(plan, merkle, proofs=proofs)
    return PatchReport(source.origin, tree, tuple(apply_patches(plans)))
