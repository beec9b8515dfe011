# SPDX-License-Identifier: GPL-2.0-or-later
"""`vmpatch tree` and `patch --from-tree` on a real (miniature) kbuild tree.

The expected root is computed here a second way, straight from docs/format.md
section 2 with hashlib; `--c-out` is checked by doing what kbuild does with
it: compile it for the target and dump the section with objcopy.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import pytest
from clirun import tool, vmpatch
from conftest import TESTDATA, require_tool
from formatref import INFO, reference_root

KBUILD = TESTDATA / "kbuild-x86_64"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    dest = tmp_path / "linux"
    shutil.copytree(KBUILD, dest)
    return dest


def test_tree_matches_the_format_rules(tree: Path) -> None:
    run = vmpatch("tree", tree, "--json")
    assert run.returncode == 0, run.stderr
    doc = run.json()
    levels, root = reference_root(tree)
    assert (doc["levels"], doc["root"], doc["module_count"]) == (levels, root.hex(), 5)
    order = (tree / "modules.order").read_text().splitlines()
    assert [(m["path"], m["position"]) for m in doc["modules"]] == [
        (str(tree / (line[:-2] + ".ko")), i) for i, line in enumerate(order)
    ]
    for i, line in enumerate((tree / "modules.order").read_text().splitlines()):
        proof = (tree / (line[:-2] + ".merkle")).read_bytes()
        assert len(proof) == 4 + 32 * levels + 12 + 28
        assert struct.unpack(">I", proof[:4])[0] == i
        assert proof.endswith(b"~Module signature appended~\n")


def test_human_output_names_levels_and_root(tree: Path) -> None:
    run = vmpatch("tree", tree)
    levels, root = reference_root(tree)
    assert run.returncode == 0
    assert f"levels  {levels}" in run.stdout and root.hex() in run.stdout


def test_root_out_takes_the_byte_order_of_the_kernel(tree: Path, tmp_path: Path) -> None:
    levels, root = reference_root(tree)
    little, big = tmp_path / "le.bin", tmp_path / "be.bin"
    assert vmpatch("tree", tree, "--no-proofs", "--root-out", little).returncode == 0
    assert little.read_bytes() == struct.pack("<I", levels) + root
    s390 = TESTDATA / "s390x" / "vmlinux"
    run = vmpatch("tree", tree, "--no-proofs", "--root-out", big, "--kernel", s390)
    assert run.returncode == 0, run.stderr
    assert big.read_bytes() == struct.pack(">I", levels) + root
    assert not list(tree.rglob("*.merkle"))


def test_root_out_never_guesses_the_byte_order(tree: Path, tmp_path: Path) -> None:
    (tree / "vmlinux").unlink()
    out = tmp_path / "root.bin"
    run = vmpatch("tree", tree, "--root-out", out)
    assert run.returncode == 2
    assert "byte order" in run.stderr and len(run.stderr.strip().splitlines()) <= 2
    assert not out.exists() and not list(tree.rglob("*.merkle"))
    run = vmpatch("tree", tree, "--root-out", out, "--byteorder", "big")
    assert run.returncode == 0 and out.read_bytes()[:4] == struct.pack(">I", 3)


@pytest.mark.parametrize(
    ("arch", "gcc", "fmt"),
    [("x86_64", "gcc", "<I"), ("s390x", "s390x-linux-gnu-gcc", ">I")],
)
def test_c_out_compiles_to_the_root_out_bytes(
    tree: Path, tmp_path: Path, arch: str, gcc: str, fmt: str
) -> None:
    """kbuild's path: compile .tmp_module_hashes.c, objcopy --dump-section the result."""
    require_tool(gcc, "gcc" if gcc == "gcc" else f"gcc-{arch}-linux-gnu")
    objcopy = require_tool("objcopy", "binutils-multiarch")
    include = tmp_path / "include" / "linux"
    include.mkdir(parents=True)
    (include / "module_hashes.h").write_text(
        "struct module_hash { unsigned char h[32]; };\n"
        "struct module_hashes_root { unsigned int levels; struct module_hash hash; };\n"
        '#define __module_hashes_section __attribute__((section(".module_hashes")))\n'
    )
    c_out, root_out = tmp_path / "root.c", tmp_path / "root.bin"
    kernel = TESTDATA / arch / "vmlinux"
    run = vmpatch(
        "tree", tree, "--no-proofs", "--c-out", c_out, "--root-out", root_out, "--kernel", kernel
    )
    assert run.returncode == 0, run.stderr
    obj, dumped = tmp_path / "root.o", tmp_path / "dumped.bin"
    tool(gcc, "-c", "-O2", f"-I{tmp_path / 'include'}", c_out, "-o", obj)
    tool(objcopy, f"--dump-section=.module_hashes={dumped}", obj)
    levels, root = reference_root(tree)
    assert dumped.read_bytes() == root_out.read_bytes() == struct.pack(fmt, levels) + root


