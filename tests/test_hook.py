# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch-ko-append``, run as kbuild would: one process per module.

Quiet on success, one ``vmpatch-ko-append: ...`` line and the error's exit
code on failure, and lean: the heavy CLI libraries never load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clirun import Run, hook, python, traversable_dir
from test_kotool import make_tree, modules, patched_vmlinux


def assert_one_line_error(proc: Run, code: int) -> str:
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


def test_refused_write_exits_3(tmp_path: Path) -> None:
    """The system refusing the write is exit 3, the module untouched.

    Root bypasses file modes, so as root the hook runs as ``nobody`` (the
    shared runner drops privileges) on a copy in a directory nobody can reach.
    """
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    with traversable_dir() as reachable:
        directory = reachable / "drivers"
        directory.mkdir()
        module = Path(shutil.copy2(module, directory / module.name))
        proof = Path(shutil.copy2(proof, reachable / proof.name))
        for path in (module, proof):
            path.chmod(0o444)
        original = module.read_bytes()
        directory.chmod(0o555)
        line = assert_one_line_error(hook(module, proof, unprivileged=True), 3)
        assert str(module) in line, line
        assert module.read_bytes() == original
        assert sorted(p.name for p in directory.iterdir()) == [module.name]


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
    proc = python("-c", code, check=True)
    assert proc.stdout.strip() == "[]"


#: Modules whose import cost the per-module hook must not pay (issue 12); dataclasses
#: is tests/test_layers.py's (it checks every codec).
KEPT_OFF_THE_HOOK_PATH = ("argparse", "tempfile", "pathlib")


def test_hook_call_loads_no_argparse_or_tempfile(tmp_path: Path) -> None:
    """A real append through the hook's entry point imports neither module.

    Compared with what the bare interpreter already loaded (site's .pth files
    may import some standard modules in any environment), so only the hook's
    own imports count.
    """
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from vmpatch.hook import main\n"
        "code = main(sys.argv[1:])\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
        "sys.exit(code)\n"
    )
    result = python("-c", code, module, proof)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "vmpatch.ko.proof" in loaded  # the append really ran
    assert not loaded & set(KEPT_OFF_THE_HOOK_PATH), sorted(loaded & set(KEPT_OFF_THE_HOOK_PATH))
