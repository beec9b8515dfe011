# SPDX-License-Identifier: GPL-2.0-or-later
"""Batch durability, checked on the system calls a real run makes.

A SIGKILL leaves the page cache intact, so the kill sweeps of
test_crash_safety.py cannot tell whether a file's data reached the disk
before its new name did. What can be checked is the order of the calls that
decide it: ``strace`` records every flush and rename of a real ``vmpatch
tree`` run, and each proof's temporary must be made durable (fsync, fdatasync
or a syncfs of its filesystem) before it is renamed into place, and each
directory synced once, after the last rename into it (issue 12).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from clirun import python_env, tool, vmpatch_argv
from conftest import TESTDATA, require_tool

TRACED = "fsync,fdatasync,syncfs,sync_file_range,rename,renameat2,pwrite64,write"
#: One strace line: ``PID name(args) = result`` (-y prints each fd as fd<path>).
LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
FD_PATH = re.compile(r"^\d+<([^>]*)>")  # up to the first >: written bytes may hold one
TEMP = re.compile(r"\.vmpatch-tmp$")


Call = tuple[str, list[str], int]  # name, path arguments, process id


@pytest.fixture
def disk_path(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory on a filesystem with a disk behind it, where the batch flushes.

    pytest's own is used when it is on one; where /tmp is a tmpfs (Debian 13,
    Fedora, Arch), one under /var/tmp, removed after the test.
    """
    from vmpatch.fs.batch import _NO_DISK, _filesystem_type, _mount_table

    table = _mount_table()
    if _filesystem_type(os.path.realpath(tmp_path), table) not in _NO_DISK:
        yield tmp_path
        return
    if _filesystem_type(os.path.realpath("/var/tmp"), table) in _NO_DISK:
        pytest.skip("no directory on a disk filesystem to write to (/tmp and /var/tmp in memory)")
    directory = Path(tempfile.mkdtemp(prefix="vmpatch-durability-", dir="/var/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def traced_tree(build: Path, log: Path, *args: str) -> list[Call]:
    """Run ``vmpatch tree BUILD`` under strace; the successful traced calls, in order."""
    return traced(vmpatch_argv("tree", build, "--byteorder", "little", *args), log)


def traced(argv: Sequence[str | Path], log: Path) -> list[Call]:
    """Run ``argv`` under strace; the successful traced calls, in order."""
    strace = require_tool("strace", "strace")
    tool(strace, "-f", "-y", "-qq", "-o", log, "-e", f"trace={TRACED}", *argv, env=python_env())
    calls = []
    unfinished: dict[str, str] = {}  # pid -> the start of a call another process interrupted
    for line in joined_calls(log.read_text().splitlines(), unfinished):
        m = LINE.match(line)
        if m is None or m.group(4).startswith("-"):
            continue
        # Arguments are paths in quotes or fd<path>; split on the quote pairs.
        quoted = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(3))
        fd = FD_PATH.match(m.group(3))
        if m.group(2) in ("pwrite64", "write"):  # its fd, not the bytes it writes
            paths = [fd.group(1)] if fd else []
        else:
            paths = quoted if quoted else [fd.group(1)] if fd else []
        calls.append((m.group(2), paths, int(m.group(1))))
    return calls


def joined_calls(lines: list[str], unfinished: dict[str, str]) -> list[str]:
    """strace -f lines with each call whole: ``<unfinished ...>`` joined to its ``resumed``.

    When two processes' calls overlap, strace prints the first as
    ``PID name(args <unfinished ...>`` and later ``PID <... name resumed>rest``;
    the call counts at its end (where its result is known).
    """
    whole = []
    for line in lines:
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()  # strace pads the pid column
        if rest.endswith("<unfinished ...>"):
            unfinished[pid] = line.removesuffix("<unfinished ...>").rstrip()
        elif rest.startswith("<... ") and pid in unfinished:
            whole.append(unfinished.pop(pid) + rest.split(" resumed>", 1)[1])
        else:
            whole.append(line)
    return whole


def generated(build: Path, count: int) -> Path:
    """``count`` modules in 7 directories: more than one batch of open temporaries."""
    rng = random.Random(12)
    lines = []
    for i in range(count):
        sub = build / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"m{i:03d}.ko").write_bytes(rng.randbytes(2048 + i))
        lines.append(f"d{i % 7}/m{i:03d}.o")
    (build / "modules.order").write_text("\n".join(lines) + "\n")
    return build


