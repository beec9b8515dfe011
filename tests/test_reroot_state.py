# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch reroot``: tree states, boot images, refused inputs, kbuild's compressors, progress.

The evidence is independent of the code under test: which files changed is
read from the bytes on disk against copies taken before; a boot image's
root is the one ``inspect`` reads from the committed testdata images; kbuild
compression is compared with kbuild's own commands run here on the same
content; a part-way tree is made by a real SIGKILL of a real run.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest
from clirun import spawn_vmpatch, tool, vmpatch
from conftest import TESTDATA, require_tool
from test_reroot import INSTALLED, KBUILD, _big_tree, _contents, kernel_visible, snapshot

from vmpatch.ko.compression import Codec

KVER = "6.12.0-vmpatch"
BOOT = TESTDATA / "boot"


def _package(top: Path, usr: bool = False) -> tuple[Path, Path]:
    """A package root ``top`` holding ``[usr/]lib/modules/KVER`` and the kernel beside it."""
    tree = top / ("usr/lib" if usr else "lib") / "modules" / KVER
    shutil.copytree(INSTALLED, tree)
    kernel = top / "vmlinux"
    shutil.copy(KBUILD / "vmlinux", kernel)
    return tree, kernel


def _root_of(image: Path) -> str:
    (entry,) = vmpatch("inspect", "--json", image).json()["files"]
    return str(entry["root"])


# ---------------------------------------------------------------------------
# Boot images


@pytest.mark.parametrize(
    "usr, place",
    [(False, "boot"), (True, "boot"), (False, "vmlinuz")],
    ids=["lib-modules", "usr-lib-modules", "arch-fedora-vmlinuz"],
)
def test_an_install_trees_stale_boot_image_is_named(tmp_path: Path, usr: bool, place: str) -> None:
    tree, kernel = _package(tmp_path, usr)
    image = BOOT / "x86_64" / "bzImage-xz"
    old_root = _root_of(image)
    target = tmp_path / "boot" / f"vmlinuz-{KVER}" if place == "boot" else tree / "vmlinuz"
    target.parent.mkdir(exist_ok=True)
    shutil.copy(image, target)
    image_bytes = target.read_bytes()
    run = vmpatch("reroot", "--kernel", kernel, tree, "--json")
    assert run.returncode == 0, run.stderr
    doc = run.json()
    assert doc["root"] != old_root
    (warning,) = [w for w in doc["warnings"] if "boot image" in w]
    assert str(target) in warning and old_root in warning and doc["root"] in warning
    for step in ("make bzImage", "initramfs", "Secure Boot"):
        assert step in warning, warning
    assert target.read_bytes() == image_bytes  # read, never written
    human = vmpatch("reroot", "--dry-run", "--kernel", kernel, tree)
    assert human.returncode == 0
    assert f"{target}: this boot image carries the old root" in " ".join(human.stderr.split())


def test_a_boot_image_with_the_new_root_is_not_named(tmp_path: Path) -> None:
    tree, kernel = _package(tmp_path)
    assert vmpatch("reroot", "--kernel", kernel, tree).returncode == 0
    (tmp_path / "boot").mkdir()
    shutil.copy(kernel, tmp_path / "boot" / f"vmlinuz-{KVER}")  # a kernel carrying the new root
    again = vmpatch("reroot", "--kernel", kernel, tree, "--json")
    assert again.returncode == 0, again.stderr
    assert not [w for w in again.json()["warnings"] if "boot image" in w]


