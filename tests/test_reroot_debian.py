# SPDX-License-Identifier: GPL-2.0-or-later
"""Opt-in (VMPATCH_DEBIAN=1): re-root Debian's real 6.12 kernel package, then verify it.

Debian's ``linux-image-6.12.117+deb12-amd64-unsigned`` (6.12.117-1~deb12u1)
holds 4230 modules, every one a ``.ko.xz`` carrying a PKCS#7 signature, and
the installed-form ``modules.order``: the packager's real case. The package
is fetched with ``apt-get download`` into ``$VMPATCH_CACHE`` (default
``~/.cache/vmpatch-tests``; a ``.deb`` already there is used) and unpacked
once with ``dpkg-deb -x``. Debian's kernel has no ``.module_hashes``, so the
root goes into a copy of the e2e harness's vmlinux, which has the section:
any kernel with it serves as the root's carrier. The tree is re-rooted with
``--output`` (the unpacked package stays as it was), and ``vmpatch verify``
must then accept every module. It takes 15 minutes or more on two cores.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from clirun import tool, vmpatch
from conftest import ROOT, require, require_tool

pytestmark = pytest.mark.skipif(
    os.environ.get("VMPATCH_DEBIAN") != "1",
    reason="downloads and re-roots Debian's 4230-module kernel package; set VMPATCH_DEBIAN=1",
)

PACKAGE = "linux-image-6.12.117+deb12-amd64-unsigned"
KVER = "6.12.117+deb12-amd64"
MODULES = 4230
E2E = Path(os.environ.get("VMPATCH_SHARED", ROOT.parent / "shared")) / "e2e"


def _cache() -> Path:
    root = Path(os.environ.get("VMPATCH_CACHE") or Path.home() / ".cache" / "vmpatch-tests")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _unpacked() -> Path:
    """The package's ``lib/modules/KVER``, downloaded and unpacked once into the cache."""
    cache = _cache()
    unpacked = cache / f"{PACKAGE}-unpacked"
    tree = unpacked / "lib" / "modules" / KVER
    if (tree / "modules.order").is_file():
        return tree
    debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        tool(require_tool("apt-get"), "-qq", "download", PACKAGE, cwd=cache)
        debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    assert debs, f"apt-get download {PACKAGE} left no .deb in {cache}"
    partial = cache / f"{PACKAGE}-unpacking"
    shutil.rmtree(partial, ignore_errors=True)
    tool(require_tool("dpkg-deb"), "-x", debs[-1], partial)
    partial.rename(unpacked)  # only a complete unpack gets the name
    return tree


def test_debian_package_re_roots_and_every_module_verifies(tmp_path: Path) -> None:
    carrier = E2E / "artifacts" / "vmlinux"
    require(carrier.is_file(), f"{carrier} is missing (the e2e harness's kernel)")
    tree = _unpacked()
    order = (tree / "modules.order").read_text().splitlines()
    assert len(order) == MODULES, len(order)
    kernel = tmp_path / "vmlinux"
    shutil.copy(carrier, kernel)
    out = tmp_path / KVER
    run = vmpatch("reroot", "--kernel", kernel, "--output", out, tree, "--json", timeout=None)
    assert run.returncode == 0, run.stderr
    doc = run.json()
    assert doc["layout"] == "installed" and doc["module_count"] == MODULES
    placed = [m for m in doc["modules"] if m["position"] is not None]
    assert [m["codec"] for m in placed] == ["xz"] * MODULES
    assert {m["action"] for m in placed} == {"replaced a signature"}
    assert all(m["verdict"] == "ACCEPT" for m in placed)
    assert kernel.read_bytes() == carrier.read_bytes()  # --output: the copy was patched
    verify = vmpatch(
        "verify", "--kernel", out / "vmlinux", "--modules", out, "--json", timeout=None
    )
    assert verify.returncode == 0, verify.stderr
    counts = verify.json()["counts"]
    assert counts == {"accept": MODULES, "reject": 0, "unchecked": 0, "error": 0}, counts
