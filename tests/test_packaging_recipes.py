# SPDX-License-Identifier: GPL-2.0-or-later
"""The Debian, RPM and Arch recipes (packaging/), each proved by building a real package.

dpkg-buildpackage, rpmbuild and makepkg build the miniature kbuild tree into
a package; the package is unpacked with the distro's own tool (dpkg-deb -x,
rpm2cpio | cpio, bsdtar -x) and every module inside must load against the
packaged vmlinux: by the independent check of tests/pkgcheck.py (objcopy,
xz/zstd, hashlib) and by ``vmpatch verify``. Each recipe's wrong-order build
(re-root, then a step that strips) must really change the modules and be
caught.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clirun import ROOT, execute, tool, vmpatch
from conftest import TESTDATA, require, require_tool
from pkgcheck import order_files, problems

PACKAGING = ROOT / "packaging"
KVER = "6.12.0-vmpatch"
BUILT = {p.name: p.read_bytes() for p in (TESTDATA / "kbuild-x86_64").rglob("*.ko")}


def wrapper(directory: Path, python: str, root: Path) -> Path:
    """``directory/vmpatch``: this checkout's vmpatch under ``python``."""
    script = directory / "vmpatch"
    script.write_text(f'#!/bin/sh\nPYTHONPATH={root} exec {python} -m vmpatch "$@"\n')
    script.chmod(0o755)
    return script


def source_tree(top: Path) -> Path:
    """What a recipe builds from: a kbuild output tree and the install rules."""
    shutil.copytree(TESTDATA / "kbuild-x86_64", top / "build")
    shutil.copy(PACKAGING / "modinst.mk", top / "modinst.mk")
    return top


def check_package(unpacked: Path, modules: Path, tmp: Path, *, good: bool) -> None:
    vmlinux = unpacked / "boot" / f"vmlinux-{KVER}"
    found = problems(modules, vmlinux, tmp)
    verify = vmpatch("verify", "--kernel", vmlinux, "--modules", modules, "--json")
    if good:
        assert found == [] and verify.returncode == 0, (found, verify.stdout, verify.stderr)
        return
    # Wrong order: the strip after the re-root really changed the modules ...
    files = order_files(modules)
    assert all(f.name.endswith(".ko") for f in files), "must stay uncompressed to be stripped"
    assert all(f.read_bytes() != BUILT[f.name] for f in files)
    # ... and both checks catch it.
    assert len(found) == len(files), found
    assert verify.returncode == 1, verify.stdout + verify.stderr


