# SPDX-License-Identifier: GPL-2.0-or-later
"""Every writing command locks what it writes: a second process waits, or refuses with --no-wait.

The lock is :func:`vmpatch.fs.lock.locked` (``flock`` on a descriptor of the
tree, module or image; no lock file). Each test holds that lock itself, from
the test process, starts the real command line and watches ``/proc/locks``
until the child is queued behind it (deterministic: no sleeping and hoping),
checks the child has written nothing, then releases and lets it finish; with
``--no-wait`` the child refuses at once (exit 3, one line) and changes
nothing. The last test runs the per-module hook from a real Makefile under
``make -j16``, two targets per module, and compares the tree byte for byte
with ``cat PROOF >> MODULE`` done by the test itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from clirun import Process, pipe_hook, pipe_vmpatch, tool, vmpatch
from conftest import TESTDATA, require, require_tool

from vmpatch.fs.atomic import TEMP_MARK

KBUILD = TESTDATA / "kbuild-x86_64"
VMLINUX = TESTDATA / "x86_64" / "vmlinux.unstripped"
ROOT = ["--root", "5a" * 32, "--levels", "3"]


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold vmpatch's lock on ``path`` (the same ``flock`` another vmpatch would take)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def blocked_on_flock(pid: int) -> bool:
    """Whether ``pid`` waits for a flock (a ``->`` line of /proc/locks names it)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[2] == "FLOCK" and fields[5] == str(pid):
            return True
    return False


def wait_until_blocked(proc: Process[bytes], timeout: float = 60) -> None:
    start = time.monotonic()
    while not blocked_on_flock(proc.pid):
        assert proc.poll() is None, f"finished without waiting: {proc.communicate()}"
        assert time.monotonic() - start < timeout, "never queued behind the lock"
        time.sleep(0.01)


def snapshot(top: Path) -> dict[str, bytes]:
    """Every file under ``top`` (or ``top`` itself) by content digest."""
    files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).digest() for p in files}


def kbuild(tmp_path: Path, name: str = "build") -> Path:
    require(KBUILD.is_dir(), f"{KBUILD} is missing (run scripts/make-testdata)")
    return Path(shutil.copytree(KBUILD, tmp_path / name))


def with_proofs(tmp_path: Path) -> Path:
    build = kbuild(tmp_path)
    assert vmpatch("tree", build).returncode == 0
    return build


Case = Callable[[Path], tuple[Path, Path, list[str]]]


def case_patch(tmp: Path) -> tuple[Path, Path, list[str]]:
    require(VMLINUX.is_file(), f"{VMLINUX} is missing")
    image = Path(shutil.copy(VMLINUX, tmp / "vmlinux"))
    return image, image, ["patch", *ROOT, str(image)]


def case_tree(tmp: Path) -> tuple[Path, Path, list[str]]:
    build = kbuild(tmp)
    return build, build, ["tree", str(build)]


def case_append(tmp: Path) -> tuple[Path, Path, list[str]]:
    build = with_proofs(tmp)
    module = build / "lib" / "crc_toy.ko"
    return module, module, ["ko", "append", str(module), str(module.with_suffix(".merkle"))]


def case_append_tree(tmp: Path) -> tuple[Path, Path, list[str]]:
    build = with_proofs(tmp)
    return build, build, ["ko", "append-tree", str(build)]


def case_strip_proof(tmp: Path) -> tuple[Path, Path, list[str]]:
    build = with_proofs(tmp)
    module = build / "lib" / "crc_toy.ko"
    assert vmpatch("ko", "append", module, module.with_suffix(".merkle")).returncode == 0
    return module, module, ["ko", "strip-proof", str(module)]


def case_strip_tree(tmp: Path) -> tuple[Path, Path, list[str]]:
    require_tool("x86_64-linux-gnu-strip", "binutils-x86-64-linux-gnu")
    build = kbuild(tmp)
    (build / "include" / "config" / "auto.conf").unlink()  # it records INSTALL_MOD_STRIP=''
    args = ["ko", "strip", "--install-mod-strip", "1", "--cross-compile", "x86_64-linux-gnu-"]
    return build, build, [*args, "--tree", str(build)]


def case_strip_module(tmp: Path) -> tuple[Path, Path, list[str]]:
    require_tool("x86_64-linux-gnu-strip", "binutils-x86-64-linux-gnu")
    build = kbuild(tmp)
    module = build / "lib" / "crc_toy.ko"
    args = ["ko", "strip", "--install-mod-strip", "1", "--cross-compile", "x86_64-linux-gnu-"]
    return module, build, [*args, str(module)]


def case_hook(tmp: Path) -> tuple[Path, Path, list[str]]:
    build = with_proofs(tmp)
    module = build / "lib" / "crc_toy.ko"
    return module, module.parent, ["HOOK", str(module), str(module.with_suffix(".merkle"))]


CASES: dict[str, Case] = {
    "patch": case_patch,
    "tree": case_tree,
    "ko-append": case_append,
    "ko-append-tree": case_append_tree,
    "ko-strip-proof": case_strip_proof,
    "ko-strip-tree": case_strip_tree,
    "ko-strip-module": case_strip_module,
    "hook": case_hook,
}


def start(args: list[str]) -> Process[bytes]:
    if args[0] == "HOOK":
        return pipe_hook(*args[1:])
    return pipe_vmpatch(*args)


