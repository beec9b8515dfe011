# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify`` names why each refused module is refused (issue 14, item 1).

Every case is made from a real module and a real tool: ``strip
--strip-debug`` from binutils on a module with DWARF, a module rebuilt from a
changed source by make-testdata's own compiler, a PKCS#7 signature from
``openssl cms``, a tree with one module more hashed by ``vmpatch tree``, an
``.ko.xz`` made by ``xz`` with its default CRC64 check. The evidence each
explanation is held to is independent of the explainer: ``cmp`` for the
first differing byte, ``vmpatch tree --json`` for a tree's root, the strip
we ran ourselves.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from builds import (
    INSTALLED,
    hashed_tree,
    installed_from,
    order_stems,
    pkcs7_signed,
    variant_module,
)
from clirun import tool, tool_text, vmpatch
from conftest import require_tool


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    """(the hashed kbuild tree, its modules with their proofs appended)."""
    hashed = hashed_tree(tmp_path / "hashed")
    return hashed, installed_from(hashed, tmp_path / "installed")


def explained(*args: object, code: int = 1) -> dict[str, Any]:
    """``verify --json``: the explanation of every module that has one, by file name."""
    run = vmpatch("verify", *map(str, args), "--json")
    assert run.returncode == code, run.stderr
    return {
        Path(m["path"]).name: m["explanation"]
        for m in run.json()["modules"]
        if m.get("explanation") is not None
    }


def reappend(module: Path, proof: Path) -> None:
    """Put ``proof`` on ``module`` after removing whatever trailers it carries."""
    run = vmpatch("ko", "strip-proof", "--all", module)
    assert run.returncode == 0, run.stderr
    with module.open("ab") as out:
        out.write(proof.read_bytes())


def test_stripped_after_hashing(trees: tuple[Path, Path]) -> None:
    hashed, installed = trees
    strip = require_tool("strip", "binutils")
    module = installed / "lib" / "zz_first.ko"
    vmpatch("ko", "strip-proof", module)
    before = module.stat().st_size
    tool(strip, "--strip-debug", module)
    assert module.stat().st_size < before  # the module had debug info to lose
    with module.open("ab") as out:
        out.write((hashed / "lib" / "zz_first.merkle").read_bytes())
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed, "--tree", hashed)
    assert set(why) == {"zz_first.ko"}
    assert why["zz_first.ko"]["cause"] == "stripped-after-hashing"
    assert why["zz_first.ko"]["strip"] == ["strip", "--strip-debug"]
    assert why["zz_first.ko"]["proof_position"] == order_stems(hashed).index("lib/zz_first")
    human = vmpatch(
        "verify", "--kernel", hashed / "vmlinux", "--modules", installed, "--tree", hashed
    )
    assert "zz_first.ko: stripped-after-hashing:" in human.stdout


def test_rebuilt_from_another_source(trees: tuple[Path, Path], tmp_path: Path) -> None:
    """A module rebuilt from a changed source: the bytes differ, from the offset cmp finds."""
    hashed, installed = trees
    require_tool("x86_64-linux-gnu-gcc", "gcc")
    variant = variant_module(tmp_path / "build", "lib/crc_toy", 3, "toy checksum library")
    module = installed / "lib" / "crc_toy.ko"
    shutil.copyfile(variant, module)
    with module.open("ab") as out:
        out.write((hashed / "lib" / "crc_toy.merkle").read_bytes())
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed, "--tree", hashed)
    assert set(why) == {"crc_toy.ko"}
    assert why["crc_toy.ko"]["cause"] == "bytes-differ"
    # cmp -l lists each differing byte, 1-based offset first.
    report = tool("cmp", "-l", hashed / "lib" / "crc_toy.ko", variant, check=False, text=True)
    byte = int(report.stdout.split()[0])
    assert why["crc_toy.ko"]["first_difference"] == hex(byte - 1)


def test_signature_appended_after_the_proof(trees: tuple[Path, Path], tmp_path: Path) -> None:
    hashed, installed = trees
    require_tool("openssl", "openssl")
    module = installed / "fs" / "tinyfs" / "tinyfs.ko"
    module.write_bytes(pkcs7_signed(module.read_bytes(), tmp_path))
    # The image has MODULE_HASHES and no MODULE_SIG: it refuses the signature on top.
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed)
    assert set(why) == {"tinyfs.ko"}
    assert why["tinyfs.ko"]["cause"] == "stacked-trailer"
    assert why["tinyfs.ko"]["trailers"] == ["pkcs7", "merkle"]


