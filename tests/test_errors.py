# SPDX-License-Identifier: GPL-2.0-or-later
"""One error and exit-code path for both entry points (issue 7, item 3).

Every exception class a run can end with is driven through ``vmpatch`` (the
CLI, :func:`vmpatch.cli.main`) and ``vmpatch-ko-append`` (the hook,
:func:`vmpatch.hook.main`), in-process with the library call replaced, and
the code and the one line each prints are compared with the contract as
this file writes it down: README's table, not the code's own mapping. A few
real subprocess runs deliver real signals; an fsync failure inside ``ko
strip`` and an unreadable file (as an unprivileged user) are real too.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import clirun
import pytest
from conftest import TESTDATA, require_tool

import vmpatch.ko.proof
from vmpatch import errors, hook
from vmpatch.cli import main as cli_main
from vmpatch.errors import (
    InputError,
    MismatchError,
    OutputClosed,
    SystemFailure,
    Terminated,
    ToolError,
    UnsupportedLayout,
    UsageError,
    VmpatchError,
)
from vmpatch.fs.lock import Busy

KBUILD = TESTDATA / "kbuild-x86_64"
MODULE = "/nowhere/m.ko"
PROOF = "/nowhere/m.ko.merkle"


@pytest.fixture(autouse=True)
def _keep_sigterm() -> Iterator[None]:
    """Both entry points install a SIGTERM handler; give pytest its own back."""
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)


# --- the cases: (exception, exit code, the line's text after the prefix) ------------

#: Each case: an exception, the exit code README's contract gives it, and the
#: message (with its hint) both entry points must print after their prefix.
CASES: list[tuple[str, BaseException, int, str | None]] = [
    ("InputError", InputError("/x/m.ko", "not an ELF file"), 2, "/x/m.ko: not an ELF file"),
    (
        "InputError+hint",
        InputError("/x/m.ko", "bad", hint="do this"),
        2,
        "/x/m.ko: bad (hint: do this)",
    ),
    ("UsageError", UsageError(None, "--a and --b go together"), 2, "--a and --b go together"),
    ("UnsupportedLayout", UnsupportedLayout("/x/v", "big section"), 2, "/x/v: big section"),
    ("MismatchError", MismatchError("/x/m.ko", "kernel would reject"), 1, None),
    ("SystemFailure", SystemFailure("/x/m.ko", "cannot write: No space left"), 3, None),
    (
        "Busy",
        Busy("/x/m.ko", "another vmpatch process is working on it (--no-wait given)"),
        3,
        "/x/m.ko: another vmpatch process is working on it (--no-wait given)",
    ),
    (
        "ToolError",
        ToolError("strip-x", "strip program not found", hint="install it", choose="STRIP"),
        4,
        "strip-x: strip program not found "
        "(hint: install it or pass --strip-program to name another program)",
    ),
    ("ToolError-plain", ToolError("strip", "failed: bad option"), 4, "strip: failed: bad option"),
    (
        "OSError-EACCES",
        PermissionError(errno.EACCES, "Permission denied", "/x/m.ko"),
        3,
        "/x/m.ko: Permission denied",
    ),
    (
        "OSError-ENOSPC",
        OSError(errno.ENOSPC, "No space left on device", "/x/dir"),
        3,
        "/x/dir: No space left on device",
    ),
    (
        "OSError-EIO-rename",
        OSError(errno.EIO, "Input/output error", "/x/a", None, "/x/b"),
        3,
        "/x/a -> /x/b: Input/output error",
    ),
    ("OSError-nofile", OSError(errno.EIO, "Input/output error"), 3, None),
    (
        "OSError-ENOENT",
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/gone"),
        2,
        "/x/gone: No such file or directory",
    ),
    ("OSError-ENOTDIR", NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/f/y"), 2, None),
    ("OSError-EISDIR", IsADirectoryError(errno.EISDIR, "Is a directory", "/x/d"), 2, None),
    ("KeyboardInterrupt", KeyboardInterrupt(), 130, "interrupted"),
    ("Terminated", Terminated(), 143, "terminated"),
    ("bug", ZeroDivisionError("division by zero"), 70, None),
]

SILENT = [
    ("OutputClosed", OutputClosed()),
    ("BrokenPipeError", BrokenPipeError(errno.EPIPE, "Broken pipe")),
]


def _message(err: BaseException, expected: str | None) -> str:
    if expected is not None:
        return expected
    if isinstance(err, VmpatchError):
        return str(err)
    if isinstance(err, OSError) and err.filename is None:
        return f"system error: {err.strerror}"
    if isinstance(err, OSError):
        return f"{err.filename}: {err.strerror}"
    return (
        f"internal error: {type(err).__name__}: {err} "
        "(hint: this is a bug in vmpatch; rerun with --debug and report the traceback)"
    )


def _raiser(err: BaseException) -> Callable[..., object]:
    def append_proof(*_args: object, **_kwargs: object) -> object:
        raise err

    return append_proof


def _run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    out = capsys.readouterr()
    code = stop.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err


def _run_hook(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = hook.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_error_class_has_a_case() -> None:
    """A new VmpatchError subclass must be added to CASES (and so to both entry points)."""

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    covered = {type(err) for _name, err, _code, _line in CASES}
    assert subclasses(VmpatchError) <= covered


@pytest.mark.parametrize(("name", "err", "code", "line"), CASES, ids=[c[0] for c in CASES])
def test_cli_and_hook_agree(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    err: BaseException,
    code: int,
    line: str | None,
) -> None:
    """The same exception gives the same code and the same one line through both."""
    monkeypatch.setattr(vmpatch.ko.proof, "append_proof", _raiser(err))
    message = _message(err, line)
    cli = _run_cli(capsys, ["ko", "append", MODULE, PROOF])
    assert cli == (code, "", f"error: {message}\n"), name
    hooked = _run_hook(capsys, [MODULE, PROOF])
    assert hooked == (code, "", f"vmpatch-ko-append: {message}\n"), name


@pytest.mark.parametrize(("name", "err"), SILENT, ids=[c[0] for c in SILENT])
def test_closed_stdout_is_141_and_silent(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    err: BaseException,
) -> None:
    monkeypatch.setattr(vmpatch.ko.proof, "append_proof", _raiser(err))
    assert _run_cli(capsys, ["ko", "append", MODULE, PROOF]) == (141, "", "")
    assert _run_hook(capsys, [MODULE, PROOF]) == (141, "", "")


def test_describe_agrees_with_the_table() -> None:
    """Every code describe() can return is a documented row of EXIT_STATUSES."""
    documented = {s.code for s in errors.EXIT_STATUSES}
    returned = {errors.describe(err).exit_code for _n, err, _c, _l in CASES}
    returned |= {errors.describe(err).exit_code for _n, err in SILENT}
    assert returned <= documented
    assert documented - returned == {0}  # every failure code is reachable


def test_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(vmpatch.ko.proof, "append_proof", _raiser(ZeroDivisionError("x")))
    code, _out, err = _run_cli(capsys, ["--debug", "ko", "append", MODULE, PROOF])
    assert code == 70 and "Traceback" in err and err.endswith("report the traceback)\n")
    code, _out, err = _run_hook(capsys, ["--debug", MODULE, PROOF])
    assert code == 70 and "Traceback" in err and err.endswith("report the traceback)\n")


# --- real processes, real signals ------------------------------------------------

_SIGNAL_SCRIPT = """
import os, signal, sys, time
import vmpatch.ko.proof

