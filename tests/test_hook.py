# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch-ko-append``, run as kbuild would: one process per module.

Quiet on success, one ``vmpatch-ko-append: ...`` line and the error's exit
code on failure, and lean: the heavy CLI libraries never load.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from test_kotool import make_tree, modules, patched_vmlinux

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def hook(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmpatch.hook", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vmpatch-ko-append: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_quiet_success_then_unchanged_then_refused(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    (module, proof), (_other, other_proof) = modules(tree)[:2]
    original = module.read_bytes()
    for _ in range(2):  # the second run finds the identical proof: still quiet, 0
        proc = hook(module, proof)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    appended = module.read_bytes()
    assert appended == original + proof.read_bytes()
    line = assert_one_line_error(hook(module, other_proof), 2)
    assert "already carries a merkle trailer; use --replace" in line
    assert module.read_bytes() == appended
    assert hook("--replace", module, other_proof).returncode == 0
    assert module.read_bytes() == original + other_proof.read_bytes()


def test_kernel_check(tmp_path: Path) -> None:
    tree, merkle = make_tree(tmp_path)
    image = patched_vmlinux(tmp_path, merkle)
    (module, proof), (_other, other_proof) = modules(tree)[:2]
    original = module.read_bytes()
    line = assert_one_line_error(hook("--kernel", image, module, other_proof), 1)
    assert "kernel would reject" in line
    assert module.read_bytes() == original
    assert hook("--kernel", image, module, proof).returncode == 0


def test_install_mod_strip_mismatch(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    original = module.read_bytes()
    proc = hook("--install-mod-strip", "1", "--build-dir", tree, module, proof)
    line = assert_one_line_error(proc, 1)
    assert "INSTALL_MOD_STRIP is '1' at install time but '' at build time" in line
    assert module.read_bytes() == original
    assert hook("--install-mod-strip=", "--build-dir", tree, module, proof).returncode == 0
    assert_one_line_error(hook("--install-mod-strip", "1", module, proof), 2)


def test_bad_input_and_usage(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    assert_one_line_error(hook(module), 2)
    assert_one_line_error(hook(module, tmp_path / "missing.merkle"), 2)
    assert_one_line_error(hook(module, module), 2)  # a module is not a proof
    assert_one_line_error(hook(tmp_path / "missing.ko", proof), 2)
    module.chmod(0o444)
    tree.joinpath("drivers", "net").chmod(0o555)
    try:
        if os.geteuid() != 0:
            assert_one_line_error(hook(module, proof), 3)
    finally:
        tree.joinpath("drivers", "net").chmod(0o755)


def test_lean_imports(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    code = (
        "import sys\n"
        "from vmpatch.hook import main\n"
        f"assert main([{str(module)!r}, {str(proof)!r}]) == 0\n"
        "heavy = {'typer', 'rich', 'click', 'elftools', 'zstandard', 'asn1crypto'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True
    )
    assert proc.stdout.strip() == "[]"