def test_a_kbuild_trees_boot_images_are_read(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    shutil.copytree(KBUILD, tree)
    boot = tree / "arch" / "x86" / "boot"
    boot.mkdir(parents=True)
    shutil.copy(BOOT / "x86_64" / "bzImage-gzip", boot / "bzImage")
    arm = tree / "arch" / "arm64" / "boot"
    arm.mkdir(parents=True)
    shutil.copy(BOOT / "aarch64" / "Image", arm / "Image")  # no System.map beside: cannot tell
    run = vmpatch("reroot", tree, "--json")
    assert run.returncode == 0, run.stderr
    warnings = run.json()["warnings"]
    assert any(str(boot / "bzImage") in w and "old root" in w for w in warnings), warnings
    assert any(str(arm / "Image") in w and "cannot tell" in w for w in warnings), warnings


# ---------------------------------------------------------------------------
# Which state the tree is in


def _dry_state(kernel: Path, tree: Path) -> str:
    run = vmpatch("reroot", "--dry-run", "--kernel", kernel, tree, "--json")
    assert run.returncode == 0, run.stderr
    return str(run.json()["state"])


def test_dry_run_tells_old_new_and_part_way(tmp_path: Path) -> None:
    tree, kernel = _package(tmp_path)
    pristine = _contents(tmp_path)
    assert _dry_state(kernel, tree) == "would re-root"  # the old root: nothing done
    assert vmpatch("reroot", "--kernel", kernel, tree).returncode == 0
    assert _dry_state(kernel, tree) == "already re-rooted"
    done = _contents(tmp_path)
    # One module back to its old bytes: the others carry their new proofs.
    name = f"lib/modules/{KVER}/kernel/drivers/net/dummy_net.ko.xz"
    (tmp_path / name).write_bytes(pristine[name])
    assert _dry_state(kernel, tree) == "part-way"
    human = vmpatch("reroot", "--dry-run", "--kernel", kernel, tree)
    assert "installed tree, part-way" in human.stdout, human.stdout
    # Every module old again, but the kernel carries the new root.
    for rel, data in pristine.items():
        if rel.startswith("lib/"):
            (tmp_path / rel).write_bytes(data)
    (tmp_path / f"lib/modules/{KVER}/modules.leaves").unlink()
    assert _dry_state(kernel, tree) == "part-way"
    finish = vmpatch("reroot", "--kernel", kernel, tree)
    assert finish.returncode == 0 and "(it was part-way)" in finish.stdout, finish.stdout
    assert _contents(tmp_path) == done


def test_a_run_killed_between_its_first_and_last_write_is_part_way(tmp_path: Path) -> None:
    """SIGKILL once the kernel is patched (its write comes before the modules' renames)."""
    pristine = tmp_path / "pristine"
    tree_rel = Path("lib/modules/6.12.0-big")
    _big_tree(pristine, count=400)
    old = _contents(pristine)
    done_dir = tmp_path / "done"
    shutil.copytree(pristine, done_dir)
    assert vmpatch("reroot", "--kernel", done_dir / "vmlinux", done_dir / tree_rel).returncode == 0
    new = _contents(done_dir)
    work = tmp_path / "work"
    for _attempt in range(10):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        kernel = work / "vmlinux"
        proc = spawn_vmpatch("reroot", "--kernel", kernel, work / tree_rel)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if kernel.read_bytes() != old["vmlinux"]:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.communicate()
        if proc.returncode != -signal.SIGKILL:
            continue  # it finished before the kill: try again
        now = {k: v for k, v in _contents(work).items() if not k.endswith(".vmpatch-tmp")}
        assert now["vmlinux"] == new["vmlinux"]
        for rel, data in now.items():
            assert data in (old.get(rel), new.get(rel)), f"{rel} is neither old nor new"
        if now == new:
            continue  # it finished every write before the kill landed
        assert _dry_state(kernel, work / tree_rel) == "part-way"
        verify = vmpatch("verify", "--kernel", kernel, "--modules", work / tree_rel, "--json")
        state = verify.json()["tree_state"]
        accepted = verify.json()["counts"]["accept"]
        assert state.endswith("(part-way: run vmpatch reroot again to finish)"), state
        assert f"(the kernel's); {accepted} of 400 modules carry proofs" in state, state
        # Part-way: the kernel is new and not every module is. The kill may land
        # before the first rename (all 400 still old) or among the renames.
        assert accepted < 400, accepted
        finish = vmpatch("reroot", "--kernel", kernel, work / tree_rel)
        assert finish.returncode == 0, finish.stderr
        assert _contents(work) == new
        return
    pytest.fail("no kill landed between the kernel's write and the last module's")


# ---------------------------------------------------------------------------
# Refused before the first write


def test_a_module_the_kernels_xz_decoder_refuses_changes_nothing(tmp_path: Path) -> None:
    require_tool("xz")
    tree, kernel = _package(tmp_path)
    module = tree / "kernel" / "lib" / "crc_toy.ko.xz"
    plain = module.with_name("crc_toy.ko")
    plain.write_bytes(kernel_visible(module))
    module.unlink()
    tool("xz", "--check=crc64", plain)  # plain xz's own default; lib/xz takes CRC32 or none
    listing = tool("xz", "--robot", "--list", module, text=True).stdout.splitlines()
    assert "\tCRC64\t" in next(line for line in listing if line.startswith("file\t"))
    before, kernel_before = snapshot(tmp_path), kernel.read_bytes()
    run = vmpatch("reroot", "--kernel", kernel, tree)
    assert run.returncode == 2, run
    assert run.stderr.startswith(f"error: {module}: ") and run.stderr.count("\n") == 1, run.stderr
    assert "CRC64" in run.stderr and "--check=crc32" in run.stderr, run.stderr
    assert snapshot(tmp_path) == before and kernel.read_bytes() == kernel_before


@pytest.mark.parametrize(
    "image, words",
    [
        (BOOT / "x86_64" / "bzImage-zstd", "is a boot image (bzImage)"),
        (BOOT / "aarch64" / "Image.gz", "is a boot image"),
        (KBUILD / "lib" / "crc_toy.ko", "a kernel module (ET_REL), not a kernel"),
        (KBUILD / "modules.order", "not an ELF file"),
    ],
    ids=["bzImage", "Image.gz", "module", "text"],
)
def test_a_kernel_that_is_not_a_patchable_image_changes_nothing(
    tmp_path: Path, image: Path, words: str
) -> None:
    tree, _ = _package(tmp_path)
    kernel = tmp_path / "not-a-vmlinux"
    shutil.copy(image, kernel)
    before = snapshot(tmp_path)
    out = tmp_path / "new"
    for extra in ((), ("--output", out)):
        run = vmpatch("reroot", "--kernel", kernel, *extra, tree)
        assert run.returncode == 2, run
        assert run.stderr == f"error: {kernel}: {run.stderr.split(': ', 2)[2]}"
        assert words in run.stderr and run.stderr.count("\n") == 1, run.stderr
        assert snapshot(tmp_path) == before and not out.exists()


# ---------------------------------------------------------------------------
# --compressor kbuild


def _kbuild_reference(content: bytes, codec: Codec, scratch: Path, env: dict[str, str]) -> bytes:
    """``content`` compressed by kbuild's command (scripts/Makefile.modinst), run here."""
    scratch.mkdir(parents=True, exist_ok=True)
    plain = scratch / "module.ko"
    plain.write_bytes(content)
    argv = {
        Codec.GZIP: [env.get("KGZIP", "gzip"), "-n", "-f"],
        Codec.XZ: ["xz", "--check=crc32", "--lzma2=dict=1MiB", "-f"],
        Codec.ZSTD: ["zstd", "--rm", "-f", "-q"],
    }[codec]
    tool(*argv, plain, env=env)
    return (scratch / ("module.ko" + codec.suffix)).read_bytes()


def test_compressor_kbuild_is_byte_identical_to_kbuilds_commands(tmp_path: Path) -> None:
    for name in ("gzip", "xz", "zstd"):
        require_tool(name)
    log = tmp_path / "kgzip.log"
    wrapper = tmp_path / "kgzip"
    wrapper.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> {log}\nexec gzip "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = {"KGZIP": str(wrapper)}
    tree, kernel = _package(tmp_path / "pkg")
    run = vmpatch("reroot", "--compressor", "kbuild", "--kernel", kernel, tree, "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert run.json()["compressor"]["gzip"] == f"{wrapper} -n -f"
    placed = [m for m in run.json()["modules"] if m["position"] is not None]
    assert {m["codec"] for m in placed} >= {"gzip", "xz", "zstd"}
    for i, m in enumerate(placed):
        codec = next(c for c in Codec if c.label == m["codec"])
        if codec is Codec.NONE:
            continue
        path = tree / m["path"]
        expected = _kbuild_reference(kernel_visible(path), codec, tmp_path / f"ref{i}", env)
        assert path.read_bytes() == expected, f"{m['path']}: not what kbuild's command makes"
    assert log.read_text().count("-n -f") == 2, log.read_text()  # the module and the reference


def test_compressor_kbuild_names_a_missing_program(tmp_path: Path) -> None:
    tree, kernel = _package(tmp_path)
    before = snapshot(tmp_path)
    run = vmpatch(
        "reroot", "--compressor", "kbuild", "--kernel", kernel, tree,
        env={"ZSTD": str(tmp_path / "no-such-zstd")},
    )  # fmt: skip
    assert run.returncode != 0 and "no-such-zstd" in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------
# Progress and summary


def test_progress_covers_hashing_rewriting_and_verifying(tmp_path: Path) -> None:
    from vmpatch.workflow.reroot import RerootOptions, reroot

    tree, kernel = _big_tree(tmp_path, count=20)
    # No module has a trailer yet: every kernel-visible byte is hashed.
    hashed = sum(len(kernel_visible(p)) for p in sorted(tree.rglob("*.ko*")))
    heard: dict[str, list[tuple[int, int]]] = {}

    def progress(what: str, done: int, total: int) -> None:
        heard.setdefault(what, []).append((done, total))

    report = reroot(tree, RerootOptions(kernels=(kernel,)), progress=progress)
    assert set(heard) == {"hashing modules", "rewriting modules", "verifying modules"}
    for what, calls in heard.items():
        assert calls[-1] == (20, 20), (what, calls)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls), what
    assert report.files_rewritten == 20
    assert report.bytes_hashed == hashed


def test_summary_line_and_quiet_without_a_tty(tmp_path: Path) -> None:
    tree, kernel = _big_tree(tmp_path, count=250)  # enough for a bar on a terminal
    # No module has a trailer yet: every kernel-visible byte is hashed.
    hashed = sum(len(kernel_visible(p)) for p in sorted(tree.rglob("*.ko*")))
    run = vmpatch("reroot", "--kernel", kernel, tree)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", run.stderr  # no bar, no control characters in a pipe
    (summary,) = [line for line in run.stdout.splitlines() if line.startswith("summary")]
    assert f"250 files rewritten, {hashed} bytes hashed" in summary, summary
    assert summary.endswith(" s"), summary


def test_manifest_digests_are_the_trailer_free_bytes(tmp_path: Path) -> None:
    tree, kernel = _package(tmp_path)
    assert vmpatch("reroot", "--kernel", kernel, tree).returncode == 0
    from formatref import peel_trailers as trailers

    lines = (tree / "modules.leaves").read_text().splitlines()[2:]
    for line in lines:
        _position, rel, digest, _leaf = line.split(" ")
        base, kinds = trailers(kernel_visible(tree / rel))
        assert kinds == [3]
        assert hashlib.sha256(base).hexdigest() == digest, rel
    order = (tree / "modules.order").read_text().splitlines()
    assert [line.split(" ")[1].split(".ko")[0] for line in lines] == [
        o.removesuffix(".ko") for o in order
    ]


def test_bars_on_a_terminal_one_phase_at_a_time(tmp_path: Path) -> None:
    """Under a real pseudo-terminal (script(1)) each long phase draws its bar, none collide."""
    import shlex
    import sys

    from clirun import ROOT

    script = require_tool("script")
    tree, kernel = _big_tree(tmp_path, count=250)
    command = shlex.join(
        [sys.executable, "-m", "vmpatch", "reroot", "--kernel", str(kernel), str(tree)]
    )
    typescript = tmp_path / "typescript"
    tool(script, "-qec", command, typescript, env={"PYTHONPATH": str(ROOT), "TERM": "xterm"})
    shown = typescript.read_bytes().decode("utf-8", "replace")
    for phase in ("hashing modules", "rewriting modules", "verifying modules"):
        assert phase in shown, shown[-2000:]
    assert "Traceback" not in shown and "LiveError" not in shown, shown[-2000:]
    assert "summary 250 files rewritten" in shown


def test_a_refused_run_into_output_leaves_no_copy(tmp_path: Path) -> None:
    tree, kernel = _package(tmp_path / "pkg")
    crc = tree / "kernel" / "lib" / "crc_toy.ko.xz"
    data = bytearray(crc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    crc.write_bytes(bytes(data))
    before = snapshot(tmp_path / "pkg")
    new, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    for out in (new, empty):
        run = vmpatch("reroot", "--kernel", kernel, "--output", out, tree)
        assert run.returncode == 2 and "corrupt xz data" in run.stderr, run.stderr
    assert not new.exists() and empty.is_dir() and not any(empty.iterdir())
    assert snapshot(tmp_path / "pkg") == before
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("mine")
    run = vmpatch("reroot", "--kernel", kernel, "--output", busy, tree)
    assert run.returncode == 2 and "new or empty directory" in run.stderr, run.stderr
    assert (busy / "keep").read_text() == "mine" and len(list(busy.iterdir())) == 1
