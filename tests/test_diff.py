# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch diff A B``: roots, then exactly the modules that differ (issue 14, item 2).

The trees compared are real: the committed kbuild tree, its install-tree
form (compressed with gzip/xz/zstd, signed with openssl, with stale proofs:
scripts/make-testdata-installed), a module rebuilt from a changed source by
make-testdata's own compiler, a module recompressed by the real ``gzip``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from builds import INSTALLED, KBUILD, copy_tree, order_stems, variant_module
from clirun import tool, vmpatch
from conftest import require_tool


def diff(*args: object, code: int) -> dict[str, object]:
    run = vmpatch("diff", *map(str, args), "--json")
    assert run.returncode == code, run.stderr
    return run.json()  # type: ignore[no-any-return]


def changes(document: dict[str, object]) -> list[tuple[str, str]]:
    return [(c["name"], c["change"]) for c in document["changes"]]  # type: ignore[index,attr-defined]


def test_a_kbuild_tree_and_its_compressed_signed_install_are_the_same() -> None:
    """Compression, signatures and stale proofs are not differences of the kernel-visible bytes."""
    document = diff(KBUILD, INSTALLED, code=0)
    assert document["same_root"] is True and document["changes"] == []
    assert document["identical"] == 5
    run = vmpatch("diff", KBUILD, INSTALLED)
    assert run.returncode == 0
    assert run.stdout.splitlines()[0] == "same root; 5 modules identical"
    # With --bytes the files differ: every installed module is compressed or carries trailers.
    document = diff("--bytes", KBUILD, INSTALLED, code=1)
    assert {kind for _, kind in changes(document)} == {"file-bytes"}
    assert len(document["changes"]) == 5  # type: ignore[arg-type]


def test_trees_that_differ_only_in_compression(tmp_path: Path) -> None:
    gzip = require_tool("gzip", "gzip")
    xz = require_tool("xz", "xz-utils")
    other = copy_tree(INSTALLED, tmp_path / "other")
    module = other / "kernel" / "lib" / "crc_toy.ko.xz"
    tool(xz, "-d", module)
    tool(gzip, "-n", other / "kernel" / "lib" / "crc_toy.ko")
    assert (other / "kernel" / "lib" / "crc_toy.ko.gz").is_file()
    assert diff(INSTALLED, other, code=0)["changes"] == []
    assert changes(diff("--bytes", INSTALLED, other, code=1)) == [("lib/crc_toy", "file-bytes")]


def test_one_byte_differs(tmp_path: Path) -> None:
    other = copy_tree(KBUILD, tmp_path / "other")
    module = other / "lib" / "zz_first.ko"
    data = bytearray(module.read_bytes())
    data[100] ^= 0xFF
    module.write_bytes(bytes(data))
    document = diff(KBUILD, other, code=1)
    assert document["same_root"] is False
    assert changes(document) == [("lib/zz_first", "changed")]
    assert document["identical"] == 4
    first = vmpatch("diff", KBUILD, other).stdout.splitlines()[0]
    assert first == "roots differ: 1 module differs: 1 changed"


def test_two_builds_that_differ_in_one_source(tmp_path: Path) -> None:
    require_tool("x86_64-linux-gnu-gcc", "gcc")
    other = copy_tree(KBUILD, tmp_path / "other")
    variant = variant_module(tmp_path / "build", "fs/tinyfs/tinyfs", 2, "toy in-memory file system")
    shutil.copyfile(variant, other / "fs" / "tinyfs" / "tinyfs.ko")
    document = diff(KBUILD, other, code=1)
    assert changes(document) == [("fs/tinyfs/tinyfs", "changed")]
    # The install tree of the first build against the second build: the same one module.
    assert changes(diff(INSTALLED, other, code=1)) == [("fs/tinyfs/tinyfs", "changed")]


def test_moved_added_and_removed(tmp_path: Path) -> None:
    other = copy_tree(KBUILD, tmp_path / "other")
    stems = order_stems(other)
    swapped = [stems[1], stems[0], *stems[2:4]]  # first two swapped, the last one removed
    shutil.copyfile(other / "drivers" / "net" / "dummy_net.ko", other / "lib" / "six.ko")
    (other / "modules.order").write_text("".join(f"{s}.o\n" for s in [*swapped, "lib/six"]))
    document = diff(KBUILD, other, code=1)
    assert sorted(changes(document)) == sorted(
        [
            (stems[0], "moved"),
            (stems[1], "moved"),
            (stems[4], "removed"),
            ("lib/six", "added"),
        ]
    )
    assert document["identical"] == 2


def test_an_image_and_a_leaf_manifest(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    shutil.copyfile(KBUILD / "vmlinux", kernel)
    out = tmp_path / "re"
    assert vmpatch("reroot", "--kernel", kernel, "--output", out, INSTALLED).returncode == 0
    manifest = out / "modules.leaves"
    document = diff(out / "vmlinux", manifest, "--modules-a", KBUILD, code=0)
    assert document["a"]["kind"] == "image"  # type: ignore[index]
    assert document["b"]["kind"] == "manifest"  # type: ignore[index]
    # The unpatched image carries the placeholder: roots differ, modules the same.
    document = diff(KBUILD / "vmlinux", manifest, "--modules-a", KBUILD, code=1)
    assert document["same_root"] is False and document["changes"] == []


@pytest.mark.parametrize("bad", ["missing", "file"])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, bad: str) -> None:
    target = tmp_path / "x"
    if bad == "file":
        target.write_bytes(b"neither a tree nor a manifest nor an image")
    run = vmpatch("diff", KBUILD, target)
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {target}")
    assert len(run.stderr.strip().splitlines()) <= 2