def test_no_modules_gives_the_blank_root(tree: Path) -> None:
    (tree / "modules.order").write_text("")
    doc = vmpatch("tree", tree, "--json").json()
    assert (doc["levels"], doc["root"], doc["module_count"], doc["modules"]) == (
        0,
        "00" * 32,
        0,
        [],
    )


def test_stripped_suffix_comes_from_auto_conf(tree: Path) -> None:
    conf = tree / "include" / "config" / "auto.conf"
    conf.write_text(
        conf.read_text().replace('CONFIG_MODULE_INSTALL_STRIP=""', "CONFIG_MODULE_INSTALL_STRIP=1")
    )
    run = vmpatch("tree", tree, "--json")
    assert run.returncode == 2 and ".ko.stripped" in run.stderr  # not stripped yet
    for ko in tree.rglob("*.ko"):
        shutil.copy(ko, ko.with_name(ko.name + ".stripped"))
        (ko.with_name(ko.name + ".stripped")).write_bytes(ko.read_bytes() + b"stripped")
    doc = vmpatch("tree", tree, "--json").json()
    _, root = reference_root(tree, ".ko.stripped")
    assert (doc["suffix"], doc["root"]) == (".ko.stripped", root.hex())


BAD_ORDERS = {
    "missing module": ("lib/crc_toy.o\nlib/nothere.o\n", "line 2"),
    "absolute path": ("/lib/crc_toy.o\n", "line 1"),
    "escapes": ("lib/../../crc_toy.o\n", "escapes"),
    "not .o": ("lib/crc_toy.ko\n", "does not end in .o"),
    "crlf": ("lib/crc_toy.o\r\nlib/zz_first.o\r\n", "line 1"),
    "whitespace": ("lib/crc_toy.o \n", "whitespace"),
    "leading whitespace": (" lib/crc_toy.o\n", "whitespace"),
    "duplicate": ("lib/crc_toy.o\nlib/zz_first.o\nlib/crc_toy.o\n", "repeats line 1"),
    "empty line": ("lib/crc_toy.o\n\nlib/zz_first.o\n", "line 2"),
    "installed layout": ("kernel/lib/crc_toy.ko\n", "installed"),
}


@pytest.mark.parametrize("case", sorted(BAD_ORDERS))
def test_bad_modules_order_is_one_line_and_writes_nothing(
    tree: Path, tmp_path: Path, case: str
) -> None:
    text, expected = BAD_ORDERS[case]
    (tree / "modules.order").write_text(text)
    out = tmp_path / "root.bin"
    run = vmpatch("tree", tree, "--root-out", out, "--c-out", tmp_path / "root.c")
    assert run.returncode == 2, run
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("error:") and "modules.order" in lines[0] and expected in lines[0]
    assert "Traceback" not in run.stderr
    assert not list(tree.rglob("*.merkle")) and not out.exists()


def test_missing_modules_order(tmp_path: Path) -> None:
    run = vmpatch("tree", tmp_path)
    assert run.returncode == 2 and "modules.order" in run.stderr


