# SPDX-License-Identifier: GPL-2.0-or-later
"""INSTALL_MOD_STRIP, reproduced exactly as kbuild applies it (docs/format.md section 5).

With MODULE_HASHES the bytes hashed must be the bytes installed, so when
modules are stripped the tree is computed over ``%.ko.stripped`` files that
kbuild makes with ``cp $< $@`` followed by ``$(STRIP) $(mod-strip-option) $@``.
vmpatch must produce the same bytes: the same option list, the same strip
program (GNU strip and llvm-strip differ byte-wise) and nothing else. This
module maps INSTALL_MOD_STRIP and the make variables to that command, runs
it, and records which program and version produced a tree so a later run
can tell whether it would reproduce the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure, ToolError
from vmpatch.fs.atomic import TEMP_MARK, fsync_dir
from vmpatch.records.striprecord import StripRecord
from vmpatch.records.trailer import MARKER

__all__ = [
    "SIGNATURE_MARKER",
    "probe_program",
    "strip_modules",
    "strip_options",
    "strip_program",
]

SIGNATURE_MARKER = MARKER  # a module ending with it carries a trailer strip would drop
"""The 28-byte trailer marker (docs/format.md section 3)."""


def strip_options(install_mod_strip: str | None) -> list[str] | None:
    """The options kbuild passes to ``$(STRIP)`` for an INSTALL_MOD_STRIP value.

    ``None`` means "do not strip, copy unchanged" (make's ``ifdef`` is false
    for an unset or empty variable). ``"1"`` means ``--strip-debug``. Any
    other value is the option list itself; make pastes it unquoted into a
    shell command, so it is split the way the shell would split it. A value
    of only blanks is "defined" for make and gives an empty list: strip runs
    with no options, i.e. strips everything, exactly as kbuild would.
    """
    if not install_mod_strip:
        return None
    if install_mod_strip == "1":
        return ["--strip-debug"]
    try:
        return shlex.split(install_mod_strip)
    except ValueError as err:
        raise InputError(None, f"INSTALL_MOD_STRIP={install_mod_strip!r}: {err}") from None


def strip_program(
    *, llvm: str | None = None, cross_compile: str = "", override: str | None = None
) -> str:
    """The ``$(STRIP)`` of kbuild's top Makefile.

    ``override`` is ``make STRIP=...``: a command-line variable beats the
    Makefile's assignment. An environment variable ``STRIP`` does not (the
    Makefile assigns STRIP unconditionally, and make lets a Makefile
    assignment win over the environment unless ``-e`` is used), so it is
    deliberately not consulted here. ``llvm`` is the value of ``LLVM``:
    ``"1"``, a prefix directory ending in ``/``, or a version suffix starting
    with ``-``; ``cross_compile`` is ``CROSS_COMPILE``.
    """
    if override:
        return override
    if llvm:
        if llvm.endswith("/"):
            return f"{llvm}llvm-strip"
        if llvm.startswith("-"):
            return f"llvm-strip{llvm}"
        return "llvm-strip"
    return f"{cross_compile}strip"


def _package_hint(program: str) -> str:
    """Where the program comes from; the entry point adds how to name another one."""
    name = Path(program).name
    if "llvm" in name:
        return "install it (apt-get install llvm)"
    prefix = name[: -len("strip")] if name.endswith("strip") else ""
    package = f"binutils-{prefix.rstrip('-')}" if prefix else "binutils"
    return f"install it (apt-get install {package})"


def _not_found(program: str) -> ToolError:
    return ToolError(
        program, "strip program not found", hint=_package_hint(program), choose="STRIP"
    )


def _resolve(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise _not_found(program)
    return found


def probe_program(install_mod_strip: str | None, program: str) -> StripRecord:
    """Build the :class:`StripRecord` for stripping with ``program`` now.

    Runs ``program --version``; a missing or failing program is a
    :class:`ToolError`. When INSTALL_MOD_STRIP says "do not strip" the
    program is not needed and not probed.
    """
    if strip_options(install_mod_strip) is None:
        return StripRecord(install_mod_strip or None, program)
    path = _resolve(program)
    try:
        proc = subprocess.run(
            [path, "--version"], capture_output=True, text=True, errors="replace", check=False
        )
    except OSError as err:
        raise ToolError(program, f"cannot run: {err.strerror or err}") from None
    if proc.returncode != 0:
        raise ToolError(program, f"--version failed: {_first_line(proc.stderr)}")
    return StripRecord(install_mod_strip, program, os.path.realpath(path), _first_line(proc.stdout))


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _unlink_quietly(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):
        Path(path).unlink()


def _check_no_trailer(src: Path) -> None:
    """Refuse a module that already carries a trailer: strip would drop it silently."""
    try:
        with open(src, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < len(SIGNATURE_MARKER):
                return
            fh.seek(size - len(SIGNATURE_MARKER))
            tail = fh.read()
    except FileNotFoundError:
        raise InputError(src, "module not found") from None
    except OSError as err:
        raise SystemFailure.from_oserror(src, err, "read") from None
    if tail == SIGNATURE_MARKER:
        raise InputError(
            src,
            "already carries an appended signature or proof; stripping would drop it",
            hint="strip the module as built, before signing or appending a proof",
        )


def _arg_budget() -> int:
    """Bytes of command-line arguments one strip invocation may use.

    Linux counts arguments and environment against ARG_MAX together; half
    of what is left after the environment, capped, keeps a wide margin.
    """
    try:
        arg_max = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        arg_max = 128 * 1024
    env = sum(len(k) + len(v) + 2 for k, v in os.environ.items())
    return max(4096, min((arg_max - env) // 2, 1024 * 1024))


def _batches(head: list[str], files: list[str], budget: int) -> list[list[str]]:
    """Split ``files`` into commands ``head + chunk`` each within ``budget`` bytes."""
    base = sum(len(os.fsencode(a)) + 1 for a in head)
    batches: list[list[str]] = []
    chunk: list[str] = []
    used = base
    for name in files:
        cost = len(os.fsencode(name)) + 1
        if chunk and used + cost > budget:
            batches.append(head + chunk)
            chunk, used = [], base
        chunk.append(name)
        used += cost
    if chunk:
        batches.append(head + chunk)
    return batches


def _copy_to_temp(src: Path, dst: Path) -> str:
    """``cp src dst`` into a temporary file next to ``dst``; return the temp path."""
    try:
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=TEMP_MARK)
    except OSError as err:
        raise SystemFailure.from_oserror(dst, err, "create a temporary file for") from None
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1024 * 1024)
        shutil.copymode(src, tmp)
    except FileNotFoundError:
        _unlink_quietly(tmp)
        raise InputError(src, "module not found") from None
    except OSError as err:
        _unlink_quietly(tmp)
        raise SystemFailure.from_oserror(dst, err, "write") from None
    return tmp


def _fsync_file(path: str, dst: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise SystemFailure.from_oserror(dst, err, "write") from None


def _run_strip(argv: list[str], program: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
    except FileNotFoundError:
        raise _not_found(program) from None
    except OSError as err:
        raise ToolError(program, f"cannot run: {err.strerror or err}") from None
    if proc.returncode != 0:
        detail = _first_line(proc.stderr) or f"exit status {proc.returncode}"
        raise ToolError(program, f"failed: {detail}")


def strip_modules(
    pairs: Sequence[tuple[Path, Path]],
    options: Sequence[str] | None,
    program: str,
    *,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Make each ``dst`` from its ``src`` as kbuild makes ``%.ko.stripped``.

    With ``options`` ``None`` each ``dst`` is a plain copy. Otherwise each
    source is copied to a temporary file next to its ``dst`` and ``program
    *options`` runs once over as many of those files as fit in ARG_MAX (GNU
    strip and llvm-strip apply the options to every file operand, and give
    the same bytes as one call per file). Only when every call succeeded are
    the temporary files renamed over the destinations, so a failure leaves
    no destination half-made. Each command is passed to ``echo`` as
    ``+ cmd`` the way kbuild would run it, on the destination names: each
    temporary copy is named by the file it becomes, never by its own
    throw-away name.

    Sources that already end with the signature marker are refused before
    anything runs: stripping would silently drop the trailer.
    """
    if options is not None:
        for src, _dst in pairs:
            _check_no_trailer(Path(src))
    temps: list[tuple[str, Path]] = []
    try:
        for src, dst in pairs:
            temps.append((_copy_to_temp(Path(src), Path(dst)), Path(dst)))
        if options is not None and temps:
            resolved = _resolve(program)
            head = [program, *options]
            real = {tmp: str(dst) for tmp, dst in temps}
            for argv in _batches(head, [tmp for tmp, _ in temps], _arg_budget()):
                if echo is not None:  # as kbuild runs it: on the real %.ko.stripped names
                    shown = head + [real[tmp] for tmp in argv[len(head) :]]
                    echo(f"+ {shlex.join(shown)}")
                _run_strip([resolved, *argv[1:]], program)
        for tmp, dst in temps:  # strip rewrote them: make the content durable first
            _fsync_file(tmp, dst)
        for tmp, dst in temps:
            try:
                Path(tmp).replace(dst)
            except OSError as err:
                raise SystemFailure.from_oserror(dst, err, "replace") from None
        for directory in {dst.parent for _tmp, dst in temps}:
            fsync_dir(directory)
        temps.clear()
    finally:
        for tmp, _dst in temps:
            _unlink_quietly(tmp)
