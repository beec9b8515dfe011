# SPDX-License-Identifier: GPL-2.0-or-later
"""Map a function over many items in forked worker processes, results in order.

Threads convoy on the GIL when each item is a little Python around a short
C call (thousands of small modules), and only a single-threaded process may
safely map files it does not own: a file that shrinks under a mapping
raises SIGBUS, which kills the process. :func:`fork_map` runs ``func`` in
forked children instead, so such a crash ends one child, never the caller,
and becomes the result of the one item that caused it.

How it works, and why:

* Work is handed out in chunks through a pipe the children read 4-byte
  chunk numbers from (a pipe read of 4 bytes is never split on Linux):
  a child that finishes early takes more, so a slow item or a busy CPU does
  not leave the other workers idle at the end, and nothing is pickled on
  the way in (the children inherit the items).
* Each child sends one pickled frame of results per chunk; the caller
  places them by chunk, so the order is the items' whatever finished
  first, and ``progress`` counts exactly the items whose result arrived.
* Before each item a child writes the item's index into a page shared with
  the caller (a store, no system call). When a child dies of a signal or
  exits without a word, that index names the item it died on: the item
  gets ``crashed(index, why)`` as its result and the rest of the child's
  chunk is run again by new children. So ``func`` must be safe to run twice
  for an item (a pure read is).
* An exception ``func`` raises in a child is pickled to the caller and
  raised there, as a thread pool's ``map`` would raise it.

Fork only where :func:`can_fork` says so: with other threads alive, a
child may inherit a lock some other thread held (the CLI's progress bar
draws without a refresh thread for this reason).

Standard library only, imported lazily where it is not needed to decide.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading

from vmpatch.fs.atomic import write_all

#: typing loads only for type checkers (mypy reads this constant as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from collections.abc import Callable, Iterator, Sequence
    from typing import TypeVar

    R = TypeVar("R")

__all__ = ["MAX_TASKS", "can_fork", "fork_map", "take_tasks", "task_pipe"]

#: A result frame's header: the chunk number (-1: a pickled exception follows), the length.
_FRAME = struct.Struct("<iI")
#: A task: one chunk number.
_TASK = struct.Struct("<I")
#: Per worker, in the shared page: the chunk it holds, the item it is running (-1: none).
_SLOT = struct.Struct("<qq")
#: The task pipe is filled before any child starts, so all tasks must fit in its
#: buffer (64 KiB on Linux, at least 4 KiB anywhere).
MAX_TASKS = 1024


def task_pipe(count: int) -> int:
    """A pipe holding the task numbers ``0 .. count - 1`` and no writer: its read end.

    Children forked after this take tasks with :func:`take_tasks`, each task
    going to exactly one of them: a child that finishes early takes more.
    """
    if count > MAX_TASKS:
        raise ValueError(f"{count} tasks do not fit in a pipe's buffer (at most {MAX_TASKS})")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"".join(_TASK.pack(number) for number in range(count)))
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)  # the children see the end of the tasks once they are taken
    return read_end


def take_tasks(read_end: int) -> Iterator[int]:
    """Task numbers from :func:`task_pipe`'s read end until none is left (a pipe read
    of 4 bytes is never split on Linux, so two children never share one)."""
    while task := os.read(read_end, _TASK.size):
        yield _TASK.unpack(task)[0]


def can_fork() -> bool:
    """Whether this process may fork workers: it can, and no other thread is alive."""
    return hasattr(os, "fork") and threading.active_count() == 1


def fork_map(
    func: Callable[[int], R],
    count: int,
    *,
    workers: int,
    crashed: Callable[[int, str], R],
    progress: Callable[[int], None] | None = None,
    order: Sequence[int] | None = None,
    chunk: int = 16,
    convert: Callable[[int, R], object] | None = None,
) -> list[R]:
    """``[func(i) for i in range(count)]``, computed in ``workers`` forked children.

    ``func`` runs in a child only and its results must pickle. ``crashed``
    gives the result of an item whose child died on it, with a sentence
    saying how (in this process). ``progress`` is called here with the
    number of results received so far. ``order`` is the order in which
    items are handed out (largest first balances best); ``chunk`` is how
    many go to a child at once (its results come back in one write).
    ``convert(i, result)``, if given, is what is kept of each result, made
    here as it arrives: while the children work, this process's time is
    shared with them rather than added after them (the caller then holds
    converted values in the returned list). The caller checks
    :func:`can_fork` first.
    """
    workers = max(1, workers)
    pending = list(order) if order is not None else list(range(count))
    if sorted(pending) != list(range(count)):
        raise ValueError("order must list every index once")
    tally = _Tally(crashed, progress, count, convert)
    while pending:
        size = max(chunk, -(-len(pending) // MAX_TASKS))
        chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
        before = tally.done
        _one_round(func, chunks, min(workers, len(chunks)), tally)
        pending, tally.rerun = tally.rerun, []
        if pending and tally.done == before:  # children die before any item: stop there
            for index in pending:
                tally.crash(index, "its worker process died before it started")
            pending = []
    return tally.results  # type: ignore[return-value]  # every slot is filled


class _Tally:
    """The results so far, the count ``progress`` is told, and what is to run again."""

    def __init__(
        self,
        crashed: Callable[[int, str], R],
        progress: Callable[[int], None] | None,
        count: int,
        convert: Callable[[int, R], object] | None = None,
    ) -> None:
        self.results: list[object] = [None] * count
        self.done = 0
        self.rerun: list[int] = []
        self._crashed = crashed
        self._progress = progress
        self._convert = convert

    def received(self, indexes: list[int], values: list[object]) -> None:
        convert = self._convert
        for index, value in zip(indexes, values, strict=True):
            self.results[index] = value if convert is None else convert(index, value)  # type: ignore[arg-type]
        self._count(len(indexes))

    def crash(self, index: int, why: str) -> None:
        value = self._crashed(index, why)
        self.results[index] = value if self._convert is None else self._convert(index, value)
        self._count(1)

    def lost(self, indexes: list[int], culprit: int | None, why: str) -> None:
        """A child died holding ``indexes``: ``culprit`` (if known) crashed, the rest rerun."""
        if culprit is not None:
            self.crash(culprit, why)
        self.rerun.extend(i for i in indexes if i != culprit)

    def _count(self, more: int) -> None:
        self.done += more
        if self._progress:
            self._progress(self.done)


def _one_round(
    func: Callable[[int], object], chunks: list[list[int]], workers: int, tally: _Tally
) -> None:
    """Run ``chunks`` once through ``workers`` children; report each chunk as it ends."""
    import faulthandler
    import mmap
    import pickle
    import signal

    del faulthandler, pickle, signal  # imported once here, not in every child

    shared = mmap.mmap(-1, _SLOT.size * workers)  # MAP_SHARED | MAP_ANONYMOUS
    tasks_read = task_pipe(len(chunks))
    children: dict[int, tuple[int, int]] = {}  # result pipe -> (pid, worker number)
    try:
        for worker in range(workers):
            _SLOT.pack_into(shared, _SLOT.size * worker, -1, -1)
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                os.close(read_end)
                _child(func, chunks, tasks_read, write_end, shared, worker)
            os.close(write_end)
            children[read_end] = (pid, worker)
        os.close(tasks_read)
        tasks_read = -1
        _collect(children, chunks, shared, tally)
    finally:
        for read_end, (pid, _worker) in children.items():  # only left on an exception
            _end_child(pid, read_end)
        if tasks_read >= 0:
            os.close(tasks_read)
        shared.close()


def _child(  # pragma: no cover - runs in a forked child
    func: Callable[[int], object],
    chunks: list[list[int]],
    tasks: int,
    out: int,
    shared: object,
    worker: int,
) -> None:
    """Take chunks until none is left, sending each one's results; never returns."""
    import pickle
    import signal

    status = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller stops its workers itself
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        import faulthandler

        faulthandler.disable()  # a SIGBUS is a result here, not a traceback on stderr
        at = _SLOT.size * worker
        for number in take_tasks(tasks):
            values = []
            for index in chunks[number]:
                _SLOT.pack_into(shared, at, number, index)  # type: ignore[arg-type]
                values.append(func(index))
            _SLOT.pack_into(shared, at, number, -1)  # type: ignore[arg-type]  # sending
            payload = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
            write_all(out, _FRAME.pack(number, len(payload)) + payload)
            _SLOT.pack_into(shared, at, -1, -1)  # type: ignore[arg-type]
    except BaseException as err:
        status = 1
        try:
            payload = pickle.dumps(err, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            payload = pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))
        with contextlib.suppress(BaseException):
            write_all(out, _FRAME.pack(-1, len(payload)) + payload)
    finally:
        os._exit(status)