def append_proof(*args, **kwargs):
    os.kill(os.getpid(), signal.{signal})
    time.sleep(30)

vmpatch.ko.proof.append_proof = append_proof
{call}
"""

_CALLS = {
    "cli": ("from vmpatch.cli import main; main(['ko', 'append', 'm.ko', 'm.merkle'])", "error: "),
    "hook": (
        "from vmpatch.hook import main; sys.exit(main(['m.ko', 'm.merkle']))",
        "vmpatch-ko-append: ",
    ),
}


@pytest.mark.parametrize("entry", sorted(_CALLS))
@pytest.mark.parametrize(
    ("signame", "code", "word"), [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")]
)
def test_real_signals(entry: str, signame: str, code: int, word: str) -> None:
    call, prefix = _CALLS[entry]
    script = textwrap.dedent(_SIGNAL_SCRIPT).format(signal=signame, call=call)
    proc = clirun.python("-c", script, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, "", f"{prefix}{word}\n")


def _real(*args: str | Path, hook_entry: bool = False) -> clirun.Run:
    return clirun.hook(*args) if hook_entry else clirun.vmpatch(*args)


def test_real_missing_files(tmp_path: Path) -> None:
    """A file that is not there: exit 2 and its name, from both entry points."""
    module = tmp_path / "m.ko"
    proof = tmp_path / "gone.ko.merkle"
    shutil.copyfile(KBUILD / "lib" / "crc_toy.ko", module)
    for proc in (_real("ko", "append", module, proof), _real(module, proof, hook_entry=True)):
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.splitlines()) == 1
        assert f"{proof}: " in proc.stderr and "No such file" in proc.stderr


def test_fsync_dir_failure_in_ko_strip_is_a_system_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An EIO from fsync of the directory after the rename: exit 3 naming it, not a bug (70)."""
    require_tool("strip", "binutils")
    module = tmp_path / "crc_toy.ko"
    shutil.copyfile(KBUILD / "lib" / "crc_toy.ko", module)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, out, err = _run_cli(capsys, ["ko", "strip", "--install-mod-strip", "1", str(module)])
    assert code == 3, err
    assert out == ""
    assert err.endswith(f"error: {tmp_path}: cannot sync the directory: Input/output error\n")


