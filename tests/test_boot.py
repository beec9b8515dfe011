# SPDX-License-Identifier: GPL-2.0-or-later
"""Boot images: `inspect` and `verify --kernel` read the root through every container.

The images are scripts/make-testdata's (testdata/boot/), each wrapping a
miniature vmlinux into which the script wrote, with objcopy, a root made of
levels 3 and sha256("vmpatch boot testdata <arch>"): the expected facts below
are written down here, not taken from vmpatch. The real e2e bzImage
(../shared/e2e/artifacts/bzImage, which the kernel boots) carries the blank
root; its vmlinux beside it is read with GNU readelf as evidence.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from clirun import Run, python, spawn_tool, tool, tool_text, vmpatch
from conftest import SCRIPTS, TESTDATA, require, require_tool
from elfcorrupt import e2e_vmlinux

BOOT = TESTDATA / "boot"
E2E = e2e_vmlinux().parent  # ../shared/e2e/artifacts, as CI lays it out
VERSION = "Linux version 6.12.0-vmpatch (builder@testdata) #1 SMP"
LEVELS = 3

#: file -> (container chain, arch, byte order), as the script lays each one out.
IMAGES = {
    "x86_64/bzImage-gzip": ("bzImage > gzip > ELF", "x86_64", "little"),
    "x86_64/bzImage-bzip2": ("bzImage > bzip2 > ELF", "x86_64", "little"),
    "x86_64/bzImage-lzma": ("bzImage > lzma > ELF", "x86_64", "little"),
    "x86_64/bzImage-xz": ("bzImage > xz > ELF", "x86_64", "little"),
    "x86_64/bzImage-lz4": ("bzImage > lz4 > ELF", "x86_64", "little"),
    "x86_64/bzImage-zstd": ("bzImage > zstd > ELF", "x86_64", "little"),
    "x86_64/uki.efi": ("UKI > bzImage > zstd > ELF", "x86_64", "little"),
    "aarch64/Image": ("arm64 Image", "aarch64", "little"),
    "aarch64/Image.gz": ("gzip > arm64 Image", "aarch64", "little"),
    "aarch64/vmlinuz.efi": ("EFI zboot > gzip > arm64 Image", "aarch64", "little"),
    "riscv64/Image": ("riscv Image", "riscv64", "little"),
    "riscv64/Image.gz": ("gzip > riscv Image", "riscv64", "little"),
    "riscv64/vmlinuz.efi": ("EFI zboot > zstd > riscv Image", "riscv64", "little"),
    "arm/zImage": ("zImage > xz > arm Image", "arm", "little"),
    "s390x/bzImage": ("s390 image > gzip > s390 Image", "s390x", "big"),
}


def only(run: Run) -> dict[str, Any]:
    """The one file entry of an ``inspect --json`` document (docs/json.md: always a list)."""
    document = run.json()
    assert document["command"] == "inspect", document
    (entry,) = document["files"]
    return dict(entry)


def known_digest(arch: str) -> str:
    return hashlib.sha256(f"vmpatch boot testdata {arch}".encode()).hexdigest()


@pytest.mark.parametrize("rel", sorted(IMAGES))
def test_inspect_reads_known_root(rel: str) -> None:
    chain, arch, order = IMAGES[rel]
    run = vmpatch("inspect", "--json", BOOT / rel)
    assert run.returncode == 0, run.stderr
    facts = only(run)
    assert " > ".join(facts["chain"]) == chain
    assert (facts["arch"], facts["byteorder"]) == (arch, order)
    assert facts["version"] == VERSION
    assert facts["module_hashes"] == "present"
    assert (facts["levels"], facts["root"]) == (LEVELS, known_digest(arch))


def test_inspect_human_output_names_the_chain_and_root() -> None:
    run = vmpatch("inspect", BOOT / "arm/zImage", env={"COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert "zImage > xz > arm Image" in run.stdout
    assert known_digest("arm") in run.stdout
    assert VERSION in run.stdout


def test_lzo_payload_is_refused_with_what_to_do() -> None:
    run = vmpatch("inspect", BOOT / "x86_64/bzImage-lzo")
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {BOOT / 'x86_64/bzImage-lzo'}: lzo payload")
    assert "lzop -d" in run.stderr
    assert "Traceback" not in run.stderr


def test_lzo_payload_holds_the_known_root_by_lzop(tmp_path: Path) -> None:
    """The lzo image is well formed: lzop itself unpacks the ELF with the root."""
    lzop = require_tool("lzop", "lzop")
    data = (BOOT / "x86_64/bzImage-lzo").read_bytes()
    start = (data[0x1F1] + 1) * 512 + int.from_bytes(data[0x248:0x24C], "little")
    length = int.from_bytes(data[0x24C:0x250], "little")
    (tmp_path / "p.lzo").write_bytes(data[start : start + length - 4])  # minus size_append
    tool(lzop, "-d", "-f", "p.lzo", "-o", "vmlinux", cwd=tmp_path)
    run = vmpatch("inspect", "--json", tmp_path / "vmlinux")
    assert run.returncode == 0, run.stderr
    assert only(run)["root"] == known_digest("x86_64")


def _copy(rel: str, dst: Path, name: str) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BOOT / rel, dst / name)
    return dst / name


def test_raw_image_without_map_cannot_tell(tmp_path: Path) -> None:
    image = _copy("aarch64/Image", tmp_path, "Image")
    run = vmpatch("inspect", "--json", image)
    assert run.returncode == 0, run.stderr
    facts = only(run)
    assert facts["module_hashes"] == "unknown"
    assert facts["root"] is None
    assert "--system-map" in facts["evidence"]
    assert facts["version"] == VERSION  # the banner is found without symbols


def test_system_map_option(tmp_path: Path) -> None:
    image = _copy("riscv64/Image", tmp_path, "Image")
    run = vmpatch("inspect", "--json", "--system-map", BOOT / "riscv64/System.map", image)
    assert run.returncode == 0, run.stderr
    assert only(run)["root"] == known_digest("riscv64")


def test_map_of_another_build_is_refused(tmp_path: Path) -> None:
    image = _copy("riscv64/Image", tmp_path, "Image")
    run = vmpatch("inspect", "--system-map", BOOT / "aarch64/System.map", image)
    assert run.returncode == 2
    assert "does not belong to" in run.stderr and "linux_banner" in run.stderr


def test_debian_placeholder_map_is_recognised(tmp_path: Path) -> None:
    """Debian's /boot/System.map-KVER is one line; the real map is in the -dbg package."""
    image = _copy("aarch64/Image.gz", tmp_path, "vmlinuz-6.12.0-vmpatch")
    (tmp_path / "System.map-6.12.0-vmpatch").write_text(
        "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n"
    )
    run = vmpatch("inspect", "--json", image)
    assert run.returncode == 0, run.stderr
    facts = only(run)
    assert facts["module_hashes"] == "unknown"
    assert "/usr/lib/debug/boot/System.map-6.12.0-vmpatch" in facts["evidence"]
    assert "linux-image-6.12.0-vmpatch-dbg" in facts["evidence"]


