# SPDX-License-Identifier: GPL-2.0-or-later
"""`vmpatch verify` gives the kernel's verdict for every way a module can fail.

The tree is a copy of the miniature kbuild tree, rooted with `patch
--from-tree` and proved by plain concatenation (kbuild's `cat`), so the
modules under test are made the way kbuild makes them. Each expected errno
comes from docs/format.md section 4 (the kernel's order of checks); the real-kernel
boots of the e2e harness gave the same answers for the cases it covers
(flipped byte: ENOKEY, no proof: ENODATA, blank root: ENOPKG, foreign proof:
ENOKEY).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import clirun
import pytest
from clirun import tool, vmpatch
from conftest import TESTDATA, built_modules, require_tool

INFO_AT = -(12 + 28)  # struct module_signature starts 40 bytes before the end


def verdicts(tree: Path, *paths: Path, kernel: Path | None = None) -> tuple[int, list[Any]]:
    run = vmpatch("verify", "--json", "--kernel", kernel or tree / "vmlinux", *paths)
    assert "Traceback" not in run.stderr
    return run.returncode, run.json()["modules"]


def test_every_proved_module_is_accepted(proved: Path) -> None:
    code, results = verdicts(proved, *built_modules(proved))
    assert code == 0
    assert [r["verdict"] for r in results] == ["ACCEPT"] * 5
    assert [r["position"] for r in results] == list(range(5))


def test_modules_dir_reads_modules_order(proved: Path) -> None:
    run = vmpatch("verify", "--json", "--kernel", proved / "vmlinux", "--modules", proved)
    assert run.returncode == 0
    assert [Path(r["path"]).name for r in run.json()["modules"]] == [
        p.name for p in built_modules(proved)
    ]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def one(tree: Path, module: Path, kernel: Path | None = None) -> dict[str, Any]:
    code, results = verdicts(tree, module, kernel=kernel)
    assert code == (0 if results[0]["verdict"] != "REJECT" else 1)
    return dict(results[0])


def test_tampered_module(proved: Path) -> None:
    ko = built_modules(proved)[2]
    flip(ko, 100)
    r = one(proved, ko)
    assert (r["errno"], r["load_result"], r["lockdown_result"]) == (
        "ENOKEY",
        "EKEYREJECTED",
        "EPERM",
    )
    assert "position 2" in r["reason"]


def test_unsigned_module(proved: Path) -> None:
    ko = TESTDATA / "kbuild-x86_64" / "lib" / "crc_toy.ko"
    r = one(proved, ko)
    assert (r["verdict"], r["errno"], r["load_result"], r["trailer"]["kind"]) == (
        "REJECT",
        "ENODATA",
        "EKEYREJECTED",
        "none",
    )


def test_wrong_position(proved: Path) -> None:
    """Module 0 carrying module 1's proof: the position is bound into the leaf."""
    first, second = built_modules(proved)[:2]
    proof_of_second = (proved / "fs/tinyfs/tinyfs.merkle").read_bytes()
    plain = (TESTDATA / "kbuild-x86_64" / "drivers/net/dummy_net.ko").read_bytes()
    first.write_bytes(plain + proof_of_second)
    r = one(proved, first)
    assert (r["errno"], r["position"]) == ("ENOKEY", 1)
    assert second.exists()


def test_wrong_level_count(proved: Path, tmp_path: Path) -> None:
    """A proof from a two-module tree (1 level) against the five-module root (3 levels)."""
    small = tmp_path / "small"
    shutil.copytree(TESTDATA / "kbuild-x86_64", small)
    (small / "modules.order").write_text("drivers/net/dummy_net.o\nfs/tinyfs/tinyfs.o\n")
    assert vmpatch("tree", small).returncode == 0
    ko = built_modules(proved)[0]
    plain = (small / "drivers/net/dummy_net.ko").read_bytes()
    ko.write_bytes(plain + (small / "drivers/net/dummy_net.merkle").read_bytes())
    r = one(proved, ko)
    assert r["errno"] == "ENOPKG" and "proof has 1 levels, kernel root has 3" in r["reason"]


def test_blank_root_rejects_everything(proved: Path) -> None:
    """The unpatched image (levels 0): every proof has the wrong length."""
    code, results = verdicts(proved, *built_modules(proved), kernel=TESTDATA / "x86_64" / "vmlinux")
    assert code == 1
    assert {r["errno"] for r in results} == {"ENOPKG"}


@pytest.mark.parametrize(("offset", "errno"), [(0, "EBADMSG"), (1, "EBADMSG"), (5, "EBADMSG")])
def test_nonzero_reserved_fields(proved: Path, offset: int, errno: str) -> None:
    ko = built_modules(proved)[3]
    flip(ko, ko.stat().st_size + INFO_AT + offset)
    r = one(proved, ko)
    assert (r["errno"], r["load_result"]) == (errno, errno)  # EBADMSG is always fatal


def test_unknown_type_is_checked_before_the_other_fields(proved: Path) -> None:
    ko = built_modules(proved)[3]
    data = bytearray(ko.read_bytes())
    data[INFO_AT + 2] = 7  # id_type
    data[INFO_AT + 0] = 1  # algo: would be EBADMSG, but the type check comes first
    ko.write_bytes(bytes(data))
    assert one(proved, ko)["errno"] == "ENOPKG"