def test_proof_under_a_signature(trees: tuple[Path, Path], tmp_path: Path) -> None:
    """Signed, then the proof appended on top: the kernel hashes the signature too."""
    hashed, installed = trees
    require_tool("openssl", "openssl")
    module = installed / "fs" / "tinyfs" / "tinyfs.ko"
    signed = pkcs7_signed((hashed / "fs" / "tinyfs" / "tinyfs.ko").read_bytes(), tmp_path)
    module.write_bytes(signed + (hashed / "fs" / "tinyfs" / "tinyfs.merkle").read_bytes())
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed, "--tree", hashed)
    assert why["tinyfs.ko"]["cause"] == "stacked-trailer"
    assert why["tinyfs.ko"]["trailers"] == ["merkle", "pkcs7"]


def test_proof_moved_to_another_module(trees: tuple[Path, Path]) -> None:
    hashed, installed = trees
    reappend(installed / "drivers" / "char" / "toy_char.ko", hashed / "lib" / "crc_toy.merkle")
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed, "--tree", hashed)
    stems = order_stems(hashed)
    assert why["toy_char.ko"]["cause"] == "proof-of-another-module"
    assert why["toy_char.ko"]["proof_position"] == stems.index("lib/crc_toy")
    assert why["toy_char.ko"]["expected_position"] == stems.index("drivers/char/toy_char")


@pytest.fixture
def bigger(trees: tuple[Path, Path], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The hashed tree with one module more (a sixth, at the end), hashed by vmpatch tree."""
    hashed, _ = trees
    bigger = tmp_path / "bigger"
    shutil.copytree(hashed, bigger)
    shutil.copyfile(bigger / "drivers" / "net" / "dummy_net.ko", bigger / "lib" / "six.ko")
    with (bigger / "modules.order").open("a") as order:
        order.write("lib/six.o\n")
    run = vmpatch("tree", bigger, "--json")
    assert run.returncode == 0, run.stderr
    return bigger, run.json()


def test_proof_of_a_tree_with_one_module_more(
    trees: tuple[Path, Path], bigger: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    hashed, installed = trees
    tree6, tree_json = bigger
    assert tree_json["levels"] == 3  # six modules: the same levels, another root
    reappend(installed / "lib" / "zz_first.ko", tree6 / "lib" / "zz_first.merkle")
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed, "--tree", hashed)
    assert why["zz_first.ko"]["cause"] == "other-build"
    assert why["zz_first.ko"]["other_root"] == {"levels": 3, "root": tree_json["root"]}
    assert why["zz_first.ko"]["other_kernel"] is None
    # Explained with the bigger tree itself: the proof is its own, the kernel carries another root.
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed, "--tree", tree6)
    assert why["zz_first.ko"]["cause"] == "other-build"
    assert "patched with another tree's root" in why["zz_first.ko"]["detail"]
    # An image patched with the bigger tree's root is named as the one that carries it.
    other = tmp_path / "vmlinux-six"
    shutil.copyfile(hashed / "vmlinux", other)
    assert vmpatch("patch", "--from-tree", tree6, other).returncode == 0
    why = explained(
        "--kernel",
        hashed / "vmlinux",
        "--modules",
        installed,
        "--tree",
        hashed,
        "--other-kernel",
        other,
    )
    assert why["zz_first.ko"]["other_kernel"] == str(other)
    # The sixth module's own proof claims a position the five-module tree does not have.
    six = tmp_path / "six.ko"
    shutil.copyfile(tree6 / "lib" / "six.ko", six)
    with six.open("ab") as out:
        out.write((tree6 / "lib" / "six.merkle").read_bytes())
    why = explained("--kernel", hashed / "vmlinux", six, "--tree", hashed)
    assert why["six.ko"]["cause"] == "position-beyond-tree"
    assert why["six.ko"]["tree_modules"] == 5


def test_proof_of_a_tree_of_another_size(trees: tuple[Path, Path], tmp_path: Path) -> None:
    """A tree of four modules has two levels; the kernel's root has three."""
    hashed, installed = trees
    four = tmp_path / "four"
    shutil.copytree(hashed, four)
    lines = (four / "modules.order").read_text().splitlines()
    (four / "modules.order").write_text("\n".join(lines[:4]) + "\n")
    assert vmpatch("tree", four).returncode == 0
    reappend(installed / "lib" / "crc_toy.ko", four / "lib" / "crc_toy.merkle")
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed)
    assert why["crc_toy.ko"]["cause"] == "levels-mismatch"
    assert (why["crc_toy.ko"]["proof_levels"], why["crc_toy.ko"]["kernel_levels"]) == (2, 3)


