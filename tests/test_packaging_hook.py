# SPDX-License-Identifier: GPL-2.0-or-later
"""Both modules_install hook forms, run through a real Makefile (packaging/modinst.mk).

The Makefile reproduces mainline's install, INSTALL_MOD_STRIP and compress
rules and the series' sign step, over the miniature kbuild tree's real
modules; GNU make runs it, with ``-j16`` and ``-j1``. The evidence that the
result loads is independent of vmpatch (tests/pkgcheck.py: objcopy, the
xz/zstd/gzip tools, hashlib), and ``vmpatch verify`` must agree.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
from clirun import ROOT, Run, tool, vmpatch
from conftest import TESTDATA, require_tool
from pkgcheck import kernel_visible, problems

MAKEFILE = ROOT / "packaging" / "modinst.mk"
KVER = "6.12.0-vmpatch"


def bin_dir(tmp: Path) -> Path:
    """A PATH directory with ``vmpatch`` and ``vmpatch-ko-append`` run from this checkout."""
    out = tmp / "bin"
    if not out.is_dir():
        out.mkdir()
        for name, module in (("vmpatch", "vmpatch"), ("vmpatch-ko-append", "vmpatch.hook")):
            script = out / name
            script.write_text(
                f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m {module} "$@"\n'
            )
            script.chmod(0o755)
    return out


def make_env(tmp: Path) -> dict[str, str]:
    env = {"PATH": f"{bin_dir(tmp)}:{os.environ['PATH']}"}
    env["STRIP"] = "/nonexistent/strip-from-the-environment"  # kbuild ignores it; so must we
    return env


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """The miniature kbuild tree, hashed and its vmlinux patched (as kbuild's build does)."""
    tree = tmp_path / "build"
    shutil.copytree(TESTDATA / "kbuild-x86_64", tree)
    run = vmpatch("patch", "--from-tree", tree, tree / "vmlinux")
    assert run.returncode == 0, run.stderr
    return tree


def install(build: Path, stage: Path, *args: str, jobs: int = 1, check: bool = True) -> Run:
    require_tool("make")
    proc = tool(
        "make",
        f"-j{jobs}",
        "-f",
        MAKEFILE,
        f"objtree={build}",
        f"KVER={KVER}",
        f"INSTALL_MOD_PATH={stage}",
        *args,
        text=True,
        env=make_env(stage.parent),
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def contents(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def assert_loads(modules: Path, vmlinux: Path, tmp: Path) -> None:
    assert problems(modules, vmlinux, tmp) == []
    run = vmpatch("verify", "--kernel", vmlinux, "--modules", modules, "--json")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("compress", ["", "gzip", "zstd"])
def test_per_module_hook_under_make_j16_equals_j1(
    build: Path, tmp_path: Path, compress: str
) -> None:
    for program in {"gzip": "gzip", "xz": "xz", "zstd": "zstd"}.get(compress, "").split():
        require_tool(program)
    serial, parallel = tmp_path / "j1", tmp_path / "j16"
    install(build, serial, f"MODULE_COMPRESS={compress}", jobs=1)
    proc = install(build, parallel, f"MODULE_COMPRESS={compress}", jobs=16)
    assert proc.stdout.count("vmpatch-ko-append") == 5  # once per module, in make's output
    modules = serial / "lib" / "modules" / KVER
    assert_loads(modules, build / "vmlinux", tmp_path)
    assert contents(serial) == contents(parallel)
    suffix = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst"}.get(compress, "")
    assert {p.name for p in (modules / "kernel").rglob("*.ko*")} == {
        f"{name}.ko{suffix}" for name in ("dummy_net", "tinyfs", "crc_toy", "toy_char", "zz_first")
    }


def test_post_install_hook_appends_verifies_and_leaves_proved_modules(
    build: Path, tmp_path: Path
) -> None:
    require_tool("xz")
    stage = tmp_path / "stage"
    install(build, stage, "MODULE_COMPRESS=xz", "VMPATCH_HOOK=post-install", jobs=16)
    modules = stage / "lib" / "modules" / KVER
    assert_loads(modules, build / "vmlinux", tmp_path)
    # Same kernel-visible bytes as the per-module form (compressed bytes differ:
    # make ran xz before the proof went in, vmpatch recompresses in-process).
    per_module = tmp_path / "per-module"
    install(build, per_module, "MODULE_COMPRESS=xz", jobs=16)
    for path in sorted((modules / "kernel").rglob("*.ko.xz")):
        twin = per_module / path.relative_to(stage)
        assert kernel_visible(path) == kernel_visible(twin), path.name
    # Run once more over the proved tree: verified, nothing written.
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in modules.rglob("*.ko.xz")}
    run = vmpatch(
        "ko", "append-tree", build, "--dest", modules, "--kernel", build / "vmlinux", "--json"
    )
    assert run.returncode == 0, run.stderr
    assert {m["action"] for m in run.json()["modules"]} == {"unchanged"}
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in modules.rglob("*.ko.xz")} == before


@pytest.mark.parametrize("form", ["per-module", "post-install"])
def test_modules_stripped_after_hashing_are_refused(build: Path, tmp_path: Path, form: str) -> None:
    """INSTALL_MOD_STRIP=1 on a tree hashed unstripped: the bytes changed after hashing."""
    require_tool("strip", "binutils")
    stage = tmp_path / "stage"
    proc = install(build, stage, "INSTALL_MOD_STRIP=1", f"VMPATCH_HOOK={form}", check=False)
    assert proc.returncode != 0
    modules = stage / "lib" / "modules" / KVER
    stripped = sorted((modules / "kernel").rglob("*.ko"))
    assert stripped, "make stopped before installing anything: the test tests nothing"
    for path in stripped:  # the strip really changed the bytes; nothing was appended
        data = path.read_bytes()
        built = (build / path.relative_to(modules / "kernel")).read_bytes()
        assert data != built and not data.endswith(b"~Module signature appended~\n")
    if form == "per-module":
        assert "INSTALL_MOD_STRIP is '1' at install time but '' at build time" in proc.stderr
    else:
        (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert "changed after hashing" in line and "vmpatch reroot --kernel" in line
        # The hint is right: re-rooting the install tree makes every module load.
        digest = hashlib.sha256((build / "vmlinux").read_bytes()).hexdigest()
        run = vmpatch("reroot", "--kernel", build / "vmlinux", modules)
        assert run.returncode == 0, run.stderr
        assert hashlib.sha256((build / "vmlinux").read_bytes()).hexdigest() != digest
        assert_loads(modules, build / "vmlinux", tmp_path)


def test_strip_is_a_make_variable_never_the_environment(build: Path, tmp_path: Path) -> None:
    """The environment's STRIP (a missing program, set by make_env) is not used; make STRIP= is."""
    require_tool("strip", "binutils")
    stage = tmp_path / "env"
    proc = install(build, stage, "INSTALL_MOD_STRIP=1", "VMPATCH_HOOK=post-install", check=False)
    assert "nonexistent" not in proc.stdout + proc.stderr
    assert "\nstrip --strip-debug " in "\n" + proc.stdout
    stage = tmp_path / "var"
    proc = install(
        build, stage, "INSTALL_MOD_STRIP=1", "STRIP=/nonexistent/make-var-strip", check=False
    )
    assert proc.returncode != 0 and "/nonexistent/make-var-strip" in proc.stdout + proc.stderr


@pytest.mark.parametrize("form", ["per-module", "post-install"])
def test_modules_hashed_stripped_and_stripped_alike_at_install_load(
    tmp_path: Path, form: str
) -> None:
    """CONFIG_MODULE_INSTALL_STRIP="1": the tree hashes %.ko.stripped, install strips alike."""
    require_tool("strip", "binutils")
    require_tool("gzip")
    tree = tmp_path / "build"
    shutil.copytree(TESTDATA / "kbuild-x86_64", tree)
    conf = tree / "include" / "config" / "auto.conf"
    text = conf.read_text()
    assert 'CONFIG_MODULE_INSTALL_STRIP=""' in text
    conf.write_text(
        text.replace('CONFIG_MODULE_INSTALL_STRIP=""', 'CONFIG_MODULE_INSTALL_STRIP="1"')
    )
    for args in (
        ("ko", "strip", "--install-mod-strip", "1", "--tree", tree),
        ("patch", "--from-tree", tree, tree / "vmlinux"),
    ):
        run = vmpatch(*args)
        assert run.returncode == 0, run.stderr
    stage = tmp_path / "stage"
    install(
        tree, stage, "INSTALL_MOD_STRIP=1", "MODULE_COMPRESS=gzip", f"VMPATCH_HOOK={form}", jobs=16
    )
    modules = stage / "lib" / "modules" / KVER
    assert_loads(modules, tree / "vmlinux", tmp_path)
    for path in (modules / "kernel").rglob("*.ko.gz"):  # stripped: not the bytes as built
        built = (tree / path.relative_to(modules / "kernel")).with_suffix("")
        assert not kernel_visible(path).startswith(built.read_bytes())


def test_append_tree_refuses_changed_bytes_with_a_reroot_hint_and_writes_nothing(
    build: Path, tmp_path: Path
) -> None:
    """The library call behind the post-install form: one refusal, every file as it was."""
    from vmpatch.errors import MismatchError
    from vmpatch.workflow.append_tree import append_tree

    require_tool("strip", "binutils")
    stage = tmp_path / "stage"
    install(build, stage, "VMPATCH_HOOK=none")
    modules = stage / "lib" / "modules" / KVER
    last = sorted((modules / "kernel").rglob("*.ko"))[-1]
    tool("strip", "--strip-debug", last)  # changed after hashing
    before = contents(stage)
    with pytest.raises(MismatchError) as caught:
        append_tree(build, dest=modules, kernel=build / "vmlinux")
    assert caught.value.path is not None and Path(caught.value.path) == last
    assert caught.value.hint is not None
    assert f"vmpatch reroot --kernel {build / 'vmlinux'} {modules}" in caught.value.hint
    assert contents(stage) == before  # the other four modules were not appended either
