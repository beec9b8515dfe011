# SPDX-License-Identifier: GPL-2.0-or-later
"""vmpatch's verdict on compressed modules equals what the real kernels answered.

Every case of scripts/decompress_matrix.py is rebuilt here from the e2e
modules with the real xz/gzip/zstd, judged by ``verify_files`` with the
kernel's config and the in-kernel loading path (the judge, boot-check.sh,
loads compressed modules with finit_module(MODULE_INIT_COMPRESSED_FILE)), and
compared with the kernel's recorded answer in
testdata/decompress-matrix/kernel-answers.tsv (re-checked by
``scripts/check-decompress-matrix``; ``VMPATCH_E2E=1`` makes this suite boot it).
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.clirun import python
from tests.conftest import ROOT, SCRIPTS, TESTDATA, require, require_tool
from vmpatch.ko.kdecompress import LoadPath
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.verdict import VerdictKind
from vmpatch.workflow.tree import build_tree, plan_tree, write_proofs
from vmpatch.workflow.verify import ModuleVerdict, kernel_model, verify_files


def _load_matrix():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "decompress_matrix", SCRIPTS / "decompress_matrix.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["decompress_matrix"] = module
    spec.loader.exec_module(module)
    return module


matrix = _load_matrix()
ANSWERS = TESTDATA / "decompress-matrix" / "kernel-answers.tsv"


def _recorded() -> dict[str, dict[str, str]]:
    lines = ANSWERS.read_text().splitlines()
    header = lines[0].split("\t")
    return {
        row.split("\t")[0]: dict(zip(header, row.split("\t"), strict=True)) for row in lines[1:]
    }


RECORDED = _recorded()


def test_every_case_has_a_recorded_kernel_answer() -> None:
    assert sorted(RECORDED) == sorted(c.name for c in matrix.CASES)
    assignments = matrix.assignments()
    for name, row in RECORDED.items():
        assert row["module"] == assignments[name], name


@pytest.fixture(scope="module")
def proved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 16 e2e modules with the proofs of their tree appended; the root is the e2e one."""
    require(matrix.ARTIFACTS.is_dir(), f"{matrix.ARTIFACTS} is not present (the e2e artifacts)")
    work = tmp_path_factory.mktemp("matrix")
    tree = work / "tree"
    shutil.copytree(matrix.ARTIFACTS / "lib", tree / "lib")
    shutil.copy(matrix.ARTIFACTS / "modules.order", tree / "modules.order")
    plan = plan_tree(tree)
    built = build_tree(plan)
    expected = ModuleHashesRoot.decode(matrix.ROOT_BIN.read_bytes(), "little")
    assert built.root == expected
    write_proofs(plan, built)
    out = work / "proved"
    out.mkdir()
    for planned in plan.modules:
        data = planned.module.read_bytes() + planned.proof.read_bytes()
        (out / planned.module.name).write_bytes(data)
    return out


def _answer(verdict_accepted: bool, load_result: str) -> str:
    if verdict_accepted:
        return "OK"
    return f"rc={getattr(errno, load_result)}"


@pytest.mark.parametrize("case", matrix.CASES, ids=lambda c: c.name)
def test_verdict_equals_the_kernels_answer(case, proved: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for tool, package in (("xz", "xz-utils"), ("gzip", "gzip"), ("zstd", "zstd")):
        require_tool(tool, package)
    row = RECORDED[case.name]
    vmlinux, config = matrix.kernel_files(case.kernel)
    model = kernel_model(vmlinux, config)
    root = ModuleHashesRoot.decode(matrix.ROOT_BIN.read_bytes(), "little")
    model = dataclasses.replace(model, root=root)  # what `vmpatch patch --root-file` puts in
    path = matrix.case_file(case, row["module"], proved, tmp_path)
    (result,) = verify_files(model, [path], load_path=LoadPath.IN_KERNEL, workers=1)
    assert isinstance(result, ModuleVerdict), result
    got = _answer(result.verdict is VerdictKind.ACCEPT, result.load_result)
    if case.ram_dependent:
        # The kernel vmallocs a workspace as large as the window: ENOMEM in the
        # 256 MiB guest, EINVAL (the decoder's window limit) where that succeeds.
        assert row["answer"] == f"rc={errno.ENOMEM}" and got == f"rc={errno.EINVAL}"
        assert "ENOMEM" in result.reason
        return
    assert got == row["answer"], (
        f"{case.name}: kernel {row['answer']} {row['dmesg']!r}, vmpatch {result}"
    )
    assert result.load_path is LoadPath.IN_KERNEL


@pytest.mark.skipif(os.environ.get("VMPATCH_E2E") != "1", reason="boots QEMU: set VMPATCH_E2E=1")
def test_the_kernels_still_answer_as_recorded() -> None:
    require_tool("qemu-system-x86_64", "qemu-system-x86")
    python(SCRIPTS / "check-decompress-matrix", cwd=ROOT, check=True, timeout=None)
