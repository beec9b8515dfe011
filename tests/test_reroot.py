# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch reroot`` over the miniature install tree and the miniature kbuild tree.

The evidence is independent of vmpatch: modules are decompressed with the
xz/zstd/gzip command-line tools, trailers are cut with the layout of
docs/format.md section 3 written out here, and the expected root is computed
from section 2's formulas with hashlib. vmpatch's own verify then judges the
result, and a second run must leave every file exactly as it was (content,
inode, mtime and the directory listing).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import struct
import time
from pathlib import Path

import pytest
from clirun import PIPE, Process, spawn_vmpatch, tool, tool_text, vmpatch
from conftest import TESTDATA, require_tool
from formatref import INFO, MARKER, peel_one, peel_trailers, reference_root_of

INSTALLED = TESTDATA / "installed-x86_64" / "lib" / "modules" / "6.12.0-vmpatch"
KBUILD = TESTDATA / "kbuild-x86_64"
DECOMPRESS = {".xz": ["xz", "-dc"], ".zst": ["zstd", "-dcq"], ".gz": ["gzip", "-dc"]}


def kernel_visible(path: Path) -> bytes:
    """The module as the kernel sees it, decompressed by the real tool."""
    for suffix, argv in DECOMPRESS.items():
        if path.name.endswith(suffix):
            require_tool(argv[0])
            return bytes(tool(*argv, path).stdout)
    return path.read_bytes()


def order_files(tree: Path) -> list[Path]:
    files = []
    for line in (tree / "modules.order").read_text().splitlines():
        (found,) = [p for p in tree.glob(line + "*") if p.name.startswith(Path(line).name)]
        files.append(found)
    return files