# --- an unreadable file, as an unprivileged user -------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nobody may traverse (pytest's own tmp root is 0700)."""
    with clirun.traversable_dir(prefix="vmpatch-errors-") as path:
        yield path


def test_unreadable_files_are_system_failures(shared_dir: Path) -> None:
    """Not click's "Invalid value ... is not readable" (exit 2): `error: FILE: reason`, exit 3.

    Each entry point runs as ``nobody`` (``unprivileged=True``): root reads any file.
    """
    from vmpatch.workflow.tree import build_tree, plan_tree, write_proofs

    tree = shared_dir / "build"
    shutil.copytree(KBUILD, tree)
    plan = plan_tree(tree)
    write_proofs(plan, build_tree(plan))
    module, proof = Path(plan.modules[0].module), plan.modules[0].proof
    image = tree / "vmlinux"
    cli, kbuild_hook = clirun.vmpatch, clirun.hook
    cases: list[tuple[Callable[..., clirun.Run], list[str | Path], Path, str]] = [
        (cli, ["inspect", image], image, "error: "),
        (cli, ["ko", "append", module, proof], module, "error: "),
        (cli, ["ko", "append", module, proof], proof, "error: "),
        (cli, ["verify", "--kernel", image, module], image, "error: "),
        (cli, ["verify", "--kernel", image, module], module, "error: "),
        (kbuild_hook, [module, proof], module, "vmpatch-ko-append: "),
        (kbuild_hook, [module, proof], proof, "vmpatch-ko-append: "),
    ]
    for entry, argv, culprit, prefix in cases:
        culprit.chmod(0o200)  # write-only: even a check for writing would pass
        try:
            run = entry(*argv, unprivileged=True)
        finally:
            culprit.chmod(0o644)
        text = run.stderr
        lines = text.splitlines()
        assert run.returncode == 3, text
        assert len(lines) == 1, text
        assert lines[0].startswith(f"{prefix}{culprit}: "), lines[0]
        assert lines[0].endswith("Permission denied"), lines[0]


def test_no_click_path_checks() -> None:
    """click's Path(readable/exists/...) checks would pre-empt vmpatch's own errors."""
    import typer

    from vmpatch.cli.app import _register_commands, app

    _register_commands()

    def params(command: object) -> Iterator[tuple[str, object]]:
        for param in getattr(command, "params", []):
            yield getattr(command, "name", "?"), param
        for sub in (getattr(command, "commands", None) or {}).values():
            yield from params(sub)

    checked = []
    for command, param in params(typer.main.get_command(app)):
        kind = getattr(param, "type", None)
        flags = ("readable", "exists", "writable", "executable")
        if type(kind).__name__ in ("Path", "TyperPath") and any(
            getattr(kind, f, False) for f in flags
        ):
            checked.append(f"{command} {param.name}")  # type: ignore[attr-defined]
    assert checked == []
