# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch ko append-tree``: every module's proof appended in one validated pass.

Plans every append first (each proof read and matched to its position, each
module read and, with a kernel, verified), then writes; a refusal anywhere
changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vmpatch.errors import InputError
from vmpatch.fs.lock import locked
from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED
from vmpatch.ko.proof import (
    AppendResult,
    Proof,
    plan_append,
    read_proof_file,
    resolve_kernel,
    write_planned,
)
from vmpatch.workflow.installed import installed_module

if TYPE_CHECKING:
    from vmpatch.records.root import ModuleHashesRoot

__all__ = ["append_tree"]


def append_tree(
    build_dir: str | os.PathLike[str],
    *,
    dest: str | os.PathLike[str] | None = None,
    suffix: str | None = None,
    replace: bool = False,
    stack: bool = False,
    kernel: str | os.PathLike[str] | ModuleHashesRoot | None = None,
    strip_check: Callable[[], None] | None = None,
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> list[AppendResult]:
    """Append every module's ``<stem>.merkle`` in one process, in modules.order order.

    Modules are the build tree's (``suffix`` as for ``vmpatch tree``) or, with
    ``dest``, the staged install ``DEST/kernel/<stem>.ko[.gz|.xz|.zst]``.
    Every proof and module is read and checked (and, with ``kernel``,
    verified) before the first write, so a refusal changes nothing. The
    second pass re-reads each module rather than holding a whole kernel's
    modules in memory. ``replace``/``stack`` apply to every module as in
    :func:`vmpatch.ko.proof.plan_append`.

    With ``dest``, the build tree's modules are the ones that were hashed,
    so one that ends with a trailer is refused as ``vmpatch tree`` refuses it
    (the proofs would be over post-processed bytes). Without ``dest`` they are
    the targets, and a trailer there is the append's own business (an
    identical proof: unchanged).

    The build tree and ``dest`` are locked (:func:`vmpatch.fs.lock.locked`)
    for the whole run, and each module from its last read to its rename, so
    neither another tree-wide command nor a per-module hook interleaves.
    """
    trees = [build_dir] if dest is None else [build_dir, dest]
    with locked(trees, wait=wait, waiting=waiting, missing_ok=True):
        return _append_tree(
            build_dir,
            dest=dest,
            suffix=suffix,
            replace=replace,
            stack=stack,
            kernel=kernel,
            strip_check=strip_check,
            max_size=max_size,
            wait=wait,
            waiting=waiting,
        )


def _append_tree(
    build_dir: str | os.PathLike[str],
    *,
    dest: str | os.PathLike[str] | None,
    suffix: str | None,
    replace: bool,
    stack: bool,
    kernel: str | os.PathLike[str] | ModuleHashesRoot | None,
    strip_check: Callable[[], None] | None,
    max_size: int,
    wait: bool,
    waiting: Callable[[str], None] | None,
) -> list[AppendResult]:
    from vmpatch.workflow.tree import plan_tree

    if strip_check is not None:
        strip_check()
    plan = plan_tree(build_dir, suffix=suffix, refuse_trailers=dest is not None)
    root = resolve_kernel(kernel)
    jobs: list[tuple[Path, Proof]] = []
    for planned in plan.modules:
        target = (
            planned.module
            if dest is None
            else installed_module(dest, "kernel/" + planned.entry.stem)
        )
        proof = read_proof_file(planned.proof)
        if proof.position != planned.entry.index:
            raise InputError(
                proof.path,
                f"proof is for position {proof.position} but {planned.entry.name} is at "
                f"position {planned.entry.index} of {plan.order_file}",
            )
        jobs.append((target, proof))
    for target, proof in jobs:  # validate everything first
        plan_append(target, proof, replace=replace, stack=stack, root=root, max_size=max_size)
    results = []
    for target, proof in jobs:
        with locked([target], wait=wait, waiting=waiting, missing_ok=True):
            ready = plan_append(
                target, proof, replace=replace, stack=stack, root=root, max_size=max_size
            )
            write_planned(ready)
        results.append(ready.result)
    return results