def test_compressed_in_a_form_the_kernel_refuses(trees: tuple[Path, Path], tmp_path: Path) -> None:
    hashed, installed = trees
    xz = require_tool("xz", "xz-utils")
    module = tmp_path / "zz_first.ko"
    shutil.copyfile(installed / "lib" / "zz_first.ko", module)
    tool(xz, "-f", module)  # xz's default integrity check is CRC64; the kernel's decoder has none
    why = explained("--kernel", hashed / "vmlinux", "--load-path", "in-kernel", f"{module}.xz")
    assert why["zz_first.ko.xz"]["cause"] == "decompress-refused"
    assert why["zz_first.ko.xz"]["refusal"] == "encoder-option"


def test_without_a_reference_it_says_what_to_pass(trees: tuple[Path, Path]) -> None:
    hashed, installed = trees
    module = installed / "lib" / "zz_first.ko"
    data = bytearray(module.read_bytes())
    data[0x40] ^= 1
    module.write_bytes(bytes(data))
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed)
    assert why["zz_first.ko"]["cause"] == "does-not-fold"
    assert "--tree" in why["zz_first.ko"]["hint"] and "--manifest" in why["zz_first.ko"]["hint"]
    # The same module with the tree: the flipped byte is found where it was flipped.
    why = explained("--kernel", hashed / "vmlinux", "--modules", installed, "--tree", hashed)
    assert why["zz_first.ko"]["cause"] == "bytes-differ"
    assert why["zz_first.ko"]["first_difference"] == "0x40"


def test_leaf_manifest_beside_an_install_tree(tmp_path: Path) -> None:
    """A re-rooted install tree's modules.leaves is used by default; --tree says more."""
    strip = require_tool("strip", "binutils")
    kernel = tmp_path / "vmlinux"
    shutil.copyfile(INSTALLED.parents[2].parent / "kbuild-x86_64" / "vmlinux", kernel)
    out = tmp_path / "re"
    run = vmpatch("reroot", "--kernel", kernel, "--output", out, INSTALLED)
    assert run.returncode == 0, run.stderr
    kernel = out / "vmlinux"  # with --output the patched image is written beside the copy
    module = out / "kernel" / "lib" / "zz_first.ko"
    data = module.read_bytes()
    proof = data[-(4 + 32 * 3 + 12 + 28) :]
    module.write_bytes(data[: -len(proof)])
    tool(strip, "--strip-debug", module)
    with module.open("ab") as stream:
        stream.write(proof)
    why = explained("--kernel", kernel, "--modules", out)
    assert why["zz_first.ko"]["cause"] == "bytes-differ"
    assert why["zz_first.ko"]["reference"] == str(out / "modules.leaves")
    assert (
        why["zz_first.ko"]["installed_sha256"]
        == tool_text(
            "sh", "-c", f"head -c {len(module.read_bytes()) - len(proof)} {module} | sha256sum"
        ).split()[0]
    )
    # The tree that was hashed: testdata's install tree, signatures and all.
    why = explained("--kernel", kernel, "--modules", out, "--tree", INSTALLED)
    assert why["zz_first.ko"]["cause"] == "stripped-after-hashing"


def test_accepting_runs_have_no_explanations(trees: tuple[Path, Path]) -> None:
    hashed, installed = trees
    run = vmpatch("verify", "--kernel", hashed / "vmlinux", "--modules", installed, "--json")
    assert run.returncode == 0, run.stderr
    assert all(m["explanation"] is None for m in run.json()["modules"])
