# SPDX-License-Identifier: GPL-2.0-or-later
"""The one way tests start processes: vmpatch, the hook, external tools, as a user.

Every child process of the test suite goes through this module, so that the
environment it sees is stated in one place:

* :func:`vmpatch` and :func:`hook` run the command line and the kbuild hook
  from this checkout (``PYTHONPATH``), with the terminal variables that change
  rich's colour and width removed, so each test names the terminal it means;
* :func:`tool` runs an external program (readelf, objcopy, xz, gcc, openssl)
  under ``LC_ALL=C``, so its output is parsed in the locale it was written for;
* ``unprivileged=True`` runs any of them as ``nobody`` when the suite runs as
  root (through ``setpriv``), so permission checks are exercised instead of
  skipped; :func:`traversable_dir` gives such a process a directory it can reach;
* :func:`spawn` (and :func:`spawn_vmpatch`, :func:`spawn_tool`) starts a child
  without waiting, for tests that signal, kill or race it.

``tests/test_test_infra.py`` fails when another test module starts a process
itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent

#: Environment variables that change colour or terminal detection in rich;
#: removed so that each test states the terminal it means.
#: TERM too: under TERM=dumb (common in CI) rich drops colour even with FORCE_COLOR.
TERMINAL_VARS = (
    "NO_COLOR",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "COLUMNS",
    "TERM",
)

#: The unprivileged identity root drops to (``setpriv(1)``; Debian's names).
NOBODY = ("nobody", "nogroup")

Arg = str | os.PathLike[str]


class Run(subprocess.CompletedProcess[Any]):
    """A finished child process; ``json()`` parses its stdout."""

    def json(self) -> Any:
        return json.loads(self.stdout)


#: Extra variables for a child; a value of None removes the variable.
Env = Mapping[str, str | None]


def _merged(base: dict[str, str], env: Env | None) -> dict[str, str]:
    for key, value in (env or {}).items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def python_env(env: Env | None = None) -> dict[str, str]:
    """This checkout first on ``PYTHONPATH``, no terminal variables, then ``env``."""
    full = {k: v for k, v in os.environ.items() if k not in TERMINAL_VARS}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return _merged(full, env)


def tool_env(env: Env | None = None) -> dict[str, str]:
    """The caller's environment under the C locale, then ``env``."""
    return _merged({**os.environ, "LC_ALL": "C", "LANG": "C"}, env)


def unprivileged_prefix() -> list[str]:
    """The argv prefix that makes a child unprivileged: ``setpriv`` to nobody as root, else none.

    A test that needs the kernel to refuse a write cannot get that refusal as
    root (root bypasses file modes), so it runs the child as ``nobody``.
    """
    if os.geteuid() != 0:
        return []
    from conftest import require_tool

    setpriv = require_tool("setpriv", "util-linux")
    user, group = NOBODY
    return [setpriv, f"--reuid={user}", f"--regid={group}", "--clear-groups"]


