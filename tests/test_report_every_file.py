# SPDX-License-Identifier: GPL-2.0-or-later
"""What multi-file commands report (issue 8, items 7 to 9), on real modules and images.

* one bad file is one entry among the results, never the end of the run;
* ACCEPT, REJECT and UNCHECKED are counted apart, and a run that checked
  nothing says so;
* a kernel whose root is still the blank placeholder is named as such, and
  an image without ``.module_hashes`` has no root (null), not a zero one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clirun import tool, vmpatch
from conftest import TESTDATA, built_modules, require_tool
from formatref import MARKER

WIDE = {"COLUMNS": "400"}  # tables wide enough that no path is folded


def corrupt_xz(tmp_path: Path) -> Path:
    bad = tmp_path / "bad.ko.xz"
    bad.write_bytes(b"\xfd7zXZ\x00" + b"\x00" * 40)  # xz magic, then nothing valid
    return bad


def unreadable(tmp_path: Path) -> Path:
    """A module path that cannot be read at all (a directory): an error, not a verdict.

    A corrupt .ko.xz is no longer that for ``verify``: the kernel's own
    decompressor refuses it with EINVAL, which is a verdict
    (testdata/decompress-matrix).
    """
    bad = tmp_path / "bad.ko.xz"
    bad.mkdir()
    return bad


def pkcs7_signed(source: Path, target: Path) -> Path:
    """A module with a (syntactically) PKCS#7 trailer, laid out as sign-file does."""
    signature = b"\x30\x03\x02\x01\x00"
    info = bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(signature).to_bytes(4, "big")
    target.write_bytes(source.read_bytes() + signature + info + MARKER)
    return target


def test_verify_reports_the_good_modules_around_a_bad_one(proved: Path, tmp_path: Path) -> None:
    good, other = built_modules(proved)[0], built_modules(proved)[3]
    bad = unreadable(tmp_path)
    run = vmpatch("verify", "--kernel", proved / "vmlinux", good, bad, other, env=WIDE)
    assert run.returncode == 2, run  # the most severe: an unreadable file (2) over none
    assert good.name in run.stdout and other.name in run.stdout
    assert run.stdout.count("ACCEPT") == 2 and "ERROR" in run.stdout
    assert f"error: {bad}:" in run.stderr
    doc = vmpatch("verify", "--json", "--kernel", proved / "vmlinux", good, bad, other).json()
    assert [m["path"] for m in doc["modules"]] == [str(good), str(bad), str(other)]
    assert [m.get("verdict") for m in doc["modules"]] == ["ACCEPT", None, "ACCEPT"]
    assert doc["modules"][1]["error"]["exit_code"] == 2
    assert doc["modules"][1]["error"]["message"].startswith(f"{bad}: ")
    assert doc["counts"] == {"accept": 2, "reject": 0, "unchecked": 0, "error": 1}


def test_a_reject_and_an_error_exit_with_the_error(proved: Path, tmp_path: Path) -> None:
    unproved = TESTDATA / "kbuild-x86_64" / "lib" / "crc_toy.ko"
    run = vmpatch("verify", "--kernel", proved / "vmlinux", unproved, unreadable(tmp_path))
    assert run.returncode == 2 and "REJECT" in run.stdout


def test_a_bad_kernel_still_stops_the_command(proved: Path, tmp_path: Path) -> None:
    junk = tmp_path / "vmlinux"
    junk.write_bytes(b"\0" * 64)
    run = vmpatch("verify", "--json", "--kernel", junk, *built_modules(proved))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"error: {junk}: ")


def test_inspect_json_keeps_the_good_files(proved: Path, tmp_path: Path) -> None:
    bad = corrupt_xz(tmp_path)
    run = vmpatch("inspect", "--json", proved / "vmlinux", bad, built_modules(proved)[1])
    assert run.returncode == 2
    files = run.json()["files"]
    assert [f.get("kind") for f in files] == ["vmlinux", None, "module"]
    assert files[1]["path"] == str(bad) and files[1]["error"]["exit_code"] == 2
    assert files[2]["trailer"]["kind"] == "merkle"
    human = vmpatch("inspect", proved / "vmlinux", bad, built_modules(proved)[1], env=WIDE)
    assert human.returncode == 2 and "module_hashes_root" in human.stdout
    assert built_modules(proved)[1].name in human.stdout and f"error: {bad}:" in human.stderr


