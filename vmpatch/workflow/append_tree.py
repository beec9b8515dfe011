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

from vmpatch.errors import InputError, MismatchError
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


def _changed_after_hashing(
    err: MismatchError, kernel: object, tree: str | os.PathLike[str]
) -> MismatchError:
    """A rejection, explained: the module's bytes are not the ones the root was built over.

    A proof that does not fold to the build's root means the module changed
    after ``vmpatch tree`` hashed it (stripped, signed, rebuilt, or from
    another build). Appending cannot fix that; re-rooting over the final
    bytes can, so the hint names ``vmpatch reroot``.
    """
    image = kernel if isinstance(kernel, (str, os.PathLike)) else "VMLINUX"
    return MismatchError(
        err.path,
        f"{err.reason}; its bytes are not the ones hashed for this root "
        "(changed after hashing: stripped, signed or rebuilt?)",
        hint=f"re-root over the final bytes instead: vmpatch reroot --kernel {image} {tree}",
    )


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
    """
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
        try:
            plan_append(target, proof, replace=replace, stack=stack, root=root, max_size=max_size)
        except MismatchError as err:
            raise _changed_after_hashing(err, kernel, dest or build_dir) from None
    results = []
    for target, proof in jobs:
        ready = plan_append(
            target, proof, replace=replace, stack=stack, root=root, max_size=max_size
        )
        write_planned(ready)
        results.append(ready.result)
    return results