def _collect(
    children: dict[int, tuple[int, int]], chunks: list[list[int]], shared: mmap.mmap, tally: _Tally
) -> None:
    """Read every child's frames as they come; account for each child as it ends."""
    import pickle
    import selectors

    unreported = set(range(len(chunks)))
    buffers = {fd: bytearray() for fd in children}
    with selectors.DefaultSelector() as selector:
        for fd in children:
            selector.register(fd, selectors.EVENT_READ)
        while children:
            for key, _ in selector.select():
                fd = int(key.fd)
                piece = os.read(fd, 1 << 16)
                buffer = buffers[fd]
                if piece:
                    buffer += piece
                    while len(buffer) >= _FRAME.size:
                        number, length = _FRAME.unpack_from(buffer)
                        if len(buffer) < _FRAME.size + length:
                            break
                        payload = bytes(buffer[_FRAME.size : _FRAME.size + length])
                        del buffer[: _FRAME.size + length]
                        if number < 0:  # the caller stops the other workers
                            raise _unpickled_error(payload)
                        unreported.discard(number)
                        tally.received(chunks[number], pickle.loads(payload))
                    continue
                selector.unregister(fd)
                pid, worker = children.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                held, running = _SLOT.unpack_from(shared, _SLOT.size * worker)
                if status != 0 and held in unreported:
                    unreported.discard(held)
                    culprit = running if running >= 0 else None
                    tally.lost(chunks[held], culprit, _death(status))
    for number in sorted(unreported):  # taken by a child that died between two chunks
        tally.lost(chunks[number], None, "its worker process died")


def _unpickled_error(payload: bytes) -> BaseException:
    import pickle

    try:
        error = pickle.loads(payload)
    except Exception as err:
        return RuntimeError(f"a worker process failed and its error could not be read: {err}")
    if isinstance(error, BaseException):
        return error
    return RuntimeError(f"a worker process failed: {error!r}")


def _death(status: int) -> str:
    """How a worker process ended, in words."""
    import signal

    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGBUS:
            return "its worker process died of SIGBUS (the file shrank while it was mapped)"
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"its worker process was killed by {name}"
    return f"its worker process exited with status {os.WEXITSTATUS(status)}"


def _end_child(pid: int, read_end: int) -> None:
    """Stop and reap a worker this process no longer waits for."""
    import signal

    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        os.close(read_end)
