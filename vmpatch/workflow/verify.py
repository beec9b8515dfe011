# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify``: judge module files against a vmlinux, as the kernel will.

Builds the :class:`~vmpatch.verdict.KernelModel` from the image with
:func:`vmpatch.elf.kernel.kernel_model` (the same model every checked append
uses) and runs
:func:`~vmpatch.verdict.kernel_verdict` over each module's kernel-visible bytes
(decompressed for ``.ko.gz``/``.ko.xz``/``.ko.zst``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vmpatch.elf.kernel import kernel_model
from vmpatch.errors import UsageError
from vmpatch.verdict import KernelModel, Verdict, kernel_verdict

__all__ = ["FileVerdict", "kernel_model", "modules_of_build_dir", "verify_files"]


@dataclass(frozen=True)
class FileVerdict:
    path: Path
    verdict: Verdict


def modules_of_build_dir(
    build_dir: str | os.PathLike[str], suffix: str | None = None
) -> list[Path]:
    """The module files a tree's modules.order names, in order.

    A build tree (``*.o`` lines) gives ``<stem><suffix>``; an install tree
    (``kernel/...ko`` lines) gives whichever compressed form is installed.
    """
    from vmpatch.records.modorder import Layout
    from vmpatch.workflow.reroot import layout_of

    if layout_of(Path(build_dir), None) is Layout.INSTALLED:
        from vmpatch.workflow.installed import installed_modules

        if suffix is not None:
            raise UsageError(None, "--suffix is for build trees; an install tree names its files")
        return [path for _entry, path in installed_modules(build_dir)]
    from vmpatch.workflow.tree import plan_tree

    plan = plan_tree(build_dir, suffix=suffix, refuse_trailers=False)  # proofs expected
    return [m.module for m in plan.modules]


def verify_files(
    kernel: KernelModel,
    paths: Sequence[Path],
    *,
    max_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[FileVerdict]:
    """The kernel's verdict for every module file, in the order given."""
    from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED, read_module
    from vmpatch.merkle import default_workers

    limit = DEFAULT_MAX_DECOMPRESSED if max_size is None else max_size

    def judge(path: Path) -> FileVerdict:
        content = read_module(path, max_size=limit)
        return FileVerdict(path, kernel_verdict(content.data, kernel))

    results = []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done, result in enumerate(pool.map(judge, paths), start=1):
            results.append(result)
            if progress:
                progress(done)
    return results
