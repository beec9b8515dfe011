# SPDX-License-Identifier: GPL-2.0-or-later
"""SIGKILL a real ``python -m vmpatch`` at chosen moments, for tests/test_crash_safety.py.

A crash cannot be simulated faithfully inside the process (``finally`` blocks
and context managers would still run), so the command line is started as a
subprocess and killed with SIGKILL, which nothing in the process can catch.
The kill moments are fractions of the wall time of one uninterrupted run, so
the sweep adapts to the machine's speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Evenly spaced kill moments inside one run, besides the immediate kill.
FRACTIONS = 20


def command(*args: str | os.PathLike[str]) -> list[str]:
    """The argv of ``python -m vmpatch ARGS``."""
    return [sys.executable, "-m", "vmpatch", *map(str, args)]


def environment() -> dict[str, str]:
    """The repository on the path; no colour, no progress bar (stdout is not a TTY)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FORCE_COLOR", None)
    return env


def timed_run(*args: str | os.PathLike[str]) -> float:
    """Run ``vmpatch ARGS`` to completion; return its wall time (it must succeed)."""
    start = time.monotonic()
    proc = subprocess.run(
        command(*args), env=environment(), capture_output=True, text=True, check=False
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"vmpatch {args} failed: {proc.stderr}"
    return elapsed


def kill_points(duration: float, count: int = FRACTIONS) -> list[float]:
    """0 (kill at once) and ``count`` evenly spaced moments strictly inside ``duration``."""
    return [0.0] + [duration * k / (count + 1) for k in range(1, count + 1)]


def run_and_kill(args: Sequence[str | os.PathLike[str]], delay: float) -> int:
    """Start ``vmpatch ARGS``, SIGKILL it after ``delay`` seconds; return its exit status.

    The status is ``-SIGKILL`` when the kill landed, or the command's own
    exit code when it had already finished.
    """
    proc = subprocess.Popen(
        command(*args),
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


@dataclass
class Sweep:
    """What a sweep of kills observed, for the report and for sanity checks."""

    duration: float
    complete: str = ""
    states: Counter[str] = field(default_factory=Counter)
    killed: int = 0
    finished: int = 0
    leftovers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        states = ", ".join(f"{k}={v}" for k, v in sorted(self.states.items()))
        return (
            f"run {self.duration:.3f}s; {self.killed} killed, {self.finished} finished first; "
            f"states {states}; {len(self.leftovers)} temp files left"
        )


def sweep(
    args: Sequence[str | os.PathLike[str]],
    duration: float,
    *,
    reset: Callable[[], None],
    check: Callable[[], tuple[str, list[str]]],
    count: int = FRACTIONS,
) -> Sweep:
    """Kill ``vmpatch ARGS`` at every kill point; ``reset`` before, ``check`` after each.

    ``check`` raises AssertionError when the invariant is broken and
    otherwise names the state it found (counted in the result) and the temp
    files the kill left behind. One complete run comes first, checked the
    same way (its state is ``complete``); the mean of its wall time and
    ``duration`` spaces the kills, which evens out a slow cold first run
    without letting one quick run pull every kill point into the start-up.
    """
    reset()
    duration = (duration + timed_run(*args)) / 2
    result = Sweep(duration)
    result.complete, temps = check()
    assert not temps, f"a complete run of vmpatch {args} left {temps}"
    for delay in kill_points(duration, count):
        reset()
        status = run_and_kill(args, delay)
        if status == -9:
            result.killed += 1
        else:
            assert status == 0, f"vmpatch {args} exited {status} without being killed"
            result.finished += 1
        try:
            state, temps = check()
        except AssertionError as err:
            raise AssertionError(f"after a kill at {delay:.3f}s of {duration:.3f}s: {err}") from err
        result.states[state] += 1
        result.leftovers += temps
    assert result.killed >= count // 2, f"most runs ended before their kill: {result.summary()}"
    return result