def snapshot(top: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file and directory under ``top`` with inode, size, mtime and content digest."""
    out = {}
    for path in sorted([top, *top.rglob("*")]):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(top))] = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
    return out


def assert_tree_verifies(kernel: Path, tree: Path) -> None:
    """Every module of modules.order loads; the one out-of-tree module (never given a
    position: no --extra) is listed apart as unlisted, and refused, so verify exits 1."""
    run = vmpatch("verify", "--kernel", kernel, "--modules", tree, "--json")
    doc = run.json()
    assert doc["counts"]["reject"] == 0 and doc["counts"]["accept"] == 5, doc["counts"]
    assert [m["path"].rsplit("/", 1)[-1] for m in doc["unlisted"]] == ["toy_extra.ko.xz"]
    assert doc["unlisted"][0]["verdict"] == "REJECT"
    assert run.returncode == 1, run.stderr


@pytest.fixture
def staged(tmp_path: Path) -> tuple[Path, Path]:
    """A writable copy of the install tree and of the kernel it belongs to."""
    tree = tmp_path / "lib" / "modules" / "6.12.0-vmpatch"
    shutil.copytree(INSTALLED, tree)
    kernel = tmp_path / "vmlinux"
    shutil.copy(KBUILD / "vmlinux", kernel)
    return tree, kernel


def test_install_tree_is_re_rooted_exactly(staged: tuple[Path, Path]) -> None:
    tree, kernel = staged
    before = [kernel_visible(p) for p in order_files(tree)]
    run = vmpatch("reroot", "--kernel", kernel, tree, "--json")
    assert run.returncode == 0, run.stderr
    doc = run.json()
    levels, root = reference_root_of([peel_trailers(data)[0] for data in before])
    assert (doc["layout"], doc["levels"], doc["root"]) == ("installed", levels, root.hex())
    # The kernel image carries the root in its section (little-endian levels, x86_64).
    located = vmpatch("inspect", "--json", kernel).json()["files"][0]
    assert (located["levels"], located["root"]) == (levels, root.hex())
    for position, path in enumerate(order_files(tree)):
        data = kernel_visible(path)
        base, kinds = peel_trailers(data)
        assert kinds == [3], f"{path.name}: exactly one trailer, a proof: {kinds}"
        assert base == peel_trailers(before[position])[0], path.name
        proof = data[len(base) : len(data) - len(MARKER) - INFO.size]
        assert struct.unpack(">I", proof[:4])[0] == position
        assert len(proof) == 4 + 32 * levels
    actions = {m["path"].split("/")[-1]: m["action"] for m in doc["modules"]}
    assert actions == {
        "dummy_net.ko.xz": "proved",
        "tinyfs.ko.gz": "replaced a signature",
        "crc_toy.ko.xz": "replaced a proof",
        "toy_char.ko.zst": "replaced a signature",
        "zz_first.ko": "replaced a signature",
        "toy_extra.ko.xz": "not in tree",
    }
    assert all(m["verdict"] == "ACCEPT" for m in doc["modules"] if m["position"] is not None)
    assert_tree_verifies(kernel, tree)


def test_codecs_and_kbuild_compression_parameters_are_kept(staged: tuple[Path, Path]) -> None:
    tree, kernel = staged
    assert vmpatch("reroot", "--kernel", kernel, tree).returncode == 0
    require_tool("xz")
    for path in order_files(tree):
        head = path.read_bytes()[:6]
        if path.name.endswith(".xz"):
            assert head == b"\xfd7zXZ\x00"
            listing = tool_text("xz", "--robot", "--list", "-vv", path)
            assert "\tCRC32\t" in listing, listing  # kbuild's --check=crc32
            assert "dict=1MiB" in listing or "1048576" in listing, listing
        elif path.name.endswith(".zst"):
            assert head[:4] == b"\x28\xb5\x2f\xfd"
        elif path.name.endswith(".gz"):
            assert head[:2] == b"\x1f\x8b"
            assert head[3] & 0x08 == 0  # no file name, like gzip -n
        else:
            assert head[:4] == b"\x7fELF"


def test_a_second_run_writes_nothing(staged: tuple[Path, Path]) -> None:
    tree, kernel = staged
    assert vmpatch("reroot", "--kernel", kernel, tree).returncode == 0
    before, kernel_before = snapshot(tree.parent.parent.parent), kernel.stat()
    time.sleep(0.01)
    again = vmpatch("reroot", "--kernel", kernel, tree, "--json")
    assert again.returncode == 0, again.stderr
    assert again.json()["state"] == "already re-rooted"
    assert again.json()["files_rewritten"] == 0
    assert snapshot(tree.parent.parent.parent) == before
    assert kernel.stat().st_mtime_ns == kernel_before.st_mtime_ns
    assert "already re-rooted" in vmpatch("reroot", "--kernel", kernel, tree).stdout


def test_output_leaves_the_tree_and_kernel_untouched(tmp_path: Path) -> None:
    before = snapshot(INSTALLED)
    kernel_digest = hashlib.sha256((KBUILD / "vmlinux").read_bytes()).hexdigest()
    out = tmp_path / "new"
    run = vmpatch("reroot", "--kernel", KBUILD / "vmlinux", "--output", out, INSTALLED, "--json")
    assert run.returncode == 0, run.stderr
    assert snapshot(INSTALLED) == before
    assert hashlib.sha256((KBUILD / "vmlinux").read_bytes()).hexdigest() == kernel_digest
    assert_tree_verifies(out / "vmlinux", out)
    assert (out / "modules.leaves").is_file()


def test_dry_run_writes_nothing_and_says_what_would_change(staged: tuple[Path, Path]) -> None:
    tree, kernel = staged
    before = snapshot(tree.parent.parent.parent)
    run = vmpatch("reroot", "--dry-run", "--kernel", kernel, tree, "--json")
    assert run.returncode == 0, run.stderr
    assert run.json()["state"] == "would re-root"
    assert snapshot(tree.parent.parent.parent) == before


def test_keep_signatures_hashes_them_in_place(staged: tuple[Path, Path]) -> None:
    tree, kernel = staged
    before = [kernel_visible(p) for p in order_files(tree)]
    run = vmpatch("reroot", "--keep-signatures", "--kernel", kernel, tree, "--json")
    assert run.returncode == 0, run.stderr
    # What is hashed: each module with its stale proofs cut, its signature kept.
    expected = []
    for data in before:
        while data.endswith(MARKER) and data[-len(MARKER) - INFO.size + 2] == 3:  # id_type: a proof
            data = peel_one(data)
        expected.append(data)
    _levels, root = reference_root_of(expected)
    assert run.json()["root"] == root.hex()
    signed = [p for p in order_files(tree) if peel_trailers(kernel_visible(p))[1] == [3, 2]]
    assert len(signed) == 3
    assert_tree_verifies(kernel, tree)


def test_extra_modules_take_the_positions_after_the_tree(staged: tuple[Path, Path]) -> None:
    tree, kernel = staged
    run = vmpatch("reroot", "--kernel", kernel, "--extra", tree / "updates", tree, "--json")
    assert run.returncode == 0, run.stderr
    extra = [m for m in run.json()["modules"] if m["extra"]]
    assert [(m["position"], m["path"]) for m in extra] == [(5, "updates/toy_extra.ko.xz")]
    manifest = (tree / "modules.leaves").read_text().splitlines()
    assert manifest[-1].startswith("5 updates/toy_extra.ko.xz ")
    # Without --extra the manifest keeps the position: nothing to do the second time.
    again = vmpatch("reroot", "--kernel", kernel, tree, "--json")
    assert again.returncode == 0, again.stderr
    assert again.json()["state"] == "already re-rooted"


def test_kbuild_tree_gets_proofs_and_root_and_keeps_its_modules(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    shutil.copytree(KBUILD, tree)
    modules = {p: p.read_bytes() for p in tree.rglob("*.ko")}
    run = vmpatch("reroot", tree, "--json")
    assert run.returncode == 0, run.stderr
    assert run.json()["layout"] == "kbuild"
    assert {p: p.read_bytes() for p in tree.rglob("*.ko")} == modules
    lines = (tree / "modules.order").read_text().splitlines()
    levels, root = reference_root_of([(tree / (line[:-2] + ".ko")).read_bytes() for line in lines])
    assert (run.json()["levels"], run.json()["root"]) == (levels, root.hex())
    assert vmpatch("inspect", "--json", tree / "vmlinux").json()["files"][0]["root"] == root.hex()
    before = snapshot(tree)
    assert vmpatch("reroot", tree).returncode == 0
    assert snapshot(tree) == before


def test_a_proved_build_tree_module_is_refused_before_any_write(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    shutil.copytree(KBUILD, tree)
    with open(tree / "lib" / "crc_toy.ko", "ab") as module:
        module.write(b"\0" * 36 + INFO.pack(0, 0, 3, 0, 0, 36) + MARKER)
    before = snapshot(tree)
    run = vmpatch("reroot", tree)
    assert run.returncode == 2
    assert "crc_toy.ko" in run.stderr and "strip-proof --all" in run.stderr
    assert snapshot(tree) == before


@pytest.mark.parametrize(
    "damage, code, words",
    [
        ("missing", 2, "installed module not found"),
        ("two codecs", 2, "both exist"),
        ("corrupt", 2, "corrupt xz data"),
        ("malformed trailer", 2, "malformed trailer"),
        ("link outside", 2, "outside"),
    ],
)
def test_bad_trees_change_nothing(
    staged: tuple[Path, Path], tmp_path: Path, damage: str, code: int, words: str
) -> None:
    tree, kernel = staged
    crc = tree / "kernel" / "lib" / "crc_toy.ko.xz"
    if damage == "missing":
        crc.unlink()
    elif damage == "two codecs":
        shutil.copy(crc, crc.with_name("crc_toy.ko"))
    elif damage == "corrupt":
        data = bytearray(crc.read_bytes())
        data[len(data) // 2] ^= 0xFF
        crc.write_bytes(bytes(data))
    elif damage == "malformed trailer":
        zz = tree / "kernel" / "lib" / "zz_first.ko"
        zz.write_bytes(zz.read_bytes() + INFO.pack(0, 0, 3, 0, 0, 1 << 30) + MARKER)
    else:
        outside = tmp_path / "elsewhere.ko.xz"
        crc.rename(outside)
        crc.symlink_to(outside)
    before, kernel_before = snapshot(tree), kernel.read_bytes()
    run = vmpatch("reroot", "--kernel", kernel, tree)
    assert run.returncode == code, run
    assert words in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: "), run.stderr
    assert snapshot(tree) == before and kernel.read_bytes() == kernel_before


def test_links_out_of_the_tree_become_files_only_when_asked(
    staged: tuple[Path, Path], tmp_path: Path
) -> None:
    tree, kernel = staged
    crc = tree / "kernel" / "lib" / "crc_toy.ko.xz"
    outside = tmp_path / "elsewhere.ko.xz"
    crc.rename(outside)
    crc.symlink_to(outside)
    kept = outside.read_bytes()
    run = vmpatch("reroot", "--replace-links", "--kernel", kernel, tree)
    assert run.returncode == 0, run.stderr
    assert not crc.is_symlink() and outside.read_bytes() == kept


def test_install_tree_needs_a_kernel(staged: tuple[Path, Path]) -> None:
    tree, _ = staged
    run = vmpatch("reroot", tree)
    assert run.returncode == 2 and "--kernel" in run.stderr, run.stderr


def test_source_date_epoch_and_ima_signatures(staged: tuple[Path, Path]) -> None:
    tree, kernel = staged
    module = tree / "kernel" / "drivers" / "net" / "dummy_net.ko.xz"
    try:
        os.setxattr(module, "user.vmpatch-test", b"kept")
        os.setxattr(module, "security.ima", b"\x03\x02stale")
    except OSError as err:
        pytest.skip(f"this filesystem takes no such xattrs: {err}")
    run = vmpatch("reroot", "--kernel", kernel, tree, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert run.returncode == 0, run.stderr
    assert module.stat().st_mtime_ns == 1700000000 * 10**9
    assert os.getxattr(module, "user.vmpatch-test") == b"kept"
    assert "security.ima" not in os.listxattr(module)
    assert "dropped kernel/drivers/net/dummy_net.ko.xz: security.ima" in run.stderr


def test_a_second_process_waits_or_refuses(staged: tuple[Path, Path]) -> None:
    tree, kernel = staged
    fd = os.open(tree, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        refused = vmpatch("reroot", "--no-wait", "--kernel", kernel, tree)
        assert refused.returncode == 3 and "another vmpatch process" in refused.stderr
        waiting = spawn_vmpatch(
            "reroot", "--kernel", kernel, tree, text=True, stdout=PIPE, stderr=PIPE
        )
        assert waiting.stderr is not None
        # Its first words, while the lock is held (a loaded machine may take
        # seconds to start Python; readline waits for them).
        first = waiting.stderr.readline()
        assert "waiting for another vmpatch process" in first, first
        assert waiting.poll() is None, "the second run did not wait for the lock"
    finally:
        os.close(fd)  # releases the lock
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, first + err


# ---------------------------------------------------------------------------
# Interruption: a tree big enough that kills land inside the work


def _big_tree(top: Path, count: int = 160) -> tuple[Path, Path]:
    """``count`` gzip/xz/zstd/plain modules (copies of real ones) in an install tree."""
    import gzip
    import lzma

    import zstandard

    tree = top / "lib" / "modules" / "6.12.0-big"
    sources = sorted(KBUILD.rglob("*.ko"))
    lines = []
    for i in range(count):
        data = sources[i % len(sources)].read_bytes() + b"\0" * i  # distinct bytes per module
        rel = f"kernel/m{i // 40}/mod{i:04d}.ko"
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        codec = ("gz", "gz", "xz", "zst", "")[i % 5]
        if codec == "gz":
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, mtime=0))
        elif codec == "xz":
            path.with_name(path.name + ".xz").write_bytes(
                lzma.compress(data, check=lzma.CHECK_CRC32)
            )
        elif codec == "zst":
            path.with_name(path.name + ".zst").write_bytes(zstandard.compress(data))
        else:
            path.write_bytes(data)
        lines.append(rel + "\n")
    (tree / "modules.order").write_text("".join(lines))
    kernel = top / "vmlinux"
    shutil.copy(KBUILD / "vmlinux", kernel)
    return tree, kernel


def _contents(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def _start(kernel: Path, tree: Path) -> Process[str]:
    return spawn_vmpatch("reroot", "--kernel", kernel, tree, text=True, stderr=PIPE)


def _staging_began(top: Path, proc: Process[str], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(top.rglob("*.vmpatch-tmp")):
            return True
        time.sleep(0.002)
    return False


def test_sigterm_stops_cleanly_while_staging(tmp_path: Path) -> None:
    tree, kernel = _big_tree(tmp_path, count=400)
    old = _contents(tmp_path)
    proc = _start(kernel, tree)
    assert _staging_began(tmp_path, proc), "the run ended before it staged a file"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert not list(tmp_path.rglob("*.vmpatch-tmp"))
    assert _contents(tmp_path) == old  # stopped before the renames: nothing changed
    assert vmpatch("reroot", "--kernel", kernel, tree).returncode == 0


def test_killed_at_50_moments_every_file_is_old_or_new_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    pristine = tmp_path / "pristine"
    tree_rel = Path("lib/modules/6.12.0-big")
    _big_tree(pristine, count=60)
    old = _contents(pristine)
    done_dir = tmp_path / "done"
    shutil.copytree(pristine, done_dir)
    start = time.monotonic()
    assert vmpatch("reroot", "--kernel", done_dir / "vmlinux", done_dir / tree_rel).returncode == 0
    duration = time.monotonic() - start
    new = _contents(done_dir)
    work = tmp_path / "work"
    landed: dict[str, int] = {}
    for k in range(50):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        proc = _start(work / "vmlinux", work / tree_rel)
        time.sleep(duration * 1.2 * k / 50)
        proc.kill()
        proc.wait()
        now = _contents(work)
        temps = [name for name in now if name.endswith(".vmpatch-tmp")]
        files = {name: data for name, data in now.items() if name not in temps}
        for name, data in files.items():
            assert data in (old.get(name), new.get(name)), (
                f"kill {k}: {name} is neither old nor new"
            )
        changed = sum(1 for name, data in files.items() if data != old.get(name))
        where = (
            "before any write"
            if not temps and not changed
            else "staging"
            if temps and not changed
            else "renaming"
            if changed < len([n for n in new if new[n] != old.get(n)])
            else "done"
        )
        landed[where] = landed.get(where, 0) + 1
        finish = vmpatch("reroot", "--kernel", work / "vmlinux", work / tree_rel)
        assert finish.returncode == 0, f"kill {k}: {finish.stderr}"
        assert _contents(work) == new, f"kill {k}: the re-run did not end fully re-rooted"
    assert landed.get("staging", 0) + landed.get("renaming", 0) >= 5, landed