def check_order(
    calls: Sequence[tuple[str, list[str]] | Call],
    proofs: set[Path],
    *,
    writers: int = 1,
    kept: int = 0,
    overwritten: frozenset[Path] = frozenset(),
) -> None:
    """Durable before renamed, directories after; each directory synced by at most ``writers``.

    ``proofs`` are the files replaced; ``kept`` more already held their new
    bytes and are flushed in place, never renamed. ``overwritten`` were
    rewritten in place (same size, one sector): each by one write after the
    last temporary of the batch was made durable (a batch that fails while
    staging changes nothing), then flushed, and never renamed. A flush is an
    fsync or fdatasync of the file (or directory) after its last write, or a
    syncfs after it: the batch syncs whole filesystems when it is big and
    little else is dirty (vmpatch.fs.batch._sync_whole_filesystems).
    """
    last_write: dict[str, int] = {}  # file -> index of its last write
    file_flush: dict[str, int] = {}  # file -> index of its last fsync or fdatasync
    last_syncfs = -1
    syncfs_count = 0
    durable_at: dict[str, int] = {}  # temporary -> index of the flush that made it durable
    renamed: dict[Path, int] = {}
    dir_syncs: dict[Path, list[int]] = {}
    written: dict[Path, int] = {}  # overwritten proof -> index of its write

    def flushed_since(path: str, since: int) -> int | None:
        """The index of a flush of ``path`` after ``since``, the latest one: None if none."""
        own = file_flush.get(path, -1)
        best = max(own, last_syncfs)
        return best if best > since else None

    for i, (name, args, *_) in enumerate(calls):
        if name in ("fsync", "fdatasync") and args:
            path = args[0]
            file_flush[path] = i
            if Path(path).is_dir() and not TEMP.search(path):
                dir_syncs.setdefault(Path(path), []).append(i)
        elif name == "syncfs":
            last_syncfs = i
            syncfs_count += 1
        elif name in ("pwrite64", "write") and args:
            last_write[args[0]] = i
            target = Path(args[0])
            if target in proofs | overwritten:
                assert target in overwritten, f"{target} written in place, not replaced"
                assert target not in written, f"{target} written in place twice"
                written[target] = i
        elif name in ("rename", "renameat2") and len(args) == 2:
            temp, final = args
            assert Path(final) not in overwritten, f"{final} renamed, not written in place"
            if Path(final) in proofs:
                assert TEMP.search(temp), f"{final} renamed from {temp}, not a temporary"
                flushed = flushed_since(temp, last_write.get(temp, -1))
                assert flushed is not None and flushed < i, f"{temp} renamed before durable"
                durable_at[temp] = flushed
                renamed[Path(final)] = i
    assert set(renamed) == proofs, "every proof is renamed into place"
    assert set(written) == overwritten, "every overwritten proof is written once"
    for proof, at in written.items():
        assert flushed_since(str(proof), at) is not None, f"{proof} not flushed after its write"
    if written and durable_at:
        assert min(written.values()) > max(durable_at.values()), "written in place while staging"
    for directory in {p.parent for p in proofs}:
        last = max(i for p, i in renamed.items() if p.parent == directory)
        after = [i for i in dir_syncs.get(directory, []) if i > last]
        assert after or last_syncfs > last, f"{directory} not synced after its last rename"
        assert len(dir_syncs.get(directory, [])) <= writers, f"{directory} synced > {writers}x"
    flushes = sum(1 for name, *_ in calls if name in ("fsync", "fdatasync"))
    most = len(proofs) + kept + len(overwritten) + writers * len({p.parent for p in proofs})
    assert flushes <= most, "at most one flush a file"
    assert syncfs_count <= 2 * writers, "at most two syncs of the filesystem a writer"


