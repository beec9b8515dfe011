# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch patch`` against binutils, on every arch of the test data.

kbuild writes the root with ``objcopy --update-section .module_hashes=F``;
vmpatch claims to do the same thing without the target's objcopy and without
rewriting the file. These tests hold it to that claim with evidence that does
not come from vmpatch: byte comparisons with objcopy's output, offsets parsed
from ``readelf -S -W``, and the section content parsed from ``readelf -x``.
The root bytes are encoded here, by the test, in the byte order ``readelf -h``
reports, so a byte-order mistake in vmpatch cannot cancel itself out.
"""

from __future__ import annotations

import random
import shutil
import stat
import struct
from pathlib import Path

import pytest
from clirun import Run, tool
from conftest import ROOT, TESTDATA, require_tool
from elfcorrupt import (
    SECTION,
    ElfFacts,
    built_image,
    e2e_vmlinux,
    hexdump_section,
    image_ids,
    readelf_facts,
    run_vmpatch,
)

IMAGES = image_ids(TESTDATA)
SECTION_SIZE = 36

#: The real x86_64 kernel of the end-to-end job, when present (read-only, large).
E2E_VMLINUX = e2e_vmlinux()


def _image(name: str) -> Path:
    return built_image(TESTDATA, name)


def _copy(source: Path, target: Path, mode: int = 0o644) -> Path:
    shutil.copyfile(source, target)
    target.chmod(mode)
    return target


def _root_bytes(facts: ElfFacts, levels: int, digest: bytes) -> bytes:
    """The 36-byte record, ``levels`` in the byte order readelf reports for the image."""
    assert len(digest) == 32
    return struct.pack(facts.prefix + "I", levels) + digest


def _random_root(facts: ElfFacts, seed: str) -> tuple[int, bytes, bytes]:
    rng = random.Random(seed)
    levels = rng.randint(1, 31)
    digest = rng.randbytes(32)
    return levels, digest, _root_bytes(facts, levels, digest)


def _objcopy(*args: str | Path) -> None:
    tool("objcopy", *args)


def _patched(original: bytes, offset: int, payload: bytes) -> bytes:
    return original[:offset] + payload + original[offset + len(payload) :]


def _vmpatch_ok(*args: str | Path) -> Run:
    done = run_vmpatch(ROOT, *map(str, args))
    assert done.returncode == 0, f"vmpatch {args} failed: {done.stderr}"
    return done


def _is_objcopy_fixed_point(image: Path, tmp: Path) -> bool:
    """Whether a plain ``objcopy IN OUT`` reproduces IN byte for byte."""
    out = tmp / "objcopy-identity"
    _objcopy(image, out)
    return out.read_bytes() == image.read_bytes()


def _check_only_section_changed(before: bytes, after: Path, facts: ElfFacts, root: bytes) -> None:
    """``after`` is ``before`` with exactly the 36 section bytes replaced by ``root``."""
    sec = facts.section(SECTION)
    assert sec.size == SECTION_SIZE
    data = after.read_bytes()
    assert len(data) == len(before)
    assert data != before, "nothing was written"
    if data != _patched(before, sec.offset, root):
        changed = [i for i, (a, b) in enumerate(zip(before, data, strict=True)) if a != b]
        outside = [i for i in changed if not sec.offset <= i < sec.offset + SECTION_SIZE]
        pytest.fail(
            f"{after}: expected the root at {sec.offset:#x}; changed bytes outside "
            f"{SECTION}: {[hex(i) for i in outside[:8]]}, section now "
            f"{data[sec.offset : sec.offset + SECTION_SIZE].hex()}"
        )
    assert hexdump_section(after) == root


@pytest.mark.parametrize("name", IMAGES)
def test_patch_matches_objcopy_update_section(name: str, tmp_path: Path) -> None:
    """The heart of the claim: vmpatch writes what kbuild's objcopy step would write.

    On an objcopy fixed point the two outputs must be identical files. When
    objcopy re-lays the file out anyway, the comparison is made in objcopy's
    own terms (its update equals its plain copy with the section replaced),
    and vmpatch's output must still be the input with only the 36 bytes at
    readelf's ``sh_offset`` replaced.
    """
    source = _image(name)
    image = _copy(source, tmp_path / "in")
    facts = readelf_facts(image)
    _, _, root = _random_root(facts, name)
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(root)
    before = image.read_bytes()

    out1 = tmp_path / "out1"
    _vmpatch_ok("patch", "--root-file", root_file, "--output", out1, image)
    assert image.read_bytes() == before, "--output must not touch the input"
    _check_only_section_changed(before, out1, facts, root)

    out2 = tmp_path / "out2"
    _objcopy(f"--update-section={SECTION}={root_file}", image, out2)
    if _is_objcopy_fixed_point(image, tmp_path):
        assert out1.read_bytes() == out2.read_bytes(), f"{name}: vmpatch and objcopy differ"
    else:
        identity = (tmp_path / "objcopy-identity").read_bytes()
        relaid = readelf_facts(out2).section(SECTION)
        assert out2.read_bytes() == _patched(identity, relaid.offset, root)


@pytest.mark.parametrize("name", IMAGES)
def test_root_hex_equals_root_file(name: str, tmp_path: Path) -> None:
    """``--root HEX --levels N`` must encode exactly the record a --root-file carries."""
    source = _image(name)
    facts = readelf_facts(source)
    levels, digest, root = _random_root(facts, name + "hex")
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(root)
    by_file, by_hex = tmp_path / "by-file", tmp_path / "by-hex"
    _vmpatch_ok("patch", "--root-file", root_file, "--output", by_file, source)
    _vmpatch_ok(
        "patch", "--root", digest.hex(), "--levels", str(levels), "--output", by_hex, source
    )
    assert by_hex.read_bytes() == by_file.read_bytes()
    _check_only_section_changed(source.read_bytes(), by_hex, facts, root)


@pytest.mark.parametrize("name", IMAGES)
def test_in_place_patch_changes_only_the_section(name: str, tmp_path: Path) -> None:
    """Patching without --output rewrites just the 36 bytes and keeps the file's mode.

    An unusual mode (0640) makes a mode reset to the umask default visible.
    """
    source = _image(name)
    image = _copy(source, tmp_path / "vmlinux", mode=0o640)
    facts = readelf_facts(image)
    _, _, root = _random_root(facts, name + "inplace")
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(root)
    before = image.read_bytes()
    _vmpatch_ok("patch", "--root-file", root_file, image)
    _check_only_section_changed(before, image, facts, root)
    assert stat.S_IMODE(image.stat().st_mode) == 0o640


def test_output_copy_keeps_mode(tmp_path: Path) -> None:
    """An --output copy gets the input's mode, like the in-place result would have."""
    source = _image("x86_64/vmlinux")
    image = _copy(source, tmp_path / "vmlinux", mode=0o751)
    facts = readelf_facts(image)
    _, _, root = _random_root(facts, "mode")
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(root)
    out = tmp_path / "patched"
    _vmpatch_ok("patch", "--root-file", root_file, "--output", out, image)
    assert stat.S_IMODE(out.stat().st_mode) == 0o751
    _check_only_section_changed(source.read_bytes(), out, facts, root)


