# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify --kernel bzImage`` agrees with the real kernel booted from that bzImage.

The e2e ``artifacts/bzImage`` is the base kernel as x86 ships /boot/vmlinuz,
carrying the blank root. The 16 real modules are installed and re-rooted
onto a copy of ``artifacts/vmlinux`` (their proofs are right for that root),
then judged against the bzImage: vmpatch must say REJECT for every one, and
``boot-check.sh`` booting the bzImage must refuse every one. The same tree
against the re-rooted vmlinux is ACCEPT throughout (tests/test_reroot_kernel.py
boots that case).

bzImages that carry a root (``BZIMAGE_ROOT=... build-variants.sh``, one per
kernel compression) exist only after ``build-kernel.sh`` (about 10 minutes on
2 cores): that part is opt-in, ``VMPATCH_E2E_BZIMAGES=1``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from clirun import vmpatch
from conftest import require
from test_reroot_kernel import ARTIFACTS, _boot, _install_tree
from test_reroot_kernel import judge as judge  # the fixture: QEMU, busybox, cc

BZIMAGE_CODECS = ("gzip", "bzip2", "lzma", "xz", "lzo", "lz4", "zstd")


def _proved_tree(tmp_path: Path) -> tuple[Path, Path]:
    """The 16 modules, proved for the root ``vmpatch reroot`` puts into a vmlinux copy."""
    kernel = tmp_path / "vmlinux"
    shutil.copy(ARTIFACTS / "vmlinux", kernel)
    kernel.chmod(0o644)
    tree = _install_tree(tmp_path, None)
    run = vmpatch("reroot", "--kernel", kernel, tree, "--json")
    assert run.returncode == 0, run.stderr
    return kernel, tree


def _verdicts(kernel: Path, tree: Path) -> dict[str, dict[str, str]]:
    run = vmpatch(
        "verify", "--kernel", kernel, "--modules", tree, "--config", ARTIFACTS / "config", "--json"
    )
    assert run.returncode in (0, 1), run.stderr
    report = run.json()
    assert report["enforcement"]["mode"] == "enforcing"  # CONFIG_MODULE_SIG_FORCE=y
    assert report["enforcement"]["assumed"] is False
    return {Path(m["path"]).name.split(".ko")[0]: m for m in report["modules"]}


@pytest.mark.usefixtures("judge")
def test_blank_root_bzimage_refuses_every_proved_module(tmp_path: Path) -> None:
    vmlinux, tree = _proved_tree(tmp_path)
    bzimage = ARTIFACTS / "bzImage"
    require(bzimage.is_file(), f"{bzimage} is missing")
    accepted = _verdicts(vmlinux, tree)
    assert {m["verdict"] for m in accepted.values()} == {"ACCEPT"}
    said = _verdicts(bzimage, tree)
    assert {m["verdict"] for m in said.values()} == {"REJECT"}
    assert {m["result"] for m in said.values()} == {"EKEYREJECTED"}
    booted = _boot(bzimage, tree)
    assert set(booted) == set(said), (booted, said)
    for name, state in booted.items():
        # busybox insmod prints strerror(EKEYREJECTED).
        assert state.startswith("FAIL") and "Key was rejected by service" in state, (name, state)


@pytest.mark.skipif(
    os.environ.get("VMPATCH_E2E_BZIMAGES") != "1",
    reason="opt-in: VMPATCH_E2E_BZIMAGES=1 (needs build-kernel.sh, then "
    "BZIMAGE_ROOT=results/root.bin build-variants.sh)",
)
@pytest.mark.usefixtures("judge")
@pytest.mark.parametrize("codec", BZIMAGE_CODECS)
def test_bzimages_carrying_a_root(tmp_path: Path, codec: str) -> None:
    """``bzImage-patched-CODEC`` carries results/root.bin's root: every proved module loads."""
    image = ARTIFACTS / f"bzImage-patched-{codec}"
    require(image.is_file(), f"{image} is missing: run BZIMAGE_ROOT=... build-variants.sh")
    _vmlinux, tree = _proved_tree(tmp_path)
    said = _verdicts(image, tree)
    booted = _boot(image, tree)
    assert set(booted) == set(said)
    for name, state in booted.items():
        assert (state == "OK") == (said[name]["verdict"] == "ACCEPT"), (name, state, said[name])