def env_with(bin_dir: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", **extra}


@pytest.mark.parametrize("wrong", [False, True], ids=["recipe", "wrong-order"])
def test_debian_recipe(tmp_path: Path, wrong: bool) -> None:
    require_tool("dpkg-buildpackage", "dpkg-dev")
    require_tool("dh", "debhelper")
    src = source_tree(tmp_path / "src")
    shutil.copytree(PACKAGING / "debian" / "debian", src / "debian")
    (src / "packaging").mkdir()
    shutil.move(src / "modinst.mk", src / "packaging" / "modinst.mk")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper(bin_dir, sys.executable, ROOT)
    args = ["dpkg-buildpackage", "-b", "-us", "-uc", "-d"]
    env = env_with(bin_dir, WRONG_ORDER="1" if wrong else "")
    proc = tool(*args, cwd=src, env=env, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The re-root ran after dh_strip, before dh_md5sums (the recipe's claim).
    log = proc.stdout
    if not wrong:
        assert log.index("dh_strip\n") < log.index("reroot --kernel") < log.index("dh_md5sums")
    (deb,) = tmp_path.glob("linux-image-vmpatch_*.deb")
    unpacked = tmp_path / "x"
    tool("dpkg-deb", "-x", deb, unpacked)
    check_package(unpacked, unpacked / "lib" / "modules" / KVER, tmp_path, good=not wrong)


@pytest.mark.parametrize("wrong", [False, True], ids=["recipe", "wrong-order"])
def test_rpm_recipe(tmp_path: Path, wrong: bool) -> None:
    require_tool("rpmbuild", "rpm")
    require_tool("rpm2cpio", "rpm")
    require_tool("cpio", "cpio")
    require_tool("file", "file")  # brp-strip finds unstripped ELF files with file(1)
    src = source_tree(tmp_path / "src")
    wrapper(tmp_path, sys.executable, ROOT)
    args = [
        "rpmbuild",
        "-bb",
        "--nodeps",
        "--define",
        f"_topdir {tmp_path / 'top'}",
        "--define",
        f"_sourcedir {src}",
        "--define",
        f"vmpatch {tmp_path / 'vmpatch'}",
    ]
    if wrong:
        args += ["--define", "wrong_order 1"]
    proc = tool(*args, PACKAGING / "rpm" / "kernel-vmpatch.spec", text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trace = proc.stderr
    assert "brp-strip " in trace
    if not wrong:  # the re-root extends %__spec_install_post, after brp-strip
        assert trace.index("brp-strip ") < trace.index("reroot --kernel")
    (rpm,) = (tmp_path / "top" / "RPMS").rglob("*.rpm")
    unpacked = tmp_path / "x"
    unpacked.mkdir()
    payload = tool("rpm2cpio", rpm).stdout
    tool("cpio", "-idm", "--quiet", cwd=unpacked, input=payload)
    check_package(unpacked, unpacked / "lib" / "modules" / KVER, tmp_path, good=not wrong)


@dataclass(frozen=True)
class Builder:
    """Who runs makepkg: a Python and vmpatch they can read, and whether as ``nobody``."""

    top: Path  # a directory the builder can write
    python: str
    vmpatch_root: Path
    unprivileged: bool  # clirun's unprivileged=True: setpriv to nobody
    owner: str | None  # chown the work directory to this user


@pytest.fixture(scope="module")
def makepkg_builder() -> Iterator[Builder]:
    """makepkg refuses to run as root: as root, build as ``nobody``.

    The suite's interpreter may live where nobody cannot read (a pyenv under
    /root), so nobody gets a venv from the system's python3 with vmpatch's
    runtime dependencies, in a world-readable directory. Not root: makepkg
    runs as the current user with the suite's own interpreter.
    """
    top = Path(tempfile.mkdtemp(prefix="vmpatch-makepkg-"))
    try:
        if os.geteuid() != 0:
            yield Builder(top, sys.executable, ROOT, False, None)
            return
        require_tool("setpriv", "util-linux")
        system = shutil.which("python3", path="/usr/bin:/bin")
        require(system is not None, "no system python3 for the unprivileged build")
        assert system is not None
        top.chmod(0o755)
        venv = top / "venv"
        tool(system, "-m", "venv", venv)
        deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        tool(venv / "bin" / "python", "-m", "pip", "install", "-q", *deps)
        shutil.copytree(ROOT / "vmpatch", top / "lib" / "vmpatch")
        yield Builder(top, str(venv / "bin" / "python"), top / "lib", True, "nobody:nogroup")
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("wrong", [False, True], ids=["recipe", "wrong-order"])
def test_arch_recipe(makepkg_builder: Builder, tmp_path: Path, wrong: bool) -> None:
    require_tool("makepkg", "makepkg")
    require_tool("bsdtar", "libarchive-tools")
    require_tool("fakeroot", "fakeroot")
    builder = makepkg_builder
    work = Path(tempfile.mkdtemp(prefix="vmpatch-pkgbuild-", dir=builder.top))
    src = source_tree(work / "src")
    shutil.copy(PACKAGING / "arch" / "PKGBUILD", src / "PKGBUILD")
    script = wrapper(work, builder.python, builder.vmpatch_root)
    if builder.owner is not None:
        tool("chown", "-R", builder.owner, work)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "LC_ALL": "C",
        "PACMAN": "true",  # --nodeps: no pacman database is consulted
        "VMPATCH": str(script),
        "WRONG_ORDER": "1" if wrong else "",
    }
    # The whole environment is stated here (execute: no caller's variables merged in).
    proc = execute(["makepkg", "--nodeps"], env=env, cwd=src, unprivileged=builder.unprivileged)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ("Stripping unneeded symbols" in proc.stdout) == wrong
    (package,) = src.glob("linux-vmpatch-*.pkg.tar*")
    unpacked = tmp_path / "x"
    unpacked.mkdir()
    tool("bsdtar", "-xf", package, "-C", unpacked)
    check_package(unpacked, unpacked / "usr" / "lib" / "modules" / KVER, tmp_path, good=not wrong)
