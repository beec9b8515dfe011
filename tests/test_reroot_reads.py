# SPDX-License-Identifier: GPL-2.0-or-later
"""What ``vmpatch reroot`` reads, and that reading less never changes what it says.

A no-op re-run judges each module from the bytes its planning pass already
read, when neither the module nor any kernel is rewritten; everything else
is read back from disk after writing. The evidence is independent of the
code: ``strace -f`` counts every open of every module file by the real
process and its workers, and the verdicts are compared with a run that
re-reads everything (threads, the reference) and with ``vmpatch verify``.
"""

from __future__ import annotations

import collections
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from clirun import python_env, tool, vmpatch, vmpatch_argv
from conftest import require_tool
from test_reroot import KBUILD, _big_tree, _contents

from vmpatch.fs import forkmap
from vmpatch.workflow import reroot as reroot_module
from vmpatch.workflow.reroot import RerootOptions, reroot

COUNT = 100  # above reroot's fork threshold
OPEN = re.compile(r'^open(?:at)?\((?:AT_FDCWD|\d+), "([^"]+)", ([^)]*)\) = \d+')


def _opens(kernel: Path, tree: Path, logs: Path) -> collections.Counter[str]:
    """Run ``vmpatch reroot`` under strace; how often each module file was opened to read.

    ``-ff`` writes one log per process, so the workers' calls are never split
    across lines by another process's.
    """
    strace = require_tool("strace", "strace")
    logs.mkdir()
    tool(
        strace, "-ff", "-qq", "-o", logs / "trace", "-e", "trace=open,openat",
        *vmpatch_argv("reroot", "--kernel", kernel, tree),
        env=python_env(),
    )  # fmt: skip
    counts: collections.Counter[str] = collections.Counter()
    for log in logs.iterdir():
        for line in log.read_text().splitlines():
            m = OPEN.match(line)
            if m and ".ko" in m.group(1) and "O_WRONLY" not in m.group(2):
                counts[m.group(1).rsplit("/", 1)[-1]] += 1
    return counts


def _module_names(tree: Path) -> list[str]:
    return [line.rsplit("/", 1)[-1] for line in (tree / "modules.order").read_text().split()]


def _opened_once_each(counts: collections.Counter[str], tree: Path, times: int) -> None:
    for name in _module_names(tree):
        found = [n for n in counts if n.startswith(name)]
        assert len(found) == 1, (name, found)
        assert counts[found[0]] == times, (name, counts[found[0]])


def test_a_no_op_rerun_reads_every_module_once(tmp_path: Path) -> None:
    tree, kernel = _big_tree(tmp_path / "top", count=COUNT)
    assert vmpatch("reroot", "--kernel", kernel, tree).returncode == 0
    before = _contents(tmp_path / "top")
    counts = _opens(kernel, tree, tmp_path / "strace")
    _opened_once_each(counts, tree, 1)
    assert _contents(tmp_path / "top") == before


def test_a_rewritten_kernel_has_every_module_judged_again(tmp_path: Path) -> None:
    """Modules already hold their proofs, but the kernel lost its root: planning's
    verdicts (against the old kernel: all rejected) must not stand."""
    tree, kernel = _big_tree(tmp_path, count=COUNT)
    assert vmpatch("reroot", "--kernel", kernel, tree).returncode == 0
    shutil.copy(KBUILD / "vmlinux", kernel)  # its old root, not the tree's
    counts = _opens(kernel, tree, tmp_path / "strace")
    _opened_once_each(counts, tree, 2)  # planning, then the verdict against the new root
    run = vmpatch("verify", "--kernel", kernel, "--modules", tree, "--json")
    assert run.json()["counts"]["accept"] == COUNT, run.stdout
    again = vmpatch("reroot", "--kernel", kernel, tree, "--json")
    assert again.returncode == 0, again.stderr
    assert again.json()["state"] == "already re-rooted"


def _report(tree: Path, kernel: Path) -> list[tuple[Any, ...]]:
    report = reroot(tree, RerootOptions(kernels=(kernel,), workers=2))
    return [(m.position, m.path, m.action, m.removed, m.verdict, m.reason) for m in report.modules]


def test_forked_and_threaded_runs_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    """First runs, no-op re-runs and a re-run over a damaged tree, both ways."""
    assert COUNT >= reroot_module._FORK_THRESHOLD and forkmap.can_fork()
    results = {}
    for way in ("forked", "threaded"):
        top = tmp_path / way
        tree, kernel = _big_tree(top, count=COUNT)
        if way == "threaded":
            monkeypatch.setattr(forkmap, "can_fork", lambda: False)
        first = _report(tree, kernel)
        second = _report(tree, kernel)
        victim = tree / "kernel/m0/mod0009.ko"  # plain: a flipped byte of its proof
        data = bytearray(victim.read_bytes())
        data[-50] ^= 0xFF
        victim.write_bytes(bytes(data))
        third = _report(tree, kernel)
        results[way] = (first, second, third, _contents(top))
    # Planned three times, judged after the first (all rewritten); the one module
    # the third rewrites is judged in threads (below the threshold).
    assert forks == [COUNT, COUNT, COUNT, COUNT], forks
    assert results["forked"] == results["threaded"]
    first, second, third, _ = results["forked"]
    assert {row[2].value for row in first} == {"proved"}
    assert {row[2].value for row in second} == {"unchanged"}
    assert [row[1] for row in third if row[2].value != "unchanged"] == ["kernel/m0/mod0009.ko"]
    assert {row[4].value for row in first + second + third} == {"ACCEPT"}