def test_recognition_is_by_content_not_name(tmp_path: Path) -> None:
    image = _copy("s390x/bzImage", tmp_path, "Image.gz")
    shutil.copyfile(BOOT / "s390x/System.map", tmp_path / "System.map")
    run = vmpatch("inspect", "--json", image)
    assert run.returncode == 0, run.stderr
    assert only(run)["chain"][0] == "s390 image"
    assert only(run)["root"] == known_digest("s390x")


def test_verify_reads_root_from_boot_image(testdata: Path, tmp_path: Path) -> None:
    """The module proved for the bzImage's root is accepted; a blank-root kernel refuses it."""
    tree = tmp_path / "kbuild"
    shutil.copytree(testdata / "kbuild-x86_64", tree)
    vmlinux = tree / "vmlinux"
    assert vmpatch("patch", "--from-tree", tree, vmlinux).returncode == 0  # writes the proofs
    module = tree / "lib/crc_toy.ko"
    # --kernel of ko append refuses a module, before anything is written.
    before = module.read_bytes()
    refused = vmpatch("ko", "append", module, tree / "lib/crc_toy.merkle", "--kernel", module)
    assert refused.returncode == 2
    assert "a kernel module (ET_REL), not a kernel" in refused.stderr
    assert module.read_bytes() == before
    assert vmpatch("ko", "append", module, tree / "lib/crc_toy.merkle").returncode == 0
    # The tree's root is not the bzImage's known root: verify must say REJECT, exit 1.
    run = vmpatch("verify", "--kernel", BOOT / "x86_64/bzImage-xz", module)
    assert run.returncode == 1, run.stderr
    assert vmpatch("verify", "--kernel", vmlinux, module).returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ("verify", "--kernel", "{module}", "{module}"),
        ("tree", "{tree}", "--no-proofs", "--root-out", "{out}", "--kernel", "{module}"),
    ],
    ids=["verify", "tree"],
)
def test_kernel_option_refuses_a_module(
    args: tuple[str, ...], testdata: Path, tmp_path: Path
) -> None:
    module = testdata / "kbuild-x86_64/lib/crc_toy.ko"
    values = {"module": module, "tree": testdata / "kbuild-x86_64", "out": tmp_path / "root.bin"}
    run = vmpatch(*(a.format(**values) for a in args))
    assert run.returncode == 2, run.stderr
    assert f"error: {module}: a kernel module (ET_REL), not a kernel" in run.stderr
    assert not (tmp_path / "root.bin").exists()


