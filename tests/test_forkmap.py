# SPDX-License-Identifier: GPL-2.0-or-later
"""fork_map gives a plain loop's results, in order, and a dying worker costs one item.

The crashes are real: a mapping read after its file was truncated (SIGBUS),
a worker killing itself, a worker exiting mid-chunk. After every run no
child is left behind.
"""

from __future__ import annotations

import mmap
import os
import signal
import threading
from pathlib import Path

import pytest

from vmpatch.fs import forkmap


def _no_children_left() -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def _crashed(index: int, why: str) -> str:
    return f"crashed {index}: {why}"


@pytest.mark.parametrize(("workers", "chunk"), [(1, 16), (2, 1), (2, 16), (3, 7), (8, 64)])
def test_results_come_back_in_order(workers: int, chunk: int) -> None:
    count = 500
    seen: list[int] = []
    got = forkmap.fork_map(
        lambda i: (i, os.getpid(), "x" * (i % 50)),
        count,
        workers=workers,
        crashed=_crashed,
        progress=seen.append,
        chunk=chunk,
    )
    assert [r[0] for r in got] == list(range(count))
    assert [r[2] for r in got] == ["x" * (i % 50) for i in range(count)]
    assert os.getpid() not in {r[1] for r in got}  # computed in children only
    assert len({r[1] for r in got}) <= workers
    assert seen == sorted(seen) and seen[-1] == count and len(set(seen)) == len(seen)
    _no_children_left()


def test_the_order_given_is_the_order_handed_out() -> None:
    order = list(reversed(range(100)))
    got = forkmap.fork_map(lambda i: i * i, 100, workers=2, crashed=_crashed, order=order)
    assert got == [i * i for i in range(100)]
    with pytest.raises(ValueError):
        forkmap.fork_map(lambda i: i, 3, workers=2, crashed=_crashed, order=[0, 0, 1])


def test_nothing_to_do() -> None:
    assert forkmap.fork_map(lambda i: i, 0, workers=2, crashed=_crashed) == []


def test_an_exception_in_a_worker_reaches_the_caller() -> None:
    def func(index: int) -> int:
        if index == 123:
            raise KeyError(f"item {index}")
        return index

    with pytest.raises(KeyError, match="item 123"):
        forkmap.fork_map(func, 300, workers=2, crashed=_crashed)
    _no_children_left()


def test_an_unpicklable_result_is_an_error() -> None:
    with pytest.raises(Exception, match=r"pickle|lock"):
        forkmap.fork_map(lambda i: threading.Lock(), 10, workers=2, crashed=_crashed)
    _no_children_left()


def test_sigbus_of_a_shrunk_mapping_is_that_items_result(tmp_path: Path) -> None:
    """The kernel sends SIGBUS for a mapped page past the end of a truncated file."""
    victim = 77

    def func(index: int) -> int:
        if index != victim:
            return index * 2
        path = tmp_path / f"shrinks-{os.getpid()}"
        path.write_bytes(b"m" * (4 * mmap.PAGESIZE))
        with path.open("rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        os.truncate(path, 0)
        return mapped[3 * mmap.PAGESIZE]  # SIGBUS here

    seen: list[int] = []
    got = forkmap.fork_map(func, 200, workers=2, crashed=_crashed, progress=seen.append)
    assert got[victim] == (
        f"crashed {victim}: its worker process died of SIGBUS (the file shrank while it was mapped)"
    )
    assert got[:victim] + got[victim + 1 :] == [i * 2 for i in range(200) if i != victim]
    assert seen == sorted(seen) and seen[-1] == 200
    _no_children_left()


@pytest.mark.parametrize(
    ("death", "why"),
    [
        (lambda: os.kill(os.getpid(), signal.SIGKILL), "its worker process was killed by SIGKILL"),
        (lambda: os.kill(os.getpid(), signal.SIGSEGV), "its worker process was killed by SIGSEGV"),
        (lambda: os._exit(3), "its worker process exited with status 3"),
    ],
)
def test_a_worker_dying_on_an_item_costs_that_item_only(death: object, why: str) -> None:
    victims = {5, 6, 150}  # two in one chunk: the rerun of a chunk can crash again

    def func(index: int) -> int:
        if index in victims:
            death()  # type: ignore[operator]
        return -index

    got = forkmap.fork_map(func, 300, workers=2, crashed=_crashed, chunk=16)
    assert [got[i] for i in sorted(victims)] == [f"crashed {i}: {why}" for i in sorted(victims)]
    assert [g for i, g in enumerate(got) if i not in victims] == [
        -i for i in range(300) if i not in victims
    ]
    _no_children_left()


def test_convert_runs_here_on_every_result_as_it_arrives() -> None:
    """``convert`` is applied in the caller to each result, crashed ones too, once each."""
    pid = os.getpid()
    converted: list[int] = []

    def func(index: int) -> int:
        if index == 7:
            os._exit(3)
        return index * 2

    def convert(index: int, value: object) -> tuple[int, object, int]:
        converted.append(index)
        return index, value, os.getpid()

    got = forkmap.fork_map(func, 100, workers=2, crashed=_crashed, chunk=8, convert=convert)
    assert sorted(converted) == list(range(100)), "each result converted once"
    assert all(where == pid for _, _, where in got), "converted in the caller"
    assert got[7] == (7, "crashed 7: its worker process exited with status 3", pid)
    assert [value for index, value, _ in got if index != 7] == [i * 2 for i in range(100) if i != 7]
    _no_children_left()


def test_no_fork_with_another_thread_alive() -> None:
    assert forkmap.can_fork()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not forkmap.can_fork()
    finally:
        stop.set()
        other.join()
    assert forkmap.can_fork()