@pytest.mark.parametrize("kind", ["kbuild-x86_64", "generated-300"])
def test_tree_proofs_durable_before_rename(disk_path: Path, kind: str) -> None:
    """Every .merkle's data is durable before its rename; each directory synced once, after.

    Run twice: new proofs, then proofs rewritten in place over the first
    run's after a module changed (every other module's proof holds a node of
    the changed leaf's path, so all of them change, and keep their size). A
    third run over the unchanged tree leaves every proof alone.
    """
    build = disk_path / "build"
    if kind == "kbuild-x86_64":
        shutil.copytree(TESTDATA / "kbuild-x86_64", build)
    else:
        generated(build, 300)
    order = (build / "modules.order").read_text().split()
    proofs = {build / (line.removesuffix(".o") + ".merkle") for line in order}
    calls = traced_tree(build, disk_path / "strace0.log")
    check_order(calls, proofs)
    assert not list(build.rglob("*.vmpatch-tmp"))
    changed = proofs - {change_one_module(build, order)}
    before = {p: (p.read_bytes(), p.stat().st_ino) for p in changed}
    calls = traced_tree(build, disk_path / "strace1.log")
    check_order(calls, set(), kept=len(proofs - changed), overwritten=frozenset(changed))
    for p, (old, inode) in before.items():
        assert p.read_bytes() != old, f"{p} kept its bytes"
        assert p.stat().st_ino == inode, f"{p} was replaced, not rewritten in place"
    assert not list(build.rglob("*.vmpatch-tmp"))
    assert_unchanged_run_writes_nothing(build, proofs, disk_path / "strace-again.log")


def change_one_module(build: Path, order: Sequence[str]) -> Path:
    """Append a byte to the middle module of ``order``: a new leaf, a new root.

    Returns the module's proof, the one proof that stays as it was (it holds
    the siblings of the leaf's path, not the path).
    """
    stem = order[len(order) // 2].removesuffix(".o")
    with (build / f"{stem}.ko").open("ab") as stream:
        stream.write(b"\0")
    return build / f"{stem}.merkle"


def assert_unchanged_run_writes_nothing(build: Path, proofs: set[Path], log: Path) -> None:
    """A run whose proofs are already right renames nothing and keeps every proof's inode."""
    traced_tree(build, log)  # the proofs of the last change
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in proofs}
    calls = traced_tree(build, log)
    assert not [c for c in calls if c[0].startswith("rename")], "an unchanged proof was replaced"
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in proofs} == kept


def good_prefix(temp: str, proof: Path) -> list[tuple[str, list[str]]]:
    return [("fdatasync", [temp]), ("rename", [temp, str(proof)])]


def test_checker_rejects_rename_before_flush(tmp_path: Path) -> None:
    """The order check fails on a rename that comes before its temporary's flush."""
    directory = tmp_path
    proof = directory / "a.merkle"
    temp = str(directory / ".a.merkle.0000.vmpatch-tmp")
    bad = [("rename", [temp, str(proof)]), ("fdatasync", [temp]), ("fsync", [str(directory)])]
    with pytest.raises(AssertionError, match="before durable"):
        check_order(bad, {proof})
    late_dir = [("fdatasync", [temp]), ("fsync", [str(directory)]), ("rename", [temp, str(proof)])]
    with pytest.raises(AssertionError, match="not synced after"):
        check_order(late_dir, {proof})
    twice = [*good_prefix(temp, proof), ("fsync", [str(directory)]), ("fsync", [str(directory)])]
    with pytest.raises(AssertionError, match="synced > 1x"):
        check_order(twice, {proof})
    check_order(twice, {proof}, writers=2)
    good = [("fdatasync", [temp]), ("rename", [temp, str(proof)]), ("fsync", [str(directory)])]
    check_order(good, {proof})
    write = ("write", [temp])
    early_syncfs = [("syncfs", [temp]), write, ("rename", [temp, str(proof)]), ("syncfs", [temp])]
    with pytest.raises(AssertionError, match="before durable"):
        check_order(early_syncfs, {proof})
    no_syncfs_after = [write, ("syncfs", [temp]), ("rename", [temp, str(proof)])]
    with pytest.raises(AssertionError, match="not synced after"):
        check_order(no_syncfs_after, {proof})
    check_order([*no_syncfs_after, ("syncfs", [str(proof)])], {proof})
    unflushed = [("syncfs", [str(proof)]), ("pwrite64", [str(proof)])]
    with pytest.raises(AssertionError, match="not flushed after its write"):
        check_order(unflushed, set(), overwritten=frozenset({proof}))
    check_order([*unflushed, ("syncfs", [str(proof)])], set(), overwritten=frozenset({proof}))


