# SPDX-License-Identifier: GPL-2.0-or-later
"""The real kernel judges ``vmpatch reroot`` (../shared/e2e, booted in QEMU).

For each module codec an install tree is made from the e2e kernel's 16 real
modules the way a distro ships them (kbuild's compress command; some
modules signed, some carrying a stale proof), re-rooted onto a copy of the
``vmlinux-modz-CODEC`` kernel (which decompresses modules itself), and booted:
``boot-check.sh`` hands the modules to ``finit_module`` still compressed, so
the kernel's own decompressor and its own proof check decide. Plain ``.ko``
go to the base kernel through insmod. Every module must load.

Each boot takes a few seconds under TCG; the whole file about half a minute.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from clirun import tool, vmpatch
from conftest import ROOT, require, require_tool
from formatref import INFO, MARKER

#: The workspace's shared/ lies beside the clone (in CI too); VMPATCH_SHARED names another.
E2E = Path(os.environ.get("VMPATCH_SHARED", ROOT.parent / "shared")) / "e2e"
ARTIFACTS = E2E / "artifacts"

KBUILD_COMPRESS = {
    "gzip": (".gz", ["gzip", "-n", "-f"]),
    "xz": (".xz", ["xz", "--check=crc32", "--lzma2=dict=1MiB", "-f"]),
    "zstd": (".zst", ["zstd", "--rm", "-f", "-q"]),
}


def _post_processed(data: bytes, index: int) -> bytes:
    """What a packager's steps may have left on a module: nothing, a signature, a stale proof."""
    if index % 3 == 1:  # a trailer of type 2 whose bytes no kernel key would take
        blob = b"\x30\x03\x02\x01\x00"
        return data + blob + INFO.pack(0, 0, 2, 0, 0, len(blob)) + MARKER
    if index % 3 == 2:  # a proof of a 4-level tree no kernel carries
        proof = struct.pack(">I", index) + bytes(range(32)) * 4
        return data + proof + INFO.pack(0, 0, 3, 0, 0, len(proof)) + MARKER
    return data


def _install_tree(top: Path, codec: str | None) -> Path:
    tree = top / "lib" / "modules" / "6.12.117-e2e"
    lines = []
    for index, line in enumerate((ARTIFACTS / "modules.order").read_text().splitlines()):
        stem = line[: -len(".o")]
        target = tree / "kernel" / (stem + ".ko")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_post_processed((ARTIFACTS / (stem + ".ko")).read_bytes(), index))
        if codec is not None:
            tool(*KBUILD_COMPRESS[codec][1], target)
        lines.append(f"kernel/{stem}.ko\n")
    (tree / "modules.order").write_text("".join(lines))
    return tree


def _boot(kernel: Path, tree: Path) -> dict[str, str]:
    """Module name -> OK or the failure, as the booted kernel reported it."""
    results = tree.parent / f"{kernel.name}.results"
    proc = tool(
        "bash", E2E / "boot-check.sh", kernel, tree / "kernel",
        env={"RESULTS": str(results)}, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    verdicts = {}
    for row in results.read_text().splitlines():
        name, state, *message = row.split("\t")
        verdicts[name] = state if state == "OK" else f"{state} {' '.join(message)}"
    return verdicts


@pytest.fixture(scope="module")
def judge() -> None:
    require(ARTIFACTS.is_dir(), f"the real-kernel judge is missing: {E2E}")
    require_tool("qemu-system-x86_64", "qemu-system-x86")
    require(
        Path("/bin/busybox").exists(), "busybox is not installed (apt-get install busybox-static)"
    )
    require_tool("cc", "gcc")


@pytest.mark.parametrize("codec", [None, "gzip", "xz", "zstd"], ids=["plain", "gzip", "xz", "zstd"])
def test_the_kernel_loads_every_re_rooted_module(
    judge: None, tmp_path: Path, codec: str | None
) -> None:
    if codec is not None:
        require_tool(KBUILD_COMPRESS[codec][1][0])
    source = ARTIFACTS / ("vmlinux" if codec is None else f"vmlinux-modz-{codec}")
    kernel = tmp_path / source.name
    shutil.copy(source, kernel)
    kernel.chmod(0o644)
    tree = _install_tree(tmp_path, codec)
    run = vmpatch("reroot", "--kernel", kernel, tree, "--json")
    assert run.returncode == 0, run.stderr
    assert run.json()["levels"] == 4
    verdicts = _boot(kernel, tree)
    expected = {Path(line).stem for line in (ARTIFACTS / "modules.order").read_text().split()}
    assert set(verdicts) == expected, verdicts
    assert all(state == "OK" for state in verdicts.values()), verdicts


def test_the_judge_can_say_no(judge: None, tmp_path: Path) -> None:
    """The same tree before re-rooting: stale proofs, signatures and a blank root load nothing."""
    kernel = tmp_path / "vmlinux-modz-gzip"
    shutil.copy(ARTIFACTS / "vmlinux-modz-gzip", kernel)
    require_tool("gzip")
    verdicts = _boot(kernel, _install_tree(tmp_path, "gzip"))
    assert len(verdicts) == 16 and not any(state == "OK" for state in verdicts.values()), verdicts
