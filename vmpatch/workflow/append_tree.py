# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch ko append-tree``: every module's proof appended in one validated pass.

Plans every append first (each proof read and matched to its position, each
module read and, with a kernel, verified), then writes; a refusal anywhere
changes nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from vmpatch.errors import InputError, MismatchError
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
    from vmpatch.workflow.tree import Progress

_T = TypeVar("_T")

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
    workers: int | None = None,
    progress: Progress | None = None,
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

    Both passes run on ``workers`` threads (default: one per CPU): lzma, zlib
    and zstd release the GIL while they decompress and recompress, which is
    nearly all the time of a ``.ko.xz`` tree (issue 12: 5 min 47 s on one
    core over Debian's 4230 modules). ``progress`` is the workflow's
    progress context (:data:`vmpatch.workflow.tree.Progress`).

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
            workers=workers,
            progress=progress,
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
    workers: int | None,
    progress: Progress | None,
    wait: bool,
    waiting: Callable[[str], None] | None,
) -> list[AppendResult]:
    from vmpatch.workflow.tree import no_progress, plan_tree

    if strip_check is not None:
        strip_check()
    plan = plan_tree(build_dir, suffix=suffix, refuse_trailers=dest is not None)
    root = resolve_kernel(kernel)
    jobs: list[tuple[Path, Proof]] = []
    listings: dict[str, frozenset[str]] = {}  # each install directory listed once
    for planned in plan.modules:
        target = (
            planned.module
            if dest is None
            else installed_module(dest, "kernel/" + planned.entry.stem, listings=listings)
        )
        proof = read_proof_file(planned.proof)
        if proof.position != planned.entry.index:
            raise InputError(
                proof.path,
                f"proof is for position {proof.position} but {planned.entry.name} is at "
                f"position {planned.entry.index} of {plan.order_file}",
            )
        jobs.append((target, proof))

    def check(job: tuple[Path, Proof]) -> None:
        try:
            plan_append(job[0], job[1], replace=replace, stack=stack, root=root, max_size=max_size)
        except MismatchError as err:
            raise _changed_after_hashing(err, kernel, dest or build_dir) from None

    def write(job: tuple[Path, Proof]) -> AppendResult:
        with locked([job[0]], wait=wait, waiting=waiting, missing_ok=True):
            ready = plan_append(
                job[0], job[1], replace=replace, stack=stack, root=root, max_size=max_size
            )
            write_planned(ready)
        return ready.result

    show = progress or no_progress
    with show("checking modules", len(jobs)) as done:
        _in_threads(check, jobs, workers, done)  # validate everything first
    with show("appending proofs", len(jobs)) as done:
        return _in_threads(write, jobs, workers, done)


def _in_threads(
    work: Callable[[tuple[Path, Proof]], _T],
    jobs: Sequence[tuple[Path, Proof]],
    workers: int | None,
    done: Callable[[int], None] | None,
) -> list[_T]:
    """``work`` over ``jobs`` in threads, results in order; the first failure cancels the rest."""
    from vmpatch.merkle import default_workers

    count = [0]
    guard = threading.Lock()

    def run(job: tuple[Path, Proof]) -> _T:
        result = work(job)
        if done is not None:
            with guard:
                count[0] += 1
                done(count[0])
        return result

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers or default_workers(), len(jobs) or 1)))
    try:
        results = list(pool.map(run, jobs))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
