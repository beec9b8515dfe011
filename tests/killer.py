# SPDX-License-Identifier: GPL-2.0-or-later
"""SIGKILL a real ``python -m vmpatch`` at chosen moments, for tests/test_crash_safety.py.

A crash cannot be simulated faithfully inside the process (``finally`` blocks
and context managers would still run), so the command line is started as a
subprocess and killed with SIGKILL, which nothing in the process can catch.
The kill moments are fractions of the wall time of one uninterrupted run, so
the sweep adapts to the machine's speed.

A kill only tests atomicity when it lands inside the write window: after the
first temp file appeared and before the last rename. Evenly spaced kills
mostly miss it (it is a small part of a run that is mostly start-up, reading
and hashing, and its timing jitters on a loaded machine), so the reference
run is watched for temp files to learn how long the window lasts, and half
the kills are triggered by the window itself: the run is watched until a temp
file appears, then killed after a delay spread over that length. Each kill's landing is read from
what it left behind (see :class:`Kill`), and a sweep whose kills did not land
inside the window often enough fails instead of passing empty.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clirun import spawn_vmpatch, vmpatch

from vmpatch.fs.atomic import TEMP_MARK

#: Evenly spaced kill moments inside one run, besides the immediate kill.
FRACTIONS = 20

#: The share of landed kills that must fall inside the write window by default.
WINDOW_SHARE = 0.15


def timed_run(*args: str | os.PathLike[str]) -> float:
    """Run ``vmpatch ARGS`` to completion; return its wall time (it must succeed)."""
    start = time.monotonic()
    proc = vmpatch(*args, timeout=None)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"vmpatch {args} failed: {proc.stderr}"
    return elapsed


def kill_points(duration: float, count: int = FRACTIONS) -> list[float]:
    """0 (kill at once) and ``count`` evenly spaced moments strictly inside ``duration``."""
    return [0.0] + [duration * k / (count + 1) for k in range(1, count + 1)]


def temps_under(directory: Path) -> set[Path]:
    """The temp files of atomic writes under ``directory`` right now.

    Earlier kills' leftovers stay (a later run must cope with them), so
    callers compare against what was there before the run started.
    """
    while True:
        try:
            return set(directory.rglob(f"*{TEMP_MARK}"))
        except OSError:  # an entry vanished while listing: look again
            continue


def watched_run(
    args: Sequence[str | os.PathLike[str]], watch: Path
) -> tuple[float, tuple[float, float] | None]:
    """Run ``vmpatch ARGS`` to completion, polling ``watch`` for temp files.

    Returns the wall time and the (first, last) moments a temp file was seen,
    relative to the start (None when none was ever seen).
    """
    old = temps_under(watch)
    start = time.monotonic()
    proc = spawn_vmpatch(*args)
    seen: list[float] = []
    while proc.poll() is None:
        if temps_under(watch) - old:
            seen.append(time.monotonic() - start)
        time.sleep(0.001)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"vmpatch {args} exited {proc.returncode}"
    return elapsed, (seen[0], seen[-1]) if seen else None


def window_delays(window: tuple[float, float] | None, count: int) -> list[float]:
    """``count`` delays after a temp file appears, spread over the observed window's length."""
    length = window[1] - window[0] if window else 0.0
    return [length * k / count for k in range(count)]


def run_and_kill_in_window(
    args: Sequence[str | os.PathLike[str]], watch: Path, delay: float
) -> int:
    """Start ``vmpatch ARGS``; once a temp file shows under ``watch``, wait ``delay``, SIGKILL.

    Returns the exit status like :func:`run_and_kill` (the command's own code
    when it finished before any temp file was seen or before the delay ran out).
    """
    old = temps_under(watch)
    proc = spawn_vmpatch(*args)
    while proc.poll() is None and not temps_under(watch) - old:
        pass  # poll as fast as possible: a window can be a few milliseconds
    if proc.poll() is None:
        if delay > 0:
            time.sleep(delay)
        proc.kill()
    return proc.wait()


def run_and_kill(args: Sequence[str | os.PathLike[str]], delay: float) -> int:
    """Start ``vmpatch ARGS``, SIGKILL it after ``delay`` seconds; return its exit status.

    The status is ``-SIGKILL`` when the kill landed, or the command's own
    exit code when it had already finished.
    """
    proc = spawn_vmpatch(*args)
    if delay > 0:
        time.sleep(delay)
    proc.kill()
    return proc.wait()