@contextmanager
def traversable_dir(prefix: str = "vmpatch-test-") -> Iterator[Path]:
    """A fresh 0755 directory under /tmp that an unprivileged child can reach.

    pytest's own temporary root is 0700 and owned by the user running the
    suite, so nothing under ``tmp_path`` is reachable by ``nobody``.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        for sub in [path, *path.rglob("*")]:  # undo any chmod a test left behind
            if sub.is_dir() and not sub.is_symlink():
                sub.chmod(0o755)
        shutil.rmtree(path)


def execute(
    argv: Sequence[Arg],
    *,
    env: Mapping[str, str],
    cwd: Arg | None = None,
    text: bool = True,
    input: str | bytes | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    timeout: float | None = None,
    unprivileged: bool = False,
    check: bool = False,
) -> Run:
    """Run ``argv`` to completion; with ``check`` a non-zero exit fails the test with stderr."""
    full = [*(unprivileged_prefix() if unprivileged else []), *map(str, argv)]
    proc = subprocess.run(
        full,
        env=dict(env),
        cwd=cwd,
        text=text,
        input=input,
        stdin=stdin if input is None else None,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"{' '.join(full)} exited {proc.returncode}: {proc.stderr!r}"
    return Run(proc.args, proc.returncode, proc.stdout, proc.stderr)


def vmpatch_argv(*args: Arg) -> list[str]:
    """The argv of ``python -m vmpatch ARGS``."""
    return [sys.executable, "-m", "vmpatch", *map(str, args)]


def vmpatch(
    *args: Arg,
    env: Env | None = None,
    cwd: Arg | None = None,
    timeout: float | None = 120,
    program: Sequence[str] | None = None,
    unprivileged: bool = False,
) -> Run:
    """``python -m vmpatch ARGS`` (or ``program ARGS``) from this checkout; never raises."""
    argv = [*program, *map(str, args)] if program else vmpatch_argv(*args)
    return execute(argv, env=python_env(env), cwd=cwd, timeout=timeout, unprivileged=unprivileged)


#: What a spawned child's streams may be: a pipe the test reads, nothing, or a file.
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL

#: A child process started by :func:`spawn` (the test signals, polls and reaps it).
Process = subprocess.Popen


def spawn(
    argv: Sequence[Arg],
    *,
    env: Mapping[str, str],
    text: bool = False,
    stdin: int | IO[Any] | None = DEVNULL,
    stdout: int | IO[Any] | None = DEVNULL,
    stderr: int | IO[Any] | None = DEVNULL,
) -> Process[Any]:
    """Start ``argv`` without waiting: for tests that signal, kill or race a running child.

    Streams default to nothing (``DEVNULL``); pass ``PIPE`` for the ones the
    test reads with ``communicate()``.
    """
    return subprocess.Popen(
        list(map(str, argv)), env=dict(env), text=text, stdin=stdin, stdout=stdout, stderr=stderr
    )


def spawn_vmpatch(
    *args: Arg,
    env: Env | None = None,
    text: bool = False,
    stdout: int | IO[Any] | None = DEVNULL,
    stderr: int | IO[Any] | None = DEVNULL,
) -> Process[Any]:
    """Start ``python -m vmpatch ARGS`` from this checkout without waiting (output discarded)."""
    return spawn(vmpatch_argv(*args), env=python_env(env), text=text, stdout=stdout, stderr=stderr)


def pipe_vmpatch(*args: Arg, env: Env | None = None) -> Process[bytes]:
    """Start ``python -m vmpatch ARGS`` with stdout and stderr as pipes the test reads."""
    return spawn_vmpatch(*args, env=env, stdout=PIPE, stderr=PIPE)


def spawn_tool(*argv: Arg, env: Env | None = None) -> Process[bytes]:
    """Start an external program under ``LC_ALL=C`` without waiting (output discarded)."""
    return spawn(argv, env=tool_env(env))


def pipe_hook(*args: Arg, env: Env | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m vmpatch.hook ARGS`` with stdout and stderr as pipes the test reads."""
    return subprocess.Popen(
        [sys.executable, "-m", "vmpatch.hook", *map(str, args)],
        env=python_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def hook(*args: Arg, env: Env | None = None, unprivileged: bool = False) -> Run:
    """``python -m vmpatch.hook ARGS``, the lean ``vmpatch-ko-append``, as kbuild runs it."""
    return execute(
        [sys.executable, "-m", "vmpatch.hook", *map(str, args)],
        env=python_env(env),
        timeout=120,
        unprivileged=unprivileged,
    )


def python(
    *args: Arg,
    env: Env | None = None,
    cwd: Arg | None = None,
    check: bool = False,
    timeout: float | None = 600,
    unprivileged: bool = False,
) -> Run:
    """This interpreter with ``args`` (``-c CODE``, a script, ``-m MODULE``) and this checkout."""
    return execute(
        [sys.executable, *args],
        env=python_env(env),
        cwd=cwd,
        timeout=timeout,
        check=check,
        unprivileged=unprivileged,
    )


def tool(
    *argv: Arg,
    check: bool = True,
    text: bool = False,
    env: Env | None = None,
    cwd: Arg | None = None,
    input: str | bytes | None = None,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    unprivileged: bool = False,
) -> Run:
    """An external program under ``LC_ALL=C``; by default a non-zero exit fails the test."""
    return execute(
        argv,
        env=tool_env(env),
        cwd=cwd,
        text=text,
        input=input,
        stdout=stdout,
        timeout=600,
        check=check,
        unprivileged=unprivileged,
    )


def tool_text(*argv: Arg, **kwargs: Any) -> str:
    """The stdout of a successful :func:`tool` run, as text."""
    return str(tool(*argv, text=True, **kwargs).stdout)
