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

import random
import re
import shutil
from pathlib import Path

import pytest
from clirun import python_env, tool, vmpatch_argv
from conftest import TESTDATA, require_tool

TRACED = "fsync,fdatasync,syncfs,sync_file_range,rename,renameat2"
#: One strace line: ``PID name(args) = result`` (-y prints each fd as fd<path>).
LINE = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
FD_PATH = re.compile(r"^\d+<(.*)>")
TEMP = re.compile(r"\.vmpatch-tmp$")


def traced_tree(build: Path, log: Path, *args: str) -> list[tuple[str, list[str]]]:
    """Run ``vmpatch tree BUILD`` under strace; the successful traced calls, in order."""
    strace = require_tool("strace", "strace")
    tool(
        strace, "-f", "-y", "-qq", "-o", log, "-e", f"trace={TRACED}",
        *vmpatch_argv("tree", build, "--byteorder", "little", *args),
        env=python_env(),
    )  # fmt: skip
    calls = []
    for line in log.read_text().splitlines():
        m = LINE.match(line)
        if m is None or m.group(3).startswith("-"):
            continue
        # Arguments are paths in quotes or fd<path>; split on the quote pairs.
        quoted = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2))
        fd = FD_PATH.match(m.group(2))
        calls.append((m.group(1), quoted if quoted else [fd.group(1)] if fd else []))
    return calls


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


def check_order(calls: list[tuple[str, list[str]]], proofs: set[Path]) -> None:
    durable: dict[str, int] = {}  # temporary -> index of its flush
    syncfs_at: list[int] = []
    renamed: dict[Path, int] = {}
    dir_syncs: dict[Path, list[int]] = {}
    for i, (name, args) in enumerate(calls):
        if name in ("fsync", "fdatasync") and args:
            path = args[0]
            if TEMP.search(path):
                durable.setdefault(path, i)
            elif Path(path).is_dir():
                dir_syncs.setdefault(Path(path), []).append(i)
        elif name == "syncfs":
            syncfs_at.append(i)
        elif name in ("rename", "renameat2") and len(args) == 2:
            temp, final = args
            if Path(final) in proofs:
                assert TEMP.search(temp), f"{final} renamed from {temp}, not a temporary"
                flushed = durable.get(temp, syncfs_at[0] if syncfs_at else None)
                assert flushed is not None and flushed < i, f"{temp} renamed before durable"
                renamed[Path(final)] = i
    assert set(renamed) == proofs, "every proof is renamed into place"
    for directory in {p.parent for p in proofs}:
        last = max(i for p, i in renamed.items() if p.parent == directory)
        after = [i for i in dir_syncs.get(directory, []) if i > last]
        assert after, f"{directory} not synced after its last rename"
        assert len(dir_syncs[directory]) == 1, f"{directory} synced more than once"
    flushes = sum(1 for name, args in calls if name in ("fsync", "fdatasync"))
    assert flushes <= len(proofs) + len({p.parent for p in proofs}), "at most one flush a file"


@pytest.mark.parametrize("kind", ["kbuild-x86_64", "generated-300"])
def test_tree_proofs_durable_before_rename(tmp_path: Path, kind: str) -> None:
    """Every .merkle's data is durable before its rename; each directory synced once, after.

    Run twice: new proofs, then proofs replacing the first run's (metadata kept).
    """
    build = tmp_path / "build"
    if kind == "kbuild-x86_64":
        shutil.copytree(TESTDATA / "kbuild-x86_64", build)
    else:
        generated(build, 300)
    order = (build / "modules.order").read_text().split()
    proofs = {build / (line.removesuffix(".o") + ".merkle") for line in order}
    for run in range(2):
        calls = traced_tree(build, tmp_path / f"strace{run}.log")
        check_order(calls, proofs)
        assert all(p.is_file() for p in proofs)
        assert not list(build.rglob("*.vmpatch-tmp"))


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
    good = [("fdatasync", [temp]), ("rename", [temp, str(proof)]), ("fsync", [str(directory)])]
    check_order(good, {proof})