def listing(directory: Path) -> set[str]:
    """Every path under ``directory``, relative to it."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def processes_mentioning(text: str) -> list[int]:
    """Live (not zombie) processes other than this one whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state != "Z" and text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def wait_gone(text: str, timeout: float) -> tuple[list[int], list[int], float]:
    """Poll until no process mentions ``text``.

    Returns (processes seen at the first look, processes still alive at the
    timeout, seconds waited).
    """
    start = time.monotonic()
    first = processes_mentioning(text)
    alive = first
    while alive and time.monotonic() - start < timeout:
        time.sleep(0.02)
        alive = processes_mentioning(text)
    return first, alive, time.monotonic() - start


#: Where a kill landed relative to the command's writes.
BEFORE, INSIDE, AFTER = "before writing", "inside the write window", "after the last rename"


@dataclass(frozen=True)
class Kill:
    """One kill: when it was sent, and what it left.

    It landed *inside* the write window when it left a temp file (one had
    been created and not yet renamed) or a state that is neither the
    untouched start nor the complete result (e.g. some proofs of a tree
    written); otherwise *before* (the start state) or *after* (the result).
    """

    delay: float
    status: int
    state: str
    temps: tuple[str, ...]
    landed: str
    aimed: bool = False  # waited for the first temp file, then ``delay``


@dataclass
class Sweep:
    """What a sweep of kills observed, for the report and for sanity checks."""

    duration: float
    initial: str = ""
    window: tuple[float, float] | None = None  # when the watched run had temp files
    complete: str = ""
    states: Counter[str] = field(default_factory=Counter)
    killed: int = 0
    finished: int = 0
    leftovers: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)

    @property
    def landed(self) -> Counter[str]:
        """How many kills that landed (the process was running) fell before, inside, after."""
        return Counter(k.landed for k in self.kills if k.status == -9)

    def landings(self) -> str:
        """Where each kill landed, in order: ``b`` before writing, ``i`` inside the window,
        ``a`` after the last rename, ``-`` the run finished first; aimed kills in capitals."""
        letters = {BEFORE: "b", INSIDE: "i", AFTER: "a"}
        marks = [letters[k.landed] if k.status == -9 else "-" for k in self.kills]
        return "".join(m.upper() if k.aimed else m for m, k in zip(marks, self.kills, strict=True))

    def summary(self) -> str:
        states = ", ".join(f"{k}={v}" for k, v in sorted(self.states.items()))
        landed = self.landed
        window = (
            f"temp files seen {self.window[0]:.3f}-{self.window[1]:.3f}s"
            if self.window
            else "no temp file seen"
        )
        return (
            f"run {self.duration:.3f}s, {window}; "
            f"{self.killed} killed, {self.finished} finished first; "
            f"killed {landed[BEFORE]} before writing, {landed[INSIDE]} inside the write "
            f"window, {landed[AFTER]} after the last rename; "
            f"states {states}; {len(self.leftovers)} temp files left"
        )


def landing(state: str, temps: Sequence[str], initial: str, complete: str) -> str:
    """Where a kill that left ``state`` and ``temps`` landed (see :class:`Kill`)."""
    if temps or state not in (initial, complete):
        return INSIDE
    return BEFORE if state == initial else AFTER