def test_patch_from_tree_equals_tree_then_patch(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "vmlinux.patched"
    run = vmpatch("patch", "--from-tree", tree, "--output", out, tree / "vmlinux", "--json")
    assert run.returncode == 0, run.stderr
    levels, root = reference_root(tree)
    (image,) = run.json()["images"]
    assert image["new"] == {"levels": levels, "root": root.hex()}
    assert image["old"] == {"levels": 0, "root": "00" * 32}  # the testdata's blank root
    offset = int(image["offset"], 16)
    assert out.read_bytes()[offset : offset + 36] == struct.pack("<I", levels) + root
    assert run.json()["tree"]["module_count"] == 5
    (inspected,) = vmpatch("inspect", "--json", out).json()["files"]
    assert (inspected["levels"], inspected["root"]) == (levels, root.hex())
    assert len(list(tree.rglob("*.merkle"))) == 5


def test_patch_from_tree_writes_no_proof_when_the_image_is_bad(tree: Path) -> None:
    (tree / "vmlinux").write_bytes(b"not an elf file at all")
    run = vmpatch("patch", "--from-tree", tree, tree / "vmlinux")
    assert run.returncode == 2 and "not an ELF file" in run.stderr
    assert not list(tree.rglob("*.merkle"))


def test_stripped_suffix_comes_from_the_vmpatch_record(tree: Path) -> None:
    """Outside kbuild, `ko strip --tree` leaves a record that `tree` honours."""
    strip = require_tool("strip", "binutils")
    (tree / "include" / "config" / "auto.conf").unlink()
    run = vmpatch(
        "ko", "strip", "--install-mod-strip", "1", "--strip-program", strip, "--tree", tree
    )
    assert run.returncode == 0, run.stderr
    assert (tree / "vmpatch-strip.json").is_file()
    doc = vmpatch("tree", tree, "--json").json()
    _, root = reference_root(tree, ".ko.stripped")
    assert (doc["suffix"], doc["root"]) == (".ko.stripped", root.hex())


def test_strip_record_counts_when_auto_conf_has_no_strip_line(tree: Path) -> None:
    """An auto.conf from before patch 14 has no CONFIG_MODULE_INSTALL_STRIP line."""
    strip = require_tool("strip", "binutils")
    conf = tree / "include" / "config" / "auto.conf"
    lines = conf.read_text().splitlines()
    conf.write_text("\n".join(x for x in lines if "MODULE_INSTALL_STRIP" not in x) + "\n")
    run = vmpatch(
        "ko", "strip", "--install-mod-strip", "1", "--strip-program", strip, "--tree", tree
    )
    assert run.returncode == 0, run.stderr
    assert vmpatch("tree", tree, "--json").json()["suffix"] == ".ko.stripped"


@pytest.mark.parametrize("option", ["--root-out", "--c-out"])
def test_unwritable_root_output_is_refused_before_any_proof(
    tree: Path, tmp_path: Path, option: str
) -> None:
    (tree / "lib" / "crc_toy.ko").write_bytes(b"changed module")  # proofs would change
    before = {p: p.read_bytes() for p in tree.rglob("*.merkle")}
    for target in (tmp_path / "missing" / "x", tmp_path):  # no directory; a directory
        run = vmpatch("tree", tree, option, target)
        assert run.returncode == 2, run
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
        assert {p: p.read_bytes() for p in tree.rglob("*.merkle")} == before


def _snapshot(top: Path) -> dict[str, str]:
    """The SHA-256 of every file under ``top``: evidence that nothing changed."""
    return {
        str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(top.rglob("*"))
        if p.is_file()
    }


def _one_error_line(run_stderr: str) -> str:
    lines = run_stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in run_stderr, run_stderr
    return lines[0]


def test_the_rerooting_recipe_run_twice_refuses_before_writing(tree: Path, tmp_path: Path) -> None:
    """Issue 8.2: the second `tree` would hash the first run's proofs; it refuses instead.

    The first run is the README recipe with the proofs appended in the build
    tree itself (`ko append-tree` without --dest, as a user re-rooting in
    place does). The second `tree`, `patch --from-tree` and `append-tree
    --dest` must refuse, naming a module and its trailer, and change no file.
    """
    first = vmpatch("patch", "--from-tree", tree, tree / "vmlinux")
    assert first.returncode == 0, first.stderr
    appended = vmpatch("ko", "append-tree", tree, "--kernel", tree / "vmlinux")
    assert appended.returncode == 0, appended.stderr
    dest = tmp_path / "staged"
    for line in (tree / "modules.order").read_text().splitlines():  # a staged install
        target = dest / "kernel" / (line[:-2] + ".ko")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(KBUILD / (line[:-2] + ".ko"), target)
    before, staged_before = _snapshot(tree), _snapshot(dest)
    first_module = tree / ((tree / "modules.order").read_text().split()[0][:-2] + ".ko")
    for argv in (
        ("tree", tree, "--root-out", tmp_path / "root.bin"),
        ("patch", "--from-tree", tree, tree / "vmlinux"),
        ("ko", "append-tree", tree, "--dest", dest),
    ):
        run = vmpatch(*argv)
        assert run.returncode == 2, (argv, run.stderr)
        line = _one_error_line(run.stderr)
        assert line.startswith(f"error: {first_module}: already ends with a merkle trailer")
        assert "vmpatch ko strip-proof --all" in line
        assert _snapshot(tree) == before and _snapshot(dest) == staged_before
        assert not (tmp_path / "root.bin").exists()
    # what the message says to do works: the tree hashes as the first time
    modules = sorted(tree.rglob("*.ko"))
    assert vmpatch("ko", "strip-proof", "--all", *modules).returncode == 0
    levels, root = reference_root(tree)
    again = vmpatch("tree", tree, "--json")
    assert again.returncode == 0, again.stderr
    assert (again.json()["levels"], again.json()["root"]) == (levels, root.hex())


def test_a_signed_module_in_a_build_tree_is_refused(tree: Path) -> None:
    """A PKCS#7 trailer in a build tree (kbuild signs only at install) is named as a signature."""
    line = (tree / "modules.order").read_text().split()[2]
    module = tree / (line[:-2] + ".ko")
    sig = b"\x30\x03\x02\x01\x00"  # framing only: the refusal reads the last 40 bytes
    module.write_bytes(
        module.read_bytes() + sig + INFO.pack(0, 0, 2, 0, 0, len(sig))
        + b"~Module signature appended~\n"
    )  # fmt: skip
    before = _snapshot(tree)
    run = vmpatch("tree", tree)
    assert run.returncode == 2
    assert f"{module}: already ends with a pkcs7 trailer (a signature)" in _one_error_line(
        run.stderr
    )
    assert _snapshot(tree) == before
    # verify, which expects proofs on build-tree modules, still reads the tree
    verify = vmpatch("verify", "--json", "--kernel", tree / "vmlinux", "--modules", tree)
    assert len(verify.json()["modules"]) == 5


def _big_build(build: Path, signed: str) -> Path:
    """A build tree of 300 modules (enough to fork), ``signed`` ending with a PKCS#7 trailer."""
    lines = []
    for i in range(300):
        sub = build / f"d{i % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"m{i:03d}.ko").write_bytes(bytes([i % 251]) * (4096 + i))
        lines.append(f"d{i % 5}/m{i:03d}.o")
    (build / "modules.order").write_text("\n".join(lines) + "\n")
    module = build / signed
    sig = b"\x30\x03\x02\x01\x00"
    module.write_bytes(
        module.read_bytes() + sig + INFO.pack(0, 0, 2, 0, 0, len(sig))
        + b"~Module signature appended~\n"
    )  # fmt: skip
    return build


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_trailer_is_refused_in_a_tree_big_enough_to_fork(tmp_path: Path, workers: str) -> None:
    """With 300 modules the trailer check runs as each module is hashed (forked or not).

    One module deep in the order ends with a PKCS#7 trailer: the run is
    refused naming it, exactly as for a small tree, and nothing is written.
    """
    build = _big_build(tmp_path / "build", signed="d2/m287.ko")
    module = build / "d2" / "m287.ko"
    before = _snapshot(build)
    run = vmpatch("tree", build, "--workers", workers, "--byteorder", "little")
    assert run.returncode == 2, run.stderr
    assert f"{module}: already ends with a pkcs7 trailer (a signature)" in _one_error_line(
        run.stderr
    )
    assert _snapshot(build) == before


@pytest.mark.parametrize(("command", "workers"), [("tree", "1"), ("tree", "2"), ("verify", "")])
@pytest.mark.parametrize("kind", ["missing", "fifo", "directory"])
def test_the_first_module_that_is_no_file_is_named_in_a_big_tree(
    tmp_path: Path, workers: str, kind: str, command: str
) -> None:
    """With 300 modules, hashing (``tree``) or judging (``verify --modules``)
    checks that each module is a regular file as it opens it: planning does not
    stat them first. The refusal must still be the one planning a small tree
    makes: the first such module of modules.order, even with a later one bad too
    and an earlier one ending with a trailer (existence is checked before
    trailers); a FIFO must not hang the run."""
    import os

    build = _big_build(tmp_path / "build", signed="d2/m002.ko")
    first, later = build / "d0" / "m250.ko", build / "d0" / "m290.ko"
    for victim in (first, later):
        victim.unlink()
        if kind == "fifo":
            os.mkfifo(victim)
        elif kind == "directory":
            victim.mkdir()
    before = _snapshot(build)
    if command == "tree":
        run = vmpatch("tree", build, "--workers", workers, "--byteorder", "little", timeout=60)
    else:
        kernel = TESTDATA / "kbuild-x86_64" / "vmlinux"
        run = vmpatch("verify", "--kernel", kernel, "--modules", build)
    assert run.returncode == 2, run.stderr
    hint = " (build the modules, or check --suffix)" if kind == "missing" else ""
    assert _one_error_line(run.stderr) == (
        f"error: {build / 'modules.order'}: line 251: module {first} does not exist{hint}"
    )
    assert _snapshot(build) == before