def test_sig_len_too_large(proved: Path) -> None:
    ko = built_modules(proved)[4]
    data = bytearray(ko.read_bytes())
    size = len(data)
    data[INFO_AT + 8 : INFO_AT + 12] = (size - 40).to_bytes(4, "big")  # leaves no module byte
    ko.write_bytes(bytes(data))
    assert one(proved, ko)["errno"] == "EBADMSG"


def test_pkcs7_on_a_kernel_without_module_signing(proved: Path) -> None:
    """The miniature kernel links no module_sig_check: a PKCS#7 trailer is ENOPKG."""
    ko = built_modules(proved)[1]
    plain = (TESTDATA / "kbuild-x86_64" / "fs/tinyfs/tinyfs.ko").read_bytes()
    fake_sig = b"\x30\x03\x02\x01\x00"
    info = bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(fake_sig).to_bytes(4, "big")
    ko.write_bytes(plain + fake_sig + info + b"~Module signature appended~\n")
    r = one(proved, ko)
    assert (r["errno"], r["trailer"]["kind"]) == ("ENOPKG", "pkcs7")


@pytest.mark.parametrize(("tool", "suffix"), [("gzip", ".gz"), ("xz", ".xz"), ("zstd", ".zst")])
def test_compressed_modules_are_judged_on_their_content(
    proved: Path, tool: str, suffix: str
) -> None:
    """The kernel verifies the decompressed bytes; so must verify."""
    require_tool(tool, {"gzip": "gzip", "xz": "xz-utils", "zstd": "zstd"}[tool])
    ko = built_modules(proved)[0]
    args = {"gzip": ["gzip", "-n", "-k"], "xz": ["xz", "-k", "--check=crc32", "--lzma2=dict=1MiB"]}
    clirun.tool(*args.get(tool, ["zstd", "-q", "-k"]), ko)
    compressed = ko.with_name(ko.name + suffix)
    assert one(proved, compressed)["verdict"] == "ACCEPT"
    if tool == "gzip":  # and a tampered payload inside a valid container is caught
        data = bytearray(gzip.decompress(compressed.read_bytes()))
        data[50] ^= 1
        compressed.write_bytes(gzip.compress(bytes(data), mtime=0))
        assert one(proved, compressed)["errno"] == "ENOKEY"


def test_human_output_and_exit_code(proved: Path) -> None:
    ko = built_modules(proved)[0]
    flip(ko, 64)
    run = vmpatch("verify", "--kernel", proved / "vmlinux", *built_modules(proved))
    assert run.returncode == 1
    assert "REJECT" in run.stdout and "ENOKEY" in run.stdout
    assert "5 modules: 4 accepted, 1 rejected, 0 unchecked" in run.stdout


def test_kernel_without_any_module_authentication(proved: Path, tmp_path: Path) -> None:
    """No .module_hashes and no module_sig_check: no MODULE_AUTH, every module loads."""
    objcopy = require_tool("objcopy", "binutils-multiarch")
    image = tmp_path / "vmlinux.nohashes"
    tool(objcopy, "--rename-section", ".module_hashes=.rodata.other", proved / "vmlinux", image)
    unsigned = TESTDATA / "kbuild-x86_64" / "lib" / "crc_toy.ko"
    run = vmpatch("verify", "--json", "--kernel", image, built_modules(proved)[0], unsigned)
    assert run.returncode == 0, run.stderr
    doc = run.json()
    assert (doc["module_hashes"], doc["pkcs7_support"]) == (False, "no")
    assert [(r["verdict"], r["load_result"]) for r in doc["modules"]] == [("ACCEPT", "0")] * 2


def test_kernel_with_module_signing_but_without_module_hashes() -> None:
    """MODULE_SIG without MODULE_HASHES: a Merkle proof is an unsupported type (ENOPKG)."""
    from vmpatch.merkle import MerkleTree, leaf_digest
    from vmpatch.records.root import ModuleHashesRoot
    from vmpatch.verdict import KernelModel, Pkcs7Support, kernel_verdict

    module = b"\x7fELF module bytes"
    tree = MerkleTree.from_leaves([leaf_digest(0, module), leaf_digest(1, b"other")])
    kernel = KernelModel(ModuleHashesRoot.placeholder(), merkle=False, pkcs7=Pkcs7Support.YES)
    verdict = kernel_verdict(module + tree.trailer(0), kernel)
    assert (verdict.errno, verdict.load_result) == ("ENOPKG", "EKEYREJECTED")
    assert "MODULE_HASHES" in verdict.reason
    assert kernel_verdict(module, kernel).errno == "ENODATA"


def test_root_written_for_the_other_byte_order(tmp_path: Path) -> None:
    """kbuild's .bin from a little-endian build objcopied into an s390x image.

    levels then reads as 50331648: inspect, verify and the hook must say so
    in one line (exit 2), never crash.
    """
    objcopy = require_tool("objcopy", "binutils-multiarch")
    image, blob = tmp_path / "vmlinux", tmp_path / "le.bin"
    shutil.copy(TESTDATA / "s390x" / "vmlinux", image)
    blob.write_bytes((3).to_bytes(4, "little") + bytes(range(32)))
    tool(objcopy, f"--update-section=.module_hashes={blob}", image)
    module = TESTDATA / "kbuild-x86_64" / "lib" / "crc_toy.ko"
    for run in (
        vmpatch("inspect", image),
        vmpatch("verify", "--kernel", image, module),
    ):
        assert run.returncode == 2, run
        assert "other byte order" in run.stderr and "Traceback" not in run.stderr
    (doc,) = vmpatch("inspect", "--json", image).json()["files"]
    assert doc["supported"] is False and doc["levels"] is None