def test_only_pkcs7_signatures_say_nothing_was_checked(proved: Path, tmp_path: Path) -> None:
    """A kernel without symbols may have MODULE_SIG: signed modules are UNCHECKED, and
    a run of them only checked nothing, which the summary must say."""
    strip = require_tool("strip", "binutils")
    kernel = tmp_path / "vmlinux.stripped"
    tool(strip, "--strip-all", "-o", kernel, proved / "vmlinux")
    plain = TESTDATA / "kbuild-x86_64"
    signed = [
        pkcs7_signed(plain / "lib" / "crc_toy.ko", tmp_path / "crc_toy.ko"),
        pkcs7_signed(plain / "lib" / "zz_first.ko", tmp_path / "zz_first.ko"),
    ]
    run = vmpatch("verify", "--kernel", kernel, *signed)
    assert run.returncode == 0, run
    assert "accepted or unchecked" not in run.stdout
    assert "2 modules: 0 accepted, 0 rejected, 2 unchecked; nothing was checked" in run.stdout
    assert "nothing was checked" in run.stderr
    doc = vmpatch("verify", "--json", "--kernel", kernel, *signed).json()
    assert doc["counts"] == {"accept": 0, "reject": 0, "unchecked": 2, "error": 0}
    assert doc["nothing_checked"] is True and doc["pkcs7_support"] == "unknown"
    mixed = vmpatch("verify", "--summary", "--kernel", kernel, signed[0], built_modules(proved)[0])
    assert mixed.stdout == "2 modules: 1 accepted, 0 rejected, 1 unchecked; 1 of 2 checked\n"


def test_failures_and_summary(proved: Path) -> None:
    broken = built_modules(proved)[2]
    data = bytearray(broken.read_bytes())
    data[100] ^= 1
    broken.write_bytes(bytes(data))
    kernel = proved / "vmlinux"
    only = vmpatch("verify", "--failures", "--kernel", kernel, "--modules", proved, env=WIDE)
    assert only.returncode == 1
    assert broken.name in only.stdout
    assert all(m.name not in only.stdout for m in built_modules(proved) if m != broken)
    assert "5 modules: 4 accepted, 1 rejected, 0 unchecked" in only.stdout
    doc = vmpatch("verify", "--failures", "--json", "--kernel", kernel, "--modules", proved).json()
    assert [m["path"] for m in doc["modules"]] == [str(broken)]
    assert doc["failures_only"] is True and doc["counts"]["accept"] == 4
    summary = vmpatch("verify", "--summary", "--kernel", kernel, "--modules", proved)
    assert summary.returncode == 1
    assert summary.stdout == "5 modules: 4 accepted, 1 rejected, 0 unchecked\n"
    both = vmpatch("verify", "--summary", "--json", "--kernel", kernel, "--modules", proved)
    assert both.returncode == 2 and "--summary" in both.stderr


def test_a_blank_root_is_named(tmp_path: Path) -> None:
    """The testdata vmlinux is as the build links it: levels 0, all-zero hash."""
    tree = tmp_path / "linux"
    shutil.copytree(TESTDATA / "kbuild-x86_64", tree)
    assert vmpatch("tree", tree).returncode == 0
    ko = built_modules(tree)[0]
    ko.write_bytes(ko.read_bytes() + ko.with_suffix(".merkle").read_bytes())
    run = vmpatch("verify", "--kernel", tree / "vmlinux", ko)
    assert run.returncode == 1
    assert "placeholder" in run.stdout  # in the table's title
    assert "blank placeholder" in run.stderr and "vmpatch patch" in run.stderr
    doc = vmpatch("verify", "--json", "--kernel", tree / "vmlinux", ko).json()
    assert (doc["placeholder"], doc["levels"], doc["root"]) == (True, 0, "00" * 32)


def test_no_section_means_no_root(proved: Path, tmp_path: Path) -> None:
    objcopy = require_tool("objcopy", "binutils-multiarch")
    image = tmp_path / "vmlinux.nohashes"
    tool(objcopy, "--remove-section", ".module_hashes", proved / "vmlinux", image)
    doc = vmpatch("verify", "--json", "--kernel", image, built_modules(proved)[0]).json()
    assert doc["module_hashes"] is False
    assert (doc["levels"], doc["root"], doc["placeholder"]) == (None, None, None)