def test_kernel_option_refuses_a_program(testdata: Path) -> None:
    program = Path(shutil.which("ls") or "/bin/ls").resolve()
    module = testdata / "kbuild-x86_64/lib/crc_toy.ko"
    run = vmpatch("verify", "--kernel", program, module)
    assert run.returncode == 2
    assert "that is not a Linux kernel: it has no linux_banner" in run.stderr


def test_kernel_option_refuses_a_core_file(tmp_path: Path, testdata: Path) -> None:
    """A real core dump, written by gdb's gcore from a running process."""
    gcore = require_tool("gcore", "gdb")
    sleeper = spawn_tool("sleep", "30")
    try:
        tool(gcore, "-o", tmp_path / "core", str(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
    core = next(tmp_path.glob("core*"))
    run = vmpatch("verify", "--kernel", core, testdata / "kbuild-x86_64/lib/crc_toy.ko")
    assert run.returncode == 2
    assert "a core file (ET_CORE), not a kernel" in run.stderr


def test_e2e_bzimage_blank_root() -> None:
    """The real kernel's bzImage: its xz payload is the stripped vmlinux with the section."""
    image = E2E / "bzImage"
    require(image.is_file(), f"{image} is missing (../shared/e2e)")
    run = vmpatch("inspect", "--json", image)
    assert run.returncode == 0, run.stderr
    facts = only(run)
    assert facts["chain"] == ["bzImage", "xz", "ELF"]
    assert (facts["arch"], facts["byteorder"]) == ("x86_64", "little")
    assert facts["version"].startswith("Linux version 6.12.")
    assert facts["module_hashes"] == "present"
    assert (facts["levels"], facts["root"]) == (0, "00" * 32)
    # Evidence: the vmlinux beside it has the section, per GNU readelf.
    readelf = require_tool("readelf", "binutils")
    sections = tool_text(readelf, "-SW", E2E / "vmlinux")
    assert " .module_hashes " in sections


def test_manifest_lists_every_boot_file() -> None:
    manifest = json.loads((TESTDATA / "MANIFEST.json").read_text())
    files = manifest["boot"]["files"]
    present = {str(p.relative_to(TESTDATA)) for p in BOOT.rglob("*") if p.is_file()}
    assert present == set(files)
    for rel, record in files.items():
        assert hashlib.sha256((TESTDATA / rel).read_bytes()).hexdigest() == record["sha256"], rel


def test_boot_images_rebuild_bit_identical(tmp_path: Path) -> None:
    for program, package in (
        ("lzop", "lzop"),
        ("lz4", "lz4"),
        ("bzip2", "bzip2"),
        ("lzma", "xz-utils"),
    ):
        require_tool(program, package)
    require(Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub").is_file(), "systemd-boot-efi")
    proc = python(SCRIPTS / "make-testdata", "--out", tmp_path, "--arch", "x86_64", "--boot")
    assert proc.returncode == 0, proc.stderr
    for rel in json.loads((TESTDATA / "MANIFEST.json").read_text())["boot"]["files"]:
        assert (tmp_path / rel).read_bytes() == (TESTDATA / rel).read_bytes(), rel


@pytest.mark.parametrize("rel", ["x86_64/bzImage-xz", "aarch64/Image.gz", "x86_64/uki.efi"])
def test_patch_refuses_boot_images_and_leaves_them(rel: str, tmp_path: Path) -> None:
    image = tmp_path / "image"
    shutil.copyfile(BOOT / rel, image)
    before = image.read_bytes()
    run = vmpatch("patch", "--root", "11" * 32, "--levels", "1", image)
    assert run.returncode == 2
    assert f"error: {image}: is a boot image" in run.stderr
    assert "rebuild" in run.stderr
    assert image.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [image]


def test_vmlinux_option_gives_the_symbols(tmp_path: Path) -> None:
    image = _copy("riscv64/Image", tmp_path, "Image")
    run = vmpatch("inspect", "--json", "--vmlinux", BOOT / "riscv64/vmlinux", image)
    assert run.returncode == 0, run.stderr
    assert only(run)["root"] == known_digest("riscv64")
    assert "riscv64/vmlinux" in only(run)["evidence"]


@pytest.mark.parametrize("reader", ["pefile", "lief"])
def test_uki_read_by_either_pe_reader(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """pefile and LIEF hand back the same .linux: the bzImage that objcopy put there."""
    require(importlib.util.find_spec(reader) is not None, f"{reader} is not installed")
    from vmpatch.boot import uki, unwrap_image

    monkeypatch.setattr(uki, "_reader", lambda: reader)
    unwrapped = unwrap_image(BOOT / "x86_64/uki.efi")
    assert unwrapped.chain == ("UKI", "bzImage", "zstd", "ELF")


def test_uki_without_a_pe_reader_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmpatch.boot import uki, unwrap_image
    from vmpatch.errors import UnsupportedLayout

    monkeypatch.setattr(uki, "_reader", lambda: None)
    with pytest.raises(UnsupportedLayout, match="pip install pefile"):
        unwrap_image(BOOT / "x86_64/uki.efi")


@pytest.mark.parametrize(
    ("rel", "cut", "reason"),
    [
        ("x86_64/bzImage-xz", 1500, "lies beyond the end of the file"),
        ("aarch64/vmlinuz.efi", 900, "lies beyond the end of the file"),
        ("aarch64/Image.gz", 500, "corrupt gzip payload"),
        ("arm/zImage", 700, "lies beyond the file"),
        ("s390x/bzImage", 0x10400, "no compressed stream followed by its decompressed size"),
    ],
)
def test_truncated_image_is_one_line_error(rel: str, cut: int, reason: str, tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.write_bytes((BOOT / rel).read_bytes()[:cut])
    run = vmpatch("inspect", image)
    assert run.returncode == 2, run.stdout
    assert run.stderr.startswith(f"error: {image}: ")
    assert reason in run.stderr
    assert len(run.stderr.splitlines()) == 1