def sweep(
    args: Sequence[str | os.PathLike[str]],
    duration: float,
    *,
    reset: Callable[[], None],
    check: Callable[[], tuple[str, list[str]]],
    count: int = FRACTIONS,
    watch: Path | None = None,
    window_share: float = WINDOW_SHARE,
    triggered: int | None = None,
    min_killed: int = 0,
    after: Callable[[int, Kill], None] | None = None,
) -> Sweep:
    """Kill ``vmpatch ARGS`` at every kill point; ``reset`` before, ``check`` after each.

    ``check`` raises AssertionError when the invariant is broken and
    otherwise names the state it found (counted in the result) and the temp
    files the kill left behind. It is first called on the reset state (its
    state is ``initial``), then after one complete run (``complete``); the
    mean of that run's wall time and ``duration`` spaces the kills, which
    evens out a slow cold first run without letting one quick run pull every
    kill point into the start-up. That run is watched for temp files under
    ``watch`` to learn the write window's length; ``count // 2`` more kills wait
    for a temp file to appear and land at delays spread over that length. At
    least ``window_share`` of the kills that landed must land inside the write
    window (``triggered`` sets how many kills wait for a temp file, instead of
    ``count // 2``) (0, and no ``watch``, for a command that writes
    nothing), so that the invariant was tested where it can break.

    Kills that come too late (the run finished first) do not count: while
    fewer than ``min_killed`` kills landed, or fewer than ``window_share`` of
    them inside the window (a window of a few milliseconds is easy to miss),
    more are made, up to twice the planned number, aimed like the triggered
    ones at delays spread over the window (or over the run without
    ``watch``). ``after(index, kill)`` is called after each kill's
    ``check``, on the state the kill left (before the next ``reset``): for
    checks too slow to make after every kill, such as a re-run.
    """
    assert watch is not None or window_share == 0, "a sweep of writes needs a directory to watch"
    reset()
    initial, temps = check()
    assert not temps, f"the reset state of vmpatch {args} has temp files {temps}"
    window = None
    if watch is None:
        duration = (duration + timed_run(*args)) / 2
    else:
        elapsed, window = watched_run(args, watch)
        duration = (duration + elapsed) / 2
    result = Sweep(duration, initial=initial, window=window)
    result.complete, temps = check()
    assert not temps, f"a complete run of vmpatch {args} left {temps}"
    moments: list[tuple[float, bool]] = [(d, False) for d in kill_points(duration, count)]
    if watch is not None:
        aimed = count // 2 if triggered is None else triggered
        moments += [(d, True) for d in window_delays(window, aimed)]
    extra = 0
    # The watched run polls for temp files all along, the aimed runs only until
    # the first: their windows are shorter. Each aimed kill that comes too late
    # (after the last rename, or the run finished) shrinks the later delays.
    scale = 1.0

    def short() -> bool:  # too few kills, or too few of them inside the write window
        if result.killed < min_killed:
            return True
        inside = math.ceil(window_share * result.killed)
        return watch is not None and result.landed[INSIDE] < inside

    limit = 2 * max(min_killed, count)
    while moments or (extra < limit and short()):
        if moments:
            delay, aimed_kill = moments.pop(0)
        else:  # top up: golden-ratio fractions spread the extra kills evenly
            extra += 1
            fraction = 0.9 * ((extra * 0.6180339887) % 1)
            if watch is None or window is None:
                delay, aimed_kill = duration * fraction, False
            else:
                delay, aimed_kill = (window[1] - window[0]) * fraction, True
        if aimed_kill:
            delay *= scale
        reset()
        if aimed_kill:
            assert watch is not None
            status = run_and_kill_in_window(args, watch, delay)
        else:
            status = run_and_kill(args, delay)
        if status == -9:
            result.killed += 1
        else:
            assert status == 0, f"vmpatch {args} exited {status} without being killed"
            result.finished += 1
        when = "after the first temp file" if aimed_kill else f"of {duration:.3f}s"
        try:
            state, temps = check()
        except AssertionError as err:
            raise AssertionError(f"after a kill at {delay:.3f}s {when}: {err}") from err
        result.states[state] += 1
        result.leftovers += temps
        where = landing(state, temps, result.initial, result.complete)
        kill = Kill(delay, status, state, tuple(temps), where, aimed_kill)
        result.kills.append(kill)
        if aimed_kill and (status != -9 or where == AFTER):
            scale *= 0.8
        if after is not None:
            try:
                after(len(result.kills) - 1, kill)
            except AssertionError as err:
                raise AssertionError(f"after a kill at {delay:.3f}s {when}: {err}") from err
    assert result.killed >= count // 2, f"most runs ended before their kill: {result.summary()}"
    needed = math.ceil(window_share * result.killed)
    assert result.landed[INSIDE] >= needed, (
        f"only {result.landed[INSIDE]} of {result.killed} kills landed inside the write window "
        f"(at least {needed} needed), so atomicity was hardly tested: {result.summary()}"
    )
    return result