def test_patch_two_files_in_one_call(tmp_path: Path) -> None:
    """Both forms of one build, patched in place by one call, each get the same record."""
    files = [
        _copy(_image("aarch64/vmlinux"), tmp_path / "vmlinux"),
        _copy(_image("aarch64/vmlinux.unstripped"), tmp_path / "vmlinux.unstripped"),
    ]
    befores = [f.read_bytes() for f in files]
    facts = [readelf_facts(f) for f in files]
    _, _, root = _random_root(facts[0], "two")
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(root)
    _vmpatch_ok("patch", "--root-file", root_file, *files)
    for before, path, fact in zip(befores, files, facts, strict=True):
        _check_only_section_changed(before, path, fact, root)


def test_patch_two_byte_orders_with_root_hex(tmp_path: Path) -> None:
    """One --root/--levels call over a little- and a big-endian image encodes each natively.

    ``levels`` is a target-order u32 (docs/format.md section 1): the s390x image must
    carry it big-endian and the x86_64 image little-endian.
    """
    little = _copy(_image("x86_64/vmlinux"), tmp_path / "x86_64")
    big = _copy(_image("s390x/vmlinux.unstripped"), tmp_path / "s390x")
    befores = {p: p.read_bytes() for p in (little, big)}
    levels, digest = 7, random.Random("orders").randbytes(32)
    outs = [tmp_path / "x86_64.out", tmp_path / "s390x.out"]
    _vmpatch_ok(
        "patch", "--root", digest.hex(), "--levels", str(levels),
        "--output", outs[0], "--output", outs[1], little, big,
    )  # fmt: skip
    for source, out, order in ((little, outs[0], "<I"), (big, outs[1], ">I")):
        facts = readelf_facts(source)
        assert facts.prefix == order[0]
        expected = struct.pack(order, levels) + digest
        _check_only_section_changed(befores[source], out, facts, expected)


@pytest.mark.parametrize("name", ["x86_64/vmlinux", "s390x/vmlinux.unstripped", "arm/vmlinux"])
def test_patching_again_with_same_root_changes_nothing(name: str, tmp_path: Path) -> None:
    """A second run with the root already in place is a no-op on the bytes (idempotence)."""
    image = _copy(_image(name), tmp_path / "vmlinux")
    facts = readelf_facts(image)
    levels, digest, root = _random_root(facts, name + "again")
    _vmpatch_ok("patch", "--root", digest.hex(), "--levels", str(levels), image)
    once = image.read_bytes()
    assert hexdump_section(image) == root
    _vmpatch_ok("patch", "--root", digest.hex(), "--levels", str(levels), image)
    assert image.read_bytes() == once


def test_real_kernel_matches_objcopy(tmp_path: Path) -> None:
    """The same objcopy equivalence on a real x86_64 vmlinux (thousands of symbols, 11 MB)."""
    require_tool("objcopy", "binutils-multiarch")
    if not E2E_VMLINUX.is_file():
        pytest.skip(f"{E2E_VMLINUX} is not present (built by the end-to-end job only)")
    image = _copy(E2E_VMLINUX, tmp_path / "vmlinux")
    facts = readelf_facts(image)
    _, _, root = _random_root(facts, "e2e")
    root_file = tmp_path / "root.bin"
    root_file.write_bytes(root)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    _vmpatch_ok("patch", "--root-file", root_file, "--output", out1, image)
    _objcopy(f"--update-section={SECTION}={root_file}", image, out2)
    _check_only_section_changed(image.read_bytes(), out1, facts, root)
    if _is_objcopy_fixed_point(image, tmp_path):  # it is, with binutils 2.40
        assert out1.read_bytes() == out2.read_bytes()
    else:
        identity = (tmp_path / "objcopy-identity").read_bytes()
        relaid = readelf_facts(out2).section(SECTION)
        assert out2.read_bytes() == _patched(identity, relaid.offset, root)