def test_forked_batch_keeps_the_order_in_every_worker(disk_path: Path) -> None:
    """1200 proofs are written by two forked workers (vmpatch.fs.batch): the order holds in each.

    The trace shows renames from two processes other than the one that ran
    the command's start-up, so the forked path is the one checked; each
    directory is synced by the workers that renamed into it, after the
    last rename into it.
    """
    build = generated(disk_path / "build", 1200)
    order = (build / "modules.order").read_text().split()
    proofs = {build / (line.removesuffix(".o") + ".merkle") for line in order}
    calls = traced_tree(build, disk_path / "strace0.log", "--workers", "2")
    check_order(calls, proofs, writers=2)
    renaming = {pid for name, args, pid in calls if name.startswith("rename")}
    assert len(renaming) == 2, f"renames came from {len(renaming)} processes"
    assert not list(build.rglob("*.vmpatch-tmp"))
    changed = frozenset(proofs - {change_one_module(build, order)})
    calls = traced_tree(build, disk_path / "strace1.log", "--workers", "2")
    check_order(calls, set(), writers=2, kept=1, overwritten=changed)
    writing = {pid for name, args, pid in calls if name == "pwrite64"}
    assert len(writing) == 2, f"in-place writes came from {len(writing)} processes"


#: Writes a batch of the files under ``sys.argv[1]`` named in ``sys.argv[2]``
#: (one name and size a line), each file's bytes its name repeated with a tag.
BATCH_SCRIPT = """
import sys
from pathlib import Path
from vmpatch.fs.batch import durable_batch

root, listing, tag, workers, flush = sys.argv[1:]
files = []
for line in Path(listing).read_text().splitlines():
    name, size = line.split()
    files.append((root + "/" + name, (tag + name).encode().ljust(int(size), b"#")))
durable_batch(files, workers=int(workers), flush=flush)
"""


def traced_batch(
    root: Path, listing: Path, tag: str, workers: int, flush: str, log: Path
) -> list[Call]:
    """Run :data:`BATCH_SCRIPT` under strace; the successful traced calls, in order."""
    script = root.parent / "batch.py"
    script.write_text(BATCH_SCRIPT)
    argv = [sys.executable, str(script), str(root), str(listing), tag, str(workers), flush]
    return traced(argv, log)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("flush", ["file", "filesystem"])
