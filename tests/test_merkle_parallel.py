# SPDX-License-Identifier: GPL-2.0-or-later
"""Parallel hashing gives the single-threaded answer, and its errors survive.

hash_leaves picks forked processes, threads or one thread depending on the
tree and the caller; every path must give identical leaves, and a failure in
a worker process must reach the caller as the same typed, one-line error.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import pytest
from formatref import leaf

from vmpatch import merkle
from vmpatch.errors import InputError, SystemFailure, UsageError, VmpatchError


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("mods")
    paths = []
    for i in range(300):  # above the process threshold
        path = base / f"m{i}.ko"
        path.write_bytes(os.urandom(17 * i + (1 << 20 if i % 97 == 0 else 0)))
        paths.append(path)
    return paths


def expected(paths: list[Path]) -> list[bytes]:
    """The leaves straight from docs/format.md, without vmpatch."""
    return [leaf(i, p.read_bytes()) for i, p in enumerate(paths)]


def test_processes_threads_and_one_thread_agree(modules: list[Path]) -> None:
    want = expected(modules)
    assert merkle.hash_leaves(modules, workers=1) == want
    assert merkle.hash_leaves(modules, workers=2) == want  # forked processes
    assert merkle.hash_leaves(modules, workers=3) == want
    assert merkle.hash_leaves(modules, workers=2, loader=Path.read_bytes) == want  # threads


def test_no_fork_while_another_thread_runs(
    modules: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library caller with threads must not be forked under (threads are used)."""

    def refuse(*_: object) -> None:
        raise AssertionError("forked while another thread was alive")

    monkeypatch.setattr(merkle, "_hash_in_processes", refuse)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert merkle.hash_leaves(modules, workers=2) == expected(modules)
    finally:
        stop.set()
        other.join()


def test_progress_reaches_the_total(modules: list[Path]) -> None:
    seen: list[int] = []
    merkle.hash_leaves(modules, workers=2, progress=seen.append)
    assert seen[-1] == len(modules) and seen == sorted(seen)


def test_a_failure_in_a_worker_process_reaches_the_caller(
    modules: list[Path], tmp_path: Path
) -> None:
    """A module handed out first, in the middle and last: each one's error arrives."""
    paths = [tmp_path / p.name for p in modules]
    for src, dst in zip(modules, paths, strict=True):
        dst.write_bytes(src.read_bytes())
    for victim in (0, len(paths) // 2, len(paths) - 1):
        saved = paths[victim].read_bytes()
        os.chmod(paths[victim], 0)
        if os.access(paths[victim], os.R_OK):  # root reads anything: use a directory
            os.chmod(paths[victim], 0o644)
            paths[victim].unlink()
            paths[victim].mkdir()
        with pytest.raises(VmpatchError) as caught:
            merkle.hash_leaves(paths, workers=2)
        assert str(paths[victim]) in str(caught.value)
        if paths[victim].is_dir():
            paths[victim].rmdir()
        paths[victim].write_bytes(saved)
        os.chmod(paths[victim], 0o644)


@pytest.mark.parametrize("cls", [InputError, UsageError, SystemFailure])
def test_errors_survive_pickling(cls: type[VmpatchError]) -> None:
    err = cls("/some/file", "what went wrong", hint="what to do")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert (back.path, back.reason, back.hint, str(back)) == (
        err.path,
        err.reason,
        err.hint,
        "/some/file: what went wrong",
    )