@pytest.mark.parametrize("name", CASES)
def test_second_process_waits_for_the_lock(tmp_path: Path, name: str) -> None:
    """Queued behind a held lock, the command writes nothing, says "waiting" once, then runs."""
    locked, watched, args = CASES[name](tmp_path)
    before = snapshot(watched)
    with held(locked):
        proc = start(args)
        wait_until_blocked(proc)
        assert snapshot(watched) == before, "wrote while another process held the lock"
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert err.decode().count("waiting for another vmpatch process") == 1, err
    assert snapshot(watched) != before, "the run did nothing"


@pytest.mark.parametrize("name", CASES)
def test_no_wait_refuses_while_locked(tmp_path: Path, name: str) -> None:
    """With --no-wait a held lock is exit 3, one line naming the locked path, nothing changed."""
    locked, watched, args = CASES[name](tmp_path)
    args = [args[0], "--no-wait", *args[1:]] if args[0] == "HOOK" else [*args, "--no-wait"]
    before = snapshot(watched)
    with held(locked):
        proc = start(args)
        _out, err = proc.communicate(timeout=120)
    lines = err.decode().splitlines()
    assert proc.returncode == 3, err
    assert len(lines) == 1 and "Traceback" not in err.decode(), err
    assert str(locked) in lines[0] and "--no-wait" in lines[0], lines
    assert snapshot(watched) == before
    assert not list(tmp_path.rglob(f"*{TEMP_MARK}"))


def test_lock_follows_an_atomic_rename(tmp_path: Path) -> None:
    """A waiter whose module is replaced by rename meanwhile locks the new inode, not the old.

    Otherwise a third process would lock the new inode while the waiter
    holds the old one, and both would write. Here the waiter queues on the
    old inode; the test renames a new file into place, holds *its* lock and
    releases the old one: the waiter must still be waiting, and get the lock
    only when the new inode is released.
    """
    import threading

    from vmpatch.fs.lock import locked

    module = tmp_path / "m.ko"
    module.write_bytes(b"old")
    got: list[bytes] = []

    def waiter() -> None:
        with locked([module]):
            got.append(module.read_bytes())

    old = os.open(module, os.O_RDONLY)
    fcntl.flock(old, fcntl.LOCK_EX)
    thread = threading.Thread(target=waiter)
    thread.start()
    start = time.monotonic()
    while not any(" -> FLOCK" in line for line in Path("/proc/locks").read_text().splitlines()):
        assert time.monotonic() - start < 30, "the waiter never queued"
        time.sleep(0.01)
    replacement = tmp_path / "m.ko.new"
    replacement.write_bytes(b"new")
    replacement.rename(module)
    with held(module):
        os.close(old)  # releases the old inode's lock
        thread.join(0.5)
        assert thread.is_alive() and not got, "the waiter took the replaced inode's lock"
    thread.join(30)
    assert got == [b"new"]


# ---------------------------------------------------------------------------
# The hook under make -j16

MODULES = 200


def copies_tree(build: Path, count: int) -> list[Path]:
    """``count`` copies of the kbuild test modules (real ELF) under 8 directories."""
    require(KBUILD.is_dir(), f"{KBUILD} is missing (run scripts/make-testdata)")
    sources = sorted(KBUILD.rglob("*.ko"))
    lines, modules = [], []
    for i in range(count):
        sub = build / f"d{i % 8}"
        sub.mkdir(parents=True, exist_ok=True)
        module = Path(shutil.copy(sources[i % len(sources)], sub / f"m{i:03d}.ko"))
        modules.append(module)
        lines.append(f"d{i % 8}/m{i:03d}.o")
    (build / "modules.order").write_text("\n".join(lines) + "\n")
    shutil.copy(KBUILD / "vmlinux", build / "vmlinux")
    return modules


def test_hook_under_make_j16_loses_nothing(tmp_path: Path) -> None:
    """Two make targets per module run the hook on it in parallel; the tree ends as `cat` would.

    The expected bytes are the test's own ``module + proof`` (the hook's
    contract: a safe ``cat PROOF >> MODULE``), and every module also matches
    a serial run (``vmpatch ko append-tree`` over a second copy).
    """
    make = require_tool("make")
    build = tmp_path / "build"
    modules = copies_tree(build, MODULES)
    assert vmpatch("tree", build).returncode == 0
    serial = Path(shutil.copytree(build, tmp_path / "serial"))
    assert vmpatch("ko", "append-tree", serial).returncode == 0
    expected = {m: m.read_bytes() + m.with_suffix(".merkle").read_bytes() for m in modules}
    hook = f"{sys.executable} -m vmpatch.hook"
    targets, rules = [], []
    for i, module in enumerate(modules):
        for side in "ab":
            targets.append(f"{side}{i}")
            rules.append(f"{side}{i}:\n\t{hook} {module} {module.with_suffix('.merkle')}\n")
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        f"all: {' '.join(targets)}\n.PHONY: all {' '.join(targets)}\n" + "\n".join(rules)
    )
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run = tool(make, "-s", "-j16", "-f", makefile, "all", env=env, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert {m: m.read_bytes() for m in modules} == expected
    for module in modules:
        twin = serial / module.relative_to(build)
        assert module.read_bytes() == twin.read_bytes(), module
    assert not list(build.rglob(f"*{TEMP_MARK}"))