def test_each_flush_primitive_keeps_the_order(disk_path: Path, flush: str, workers: int) -> None:
    """Both ways of making a batch durable, in one process and two: flushing each file
    and directory, or syncing the filesystem before the renames and after them.

    600 files (above the forking threshold) in 9 directories: new ones, then
    every one rewritten in place (same size, under one sector), then an
    unchanged batch, which writes nothing. Which primitive ran is checked
    too: the filesystem way makes no flush of a single file. It is taken
    only on filesystems whose sync is known to cover every file
    (``_WHOLE_FS_TYPES``); elsewhere (overlayfs under a container, FUSE)
    ``"filesystem"`` flushes each file.
    """
    from vmpatch.fs.batch import _WHOLE_FS_TYPES, _filesystem_type, _mount_table

    kind = _filesystem_type(os.path.realpath(disk_path), _mount_table())
    by_filesystem = flush == "filesystem" and kind in _WHOLE_FS_TYPES
    root = disk_path / "batch"
    names = [f"d{i % 9}/f{i:03d}.merkle" for i in range(600)]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
    listing = disk_path / "listing"
    listing.write_text("".join(f"{name} {200 + i % 300}\n" for i, name in enumerate(names)))
    files = {root / name for name in names}
    # The last run writes the same bytes as the one before it.
    for tag, state in (("new", "new"), ("again", "overwritten"), ("again", "kept")):
        calls = traced_batch(root, listing, tag, workers, flush, disk_path / f"{state}.log")
        if state == "new":
            check_order(calls, files, writers=workers)
        elif state == "overwritten":
            check_order(calls, set(), writers=workers, overwritten=frozenset(files))
        else:
            check_order(calls, set(), writers=workers, kept=len(files))
            touched = [c for c in calls if c[0] in ("pwrite64", "rename", "renameat2")]
            assert not touched, f"an unchanged file was written: {touched[:3]}"
        single = [c for c in calls if c[0] in ("fsync", "fdatasync")]
        syncs = [c for c in calls if c[0] == "syncfs"]
        if by_filesystem:
            assert not single and syncs, f"{state}: {len(single)} flushes, {len(syncs)} syncfs"
        else:
            assert single and not syncs, f"{state}: {len(single)} flushes, {len(syncs)} syncfs"
        processes = {pid for name, _args, pid in calls if name in ("rename", "pwrite64")}
        assert state == "kept" or len(processes) == workers, f"{state}: written by {processes}"
        for name in names:
            assert (root / name).read_bytes().rstrip(b"#") == (tag + name).encode(), name
    assert not list(root.rglob("*.vmpatch-tmp"))


def test_whole_filesystem_sync_only_for_big_batches_with_little_dirty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``flush="auto"`` syncs whole filesystems only for a big batch, while little waits
    to be written back, on a kernel whose syncfs reports writeback errors."""
    from vmpatch.fs import batch

    monkeypatch.setattr(batch, "_kernel_release", lambda: (6, 12))
    monkeypatch.setattr(batch, "_dirty_bytes", lambda: 1 << 20)
    assert batch._sync_whole_filesystems(batch._WHOLE_FS_MIN)
    assert not batch._sync_whole_filesystems(batch._WHOLE_FS_MIN - 1)
    monkeypatch.setattr(batch, "_dirty_bytes", lambda: batch._DIRTY_MAX + 1)
    assert not batch._sync_whole_filesystems(10_000)
    monkeypatch.setattr(batch, "_dirty_bytes", lambda: None)  # no /proc/meminfo
    assert not batch._sync_whole_filesystems(10_000)
    monkeypatch.setattr(batch, "_dirty_bytes", lambda: 0)
    monkeypatch.setattr(batch, "_kernel_release", lambda: (5, 7))
    assert not batch._sync_whole_filesystems(10_000)


def test_dirty_bytes_and_kernel_release_read_what_the_system_says() -> None:
    """/proc/meminfo's Dirty plus Writeback, and ``uname -r``'s first two numbers."""
    from vmpatch.fs.batch import _dirty_bytes, _kernel_release

    release = tool("uname", "-r", text=True).stdout.strip()
    m = re.match(r"(\d+)\.(\d+)", release)
    assert m is not None
    assert _kernel_release() == (int(m.group(1)), int(m.group(2)))
    fields = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
    )
    listed = sum(int(fields[key].split()[0]) * 1024 for key in ("Dirty", "Writeback"))
    measured = _dirty_bytes()
    assert measured is not None
    assert abs(measured - listed) <= 64 << 20, (measured, listed)  # it moves between two reads


@pytest.mark.parametrize("where", ["/dev/shm", "/tmp", "/", "/proc/self", "/sys/kernel"])
def test_filesystem_type_agrees_with_findmnt(where: str) -> None:
    """The batch skips writeback on memory filesystems: its mount lookup must be util-linux's."""
    from vmpatch.fs.batch import _filesystem_type, _mount_table

    findmnt = require_tool("findmnt", "util-linux")
    directory = os.path.realpath(where)
    if not os.path.isdir(directory):
        pytest.skip(f"{where} is not on this machine")
    listed = tool(findmnt, "-n", "-o", "FSTYPE", "-T", directory, text=True).stdout.split()
    expected = listed[-1]  # mounts stacked on one point: the last is the one on top
    assert _filesystem_type(directory, _mount_table()) == expected


def test_only_small_same_size_files_with_one_link_are_rewritten_in_place(tmp_path: Path) -> None:
    """In place (same inode) only up to one sector, at the same size and with no other
    link: a ``cp -al`` copy keeps its bytes; everything else is replaced (a new inode)."""
    from vmpatch.fs.batch import OVERWRITE_MAX, durable_batch

    cases = {  # name: (old bytes, new bytes, what happens)
        "proof": (b"a" * 460, b"b" * 460, "in place"),
        "sector": (b"a" * OVERWRITE_MAX, b"b" * OVERWRITE_MAX, "in place"),
        "bigger": (b"a" * (OVERWRITE_MAX + 1), b"b" * (OVERWRITE_MAX + 1), "replaced"),
        "resized": (b"a" * 100, b"b" * 101, "replaced"),
        "linked": (b"a" * 100, b"b" * 100, "replaced"),
        "current": (b"a" * 100, b"a" * 100, "kept"),
    }
    inodes = {}
    for name, (old, _new, _how) in cases.items():
        (tmp_path / name).write_bytes(old)
        inodes[name] = (tmp_path / name).stat().st_ino
    os.link(tmp_path / "linked", tmp_path / "other-link")
    durable_batch([(tmp_path / name, new) for name, (_old, new, _how) in cases.items()])
    for name, (_old, new, how) in cases.items():
        assert (tmp_path / name).read_bytes() == new, name
        same_inode = (tmp_path / name).stat().st_ino == inodes[name]
        assert same_inode == (how != "replaced"), (name, how)
    assert (tmp_path / "other-link").read_bytes() == b"a" * 100
    assert not list(tmp_path.glob("*.vmpatch-tmp"))


def test_a_memory_filesystem_gets_no_flush(tmp_path: Path) -> None:
    """In tmpfs every proof is still renamed into place from a temporary (a killed run
    leaves no half proof), but nothing is flushed: fsync there is noop_fsync
    (mm/shmem.c), so the batch skips the fdatasync of each file and the fsync of
    each directory. The proofs are byte for byte those written on a disk."""
    from vmpatch.fs.batch import _NO_DISK, _filesystem_type, _mount_table

    shm = Path("/dev/shm")
    if not shm.is_dir() or _filesystem_type(os.path.realpath(shm), _mount_table()) not in _NO_DISK:
        pytest.skip("/dev/shm is no tmpfs here")
    memory = Path(tempfile.mkdtemp(prefix="vmpatch-durability-", dir=shm))
    try:
        for workers in ("1", "2"):  # one process, and the forked batch (600 > its threshold)
            build = generated(memory / f"build{workers}", 600)
            order = (build / "modules.order").read_text().split()
            proofs = {build / (line.removesuffix(".o") + ".merkle") for line in order}
            on_disk = generated(tmp_path / f"build{workers}", 600)
            traced_tree(on_disk, tmp_path / f"disk{workers}.log", "--workers", workers)
            for when in ("new", "stale"):
                if when == "stale":
                    change_one_module(build, order)
                    change_one_module(on_disk, order)
                    traced_tree(on_disk, tmp_path / f"disk{workers}.log", "--workers", workers)
                calls = traced_tree(build, tmp_path / f"{when}{workers}.log", "--workers", workers)
                flushes = [c for c in calls if c[0] in ("fsync", "fdatasync", "syncfs")]
                assert not flushes, f"{when} proofs in tmpfs flushed: {flushes[:3]}"
                if when == "new":
                    renamed = {Path(c[1][1]) for c in calls if c[0].startswith("rename")}
                    assert renamed == proofs, "every new proof is renamed into place"
                for proof in proofs:
                    twin = on_disk / proof.relative_to(build)
                    assert proof.read_bytes() == twin.read_bytes(), proof
            assert not list(build.rglob("*.vmpatch-tmp"))
    finally:
        shutil.rmtree(memory, ignore_errors=True)
