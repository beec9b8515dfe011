# SPDX-License-Identifier: GPL-2.0-or-later
"""README's "command-line contract", pinned with real subprocess runs.

Scripts and kbuild call vmpatch and branch on its exit code, parse its JSON
and grep its stderr; a refactor of the CLI must not change any of that
silently. Every test runs ``python -m vmpatch`` in a child process (and the
installed ``vmpatch`` script where one belongs to this interpreter), because
exit codes, stream separation, colour and start-up cost only exist there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clirun
import pytest
from clirun import Run, python, tool, vmpatch
from conftest import ROOT, TESTDATA, require

from vmpatch import FORMAT_VERSION, __version__

VMLINUX = TESTDATA / "x86_64" / "vmlinux"
VMLINUX_BE = TESTDATA / "s390x" / "vmlinux"
KBUILD = TESTDATA / "kbuild-x86_64"
ROOT_HEX = "ab" * 32


def _script() -> str | None:
    """The ``vmpatch`` console script installed for this interpreter, if any."""
    beside = Path(sys.executable).with_name("vmpatch")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return None


RUNNERS = ["module", "script"]


def _command(runner: str) -> list[str]:
    if runner == "module":
        return [sys.executable, "-m", "vmpatch"]
    script = _script()
    if script is None:
        require(False, "no vmpatch script installed beside this interpreter (pip install -e .)")
    assert script is not None
    return [script]


def _env(**extra: str) -> dict[str, str]:
    """Variables a test sets on top of the runner's terminal-free environment."""
    return dict(extra)


def run(
    *args: str | os.PathLike[str], runner: str = "module", env: dict[str, str] | None = None
) -> Run:
    """Run vmpatch with ``args``; never raises on a non-zero exit."""
    return vmpatch(*args, program=_command(runner), env=env, cwd=ROOT)


def _command_paths() -> Iterator[tuple[str, ...]]:
    import typer

    from vmpatch.cli.app import _register_commands, app

    _register_commands()

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from walk(sub, (*path, name))

    return walk(typer.main.get_command(app), ())


def _assert_one_error_line(result: Run, *needles: str) -> str:
    """Exit 2, nothing on stdout, exactly one ``error:`` line naming ``needles``."""
    assert needles and all(needles), "without an expected message any error line would pass"
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in result.stderr
    return lines[0]


# --- packaging ------------------------------------------------------------------


def _shipped_packages(listing: list[str], prefix: str = "") -> set[str]:
    """Dotted package names with an ``__init__.py`` among archive members (minus ``prefix``)."""
    return {
        ".".join(Path(name[len(prefix) :]).parent.parts)
        for name in listing
        if name.startswith(prefix) and name.endswith("/__init__.py")
    }


def test_every_package_is_installed(tmp_path: Path) -> None:
    """The console scripts live in sub-packages; a wheel without them has no CLI at all.

    Editable installs and PYTHONPATH runs hide this, so a real wheel and sdist
    are built from a copy of the sources (``pip wheel --no-deps``, setuptools'
    own ``build_sdist``) and listed: every directory under ``vmpatch/`` with an
    ``__init__.py`` must be in both, whatever discovery pyproject.toml uses.
    """
    import tarfile
    import zipfile

    present = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "vmpatch").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    # The layers ARCHITECTURE.md names: a discovery rule that dropped one would
    # otherwise only show up as a smaller `present`.
    layers = {"records", "fs", "elf", "boot", "ko", "workflow", "cli", "cli.commands"}
    assert {f"vmpatch.{layer}" for layer in layers} <= present, present
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "testdata", "__pycache__")
    )
    dist = tmp_path / "dist"
    built = python("-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("vmpatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = _shipped_packages(archive.namelist())
    assert sorted(present - in_wheel) == [], wheel
    require(
        python("-c", "import setuptools.build_meta").returncode == 0,
        "setuptools is not installed in this interpreter (pip install setuptools)",
    )
    made = python(
        "-c",
        f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))",
        cwd=source,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    sdist = dist / made.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as archive:
        in_sdist = _shipped_packages(archive.getnames(), sdist.name.removesuffix(".tar.gz") + "/")
    assert sorted(present - in_sdist) == [], sdist


# --- --version, --help ---------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_version(runner: str) -> None:
    """`--version` is how packagers and bug reports learn the version and on-disk format."""
    result = run("--version", runner=runner)
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout
    assert FORMAT_VERSION in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("path", list(_command_paths()), ids=lambda p: " ".join(p) or "vmpatch")
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_for_every_command(path: tuple[str, ...], flag: str) -> None:
    """Both help spellings work on every command and sub-command, on stdout, exit 0."""
    result = run(*path, flag)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    assert " ".join(("vmpatch", *path)) in " ".join(result.stdout.split())


# --- errors: exit 2, one line, no traceback -----------------------------------


def test_not_elf(tmp_path: Path) -> None:
    """A non-ELF input is bad input: exit 2 and one `error: FILE: reason` line."""
    junk = tmp_path / "not-an-elf-file-with-a-rather-long-name-to-tempt-line-wrapping.bin"
    junk.write_text("hello\n")
    _assert_one_error_line(run("inspect", junk), f"error: {junk}: not an ELF file")


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is the user's input problem (exit 2), not the system's."""
    missing = tmp_path / "no" / "such" / "vmlinux"
    _assert_one_error_line(
        run("inspect", missing), f"error: {missing}: cannot read: No such file or directory"
    )


def test_short_root_hex() -> None:
    """`--root` of the wrong length is refused before any file is opened."""
    _assert_one_error_line(
        run("patch", "--root", "ab", "--levels", "1", "X"),
        "error: --root must be 32 bytes (64 hex digits)",
    )


def test_patch_without_root_source() -> None:
    """`patch` must be told where the root comes from; it never guesses."""
    _assert_one_error_line(
        run("patch", VMLINUX),
        "error: give the root: --root-file, --root with --levels, or --from-tree",
    )


def test_excluding_root_sources(tmp_path: Path) -> None:
    """Two root sources at once are a usage error, whatever the order of options."""
    result = run("patch", "--root", ROOT_HEX, "--levels", "1", "--from-tree", KBUILD, VMLINUX)
    _assert_one_error_line(result, "error: --from-tree excludes --root-file and --root/--levels")


@pytest.mark.parametrize(
    ("args", "message", "command"),
    [
        (
            ("inspect", "--no-such-option", str(VMLINUX)),
            "error: No such option: --no-such-option",
            "inspect",
        ),
        (("patch", "--root", ROOT_HEX), "error: Missing argument 'IMAGE...'.", "patch"),
    ],
    ids=["unknown-option", "missing-argument"],
)
def test_parser_errors(args: tuple[str, ...], message: str, command: str) -> None:
    """Errors found by the option parser follow the same contract as vmpatch's own.

    typer 0.26+ raises its vendored copy of click's exceptions, not click's:
    both must map to exit 2, never to the "bug" exit 70. The hint names the
    help of the command that failed, with its metavars (issue 8.10).
    """
    line = _assert_one_error_line(run(*args), message)
    assert line.endswith(f"(hint: see vmpatch {command} --help)"), line


def test_debug_traceback(tmp_path: Path) -> None:
    """`--debug` is the way to a bug report: the same error, with its traceback."""
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 64)
    plain = run("inspect", junk)
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    debug = run("--debug", "inspect", junk)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("error: ")
    assert str(junk) in debug.stderr


# --- JSON ------------------------------------------------------------------------


def _assert_sorted(value: Any, where: str = "$") -> None:
    if isinstance(value, list) and value and isinstance(value[0], tuple):  # object as pairs
        keys = [k for k, _ in value]
        assert keys == sorted(keys), f"keys of {where} not sorted: {keys}"
        for k, v in value:
            _assert_sorted(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _assert_sorted(v, f"{where}[{i}]")


def _pairs(text: str) -> Any:
    return json.loads(text, object_pairs_hook=list)


def test_inspect_json_one_file() -> None:
    """One file gives one object: sorted keys, `format_version`, `schema`, a list of files."""
    result = run("inspect", "--json", VMLINUX)
    assert result.returncode == 0, result.stderr
    _assert_sorted(_pairs(result.stdout))
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    assert document["format_version"] == FORMAT_VERSION
    assert (document["command"], document["schema"]) == ("inspect", 2)
    (image,) = document["files"]
    assert {"levels", "root", "placeholder", "section", "symbol"} <= image.keys()
    assert isinstance(image["levels"], int)
    assert re.fullmatch(r"[0-9a-f]{64}", image["root"])


def test_inspect_json_two_files() -> None:
    """Several files give the same shape as one: an object whose `files` has one entry each."""
    result = run("inspect", "--json", VMLINUX, VMLINUX_BE)
    assert result.returncode == 0, result.stderr
    _assert_sorted(_pairs(result.stdout))
    document = json.loads(result.stdout)
    assert document["format_version"] == FORMAT_VERSION
    assert [f["path"] for f in document["files"]] == [str(VMLINUX), str(VMLINUX_BE)]


# --- colour and terminals ---------------------------------------------------------

_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _colour_codes(text: str) -> list[str]:
    """SGR parameters that set a colour (30-49, 90-107), as opposed to bold etc."""
    codes = []
    for match in _SGR.finditer(text):
        for code in filter(None, match.group(1).split(";")):
            if 30 <= int(code) <= 49 or 90 <= int(code) <= 107:
                codes.append(code)
    return codes


def test_force_color_colours_errors(tmp_path: Path) -> None:
    """FORCE_COLOR makes rich style even a pipe: the control for the NO_COLOR test."""
    junk = tmp_path / "junk"
    junk.write_text("x")
    result = run("inspect", junk, env=_env(FORCE_COLOR="1"))
    assert result.returncode == 2
    assert _colour_codes(result.stderr), repr(result.stderr)


def test_no_color_wins_over_force_color(tmp_path: Path) -> None:
    """NO_COLOR (no-color.org) removes every colour, even on a forced terminal.

    NO_COLOR is about colour only: rich keeps bold, so escapes other than
    colours may remain; the verify table's red/green verdicts must not.
    """
    junk = tmp_path / "junk"
    junk.write_text("x")
    env = _env(FORCE_COLOR="1", NO_COLOR="1")
    result = run("inspect", junk, env=env)
    assert result.returncode == 2
    assert _colour_codes(result.stderr) == [], repr(result.stderr)
    shown = run("inspect", VMLINUX, env=env)
    assert shown.returncode == 0
    assert _colour_codes(shown.stdout + shown.stderr) == []


def test_pipe_output_is_plain(tmp_path: Path) -> None:
    """Without a TTY nothing is styled: logs and `grep` see plain text."""
    junk = tmp_path / "junk"
    junk.write_text("x")
    for args in (("inspect", VMLINUX), ("inspect", junk), ("--help",), ("patch", "--help")):
        result = run(*args)
        assert "\x1b" not in result.stdout + result.stderr, args


# --- verify: exit 1 ------------------------------------------------------------


@pytest.fixture
def patched_tree(tmp_path: Path) -> Path:
    """A copy of the kbuild test tree whose vmlinux carries the tree's root."""
    tree = tmp_path / "kbuild"
    shutil.copytree(KBUILD, tree)
    result = run("patch", "--from-tree", tree, tree / "vmlinux")
    assert result.returncode == 0, result.stderr
    return tree


def test_verify_rejects_with_exit_1(patched_tree: Path) -> None:
    """A module the kernel would reject makes `verify` exit 1; a proved one is ACCEPTed."""
    proved = patched_tree / "drivers" / "char" / "toy_char.ko"
    unproved = patched_tree / "lib" / "crc_toy.ko"
    proof = proved.with_suffix(".merkle")
    with open(proved, "ab") as module:  # what kbuild's `cat x.merkle >> x.ko` does
        module.write(proof.read_bytes())
    kernel = patched_tree / "vmlinux"

    alone = run("verify", "--kernel", kernel, proved)
    assert alone.returncode == 0, alone.stdout + alone.stderr

    result = run("verify", "--json", "--kernel", kernel, proved, unproved)
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["format_version"] == FORMAT_VERSION
    first, second = document["modules"]
    assert first["verdict"] == "ACCEPT"
    assert first["errno"] is None
    assert isinstance(first["position"], int)
    assert second["verdict"] == "REJECT"
    # kernel/module/signing.c: a module without the signature marker fails
    # module_sig_check() with -ENODATA ("unsigned module"), which an enforcing
    # kernel turns into -EKEYREJECTED for the load: errno and load result are
    # two fields, each with exactly one value.
    assert (second["errno"], second["load_result"]) == ("ENODATA", "EKEYREJECTED"), second
    for entry in (first, second):
        assert {"verdict", "errno", "load_result", "position", "reason"} <= entry.keys()

    human = run("verify", "--kernel", kernel, proved, unproved)
    assert human.returncode == 1
    assert "REJECT" in human.stdout and "ACCEPT" in human.stdout


def test_verify_colours_verdicts(patched_tree: Path) -> None:
    """The verdict column is coloured on a (forced) terminal, and not with NO_COLOR."""
    module = patched_tree / "lib" / "crc_toy.ko"
    args = ("verify", "--kernel", patched_tree / "vmlinux", module)
    coloured = run(*args, env=_env(FORCE_COLOR="1"))
    assert coloured.returncode == 1
    assert _colour_codes(coloured.stdout)
    plain = run(*args, env=_env(FORCE_COLOR="1", NO_COLOR="1"))
    assert plain.returncode == 1
    assert _colour_codes(plain.stdout) == []


# --- exit 3 ------------------------------------------------------------------------


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may create files in: mode 0500, or immutable for root."""
    directory = tmp_path / "readonly"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o500)
        yield directory
        directory.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    made = chattr is not None and (tool(chattr, "+i", directory, check=False).returncode == 0)
    if not made:
        require(False, "running as root and chattr +i is unavailable (apt-get install e2fsprogs)")
    try:
        yield directory
    finally:
        tool(str(chattr), "-i", directory)


def test_unwritable_output_exits_3(unwritable_dir: Path) -> None:
    """The system refusing a write is exit 3, distinct from bad input (2)."""
    target = unwritable_dir / "vmlinux.patched"
    result = run("patch", "--root", ROOT_HEX, "--levels", "1", "--output", target, VMLINUX)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: ") and str(target) in lines[0]
    assert not target.exists()
    assert list(unwritable_dir.iterdir()) == []


# --- shell completion -------------------------------------------------------------


def test_show_completion_bash() -> None:
    """README promises `vmpatch --show-completion`; bash's script names our program."""
    env = _env(SHELL="/bin/bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    result = run("--show-completion", "bash", env=env)
    assert result.returncode == 0, result.stderr
    assert "_VMPATCH_COMPLETE" in result.stdout
    assert "complete " in result.stdout


# --- the end of a run ---------------------------------------------------------------


def test_profilers_still_see_the_end_of_a_run(tmp_path: Path) -> None:
    """The program skips the interpreter's teardown (vmpatch.cli._exit_now), but not
    when something waits for it: cProfile writes its profile at exit."""
    profile = tmp_path / "vmpatch.prof"
    result = python("-m", "cProfile", "-o", profile, "-m", "vmpatch", "tree", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert profile.stat().st_size > 0, "cProfile wrote no profile"


def test_a_plain_run_ends_without_teardown() -> None:
    """Nothing waiting, the program ends by os._exit once its output is flushed, with
    the command's exit code (an atexit handler registered by the run is skipped)."""
    code = (
        "import atexit, sys; import vmpatch.cli as cli; "
        "sys.argv = ['vmpatch', 'tree', '/nonexistent-dir']; "
        "cli._nothing_waits_for_exit = lambda: True; "
        "atexit.register(lambda: print('teardown ran')); cli.main()"
    )
    result = python("-c", code)
    assert result.returncode == 2, result.stderr
    assert "not a directory" in result.stderr
    assert "teardown ran" not in result.stdout


# --- start-up cost ---------------------------------------------------------------

#: Heavy modules that only the commands needing them may import.
HEAVY = ("elftools", "lief", "zstandard", "asn1crypto", "rich.table", "rich.progress")


def _imported(code_or_args: list[str]) -> set[str]:
    """Module names that ``python -X importtime ...`` reports importing."""
    result = python("-X", "importtime", *code_or_args, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def _heavy(names: set[str]) -> set[str]:
    return {n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY)}


def test_version_startup_is_light() -> None:
    """`vmpatch --version` (and so every start) must not pay for ELF, zstd, PKCS#7 or tables.

    typer itself imports rich's tables eagerly in some releases (0.12 to at
    least 0.16); that is typer's cost and is discounted, vmpatch's own
    imports must add none.
    """
    imported = _imported(["-m", "vmpatch", "--debug", "--version"])
    assert "vmpatch.cli.app" in imported  # the measurement did see the CLI start
    by_typer = _heavy(_imported(["-c", "import typer"]))
    assert _heavy(imported) - by_typer == set()


def test_version_alone_loads_no_typer() -> None:
    """`vmpatch --version` alone answers before the app loads, with the app's own line.

    typer and click are 0.1 s of start-up (issue 12 holds `--version` to 5x
    `python -c pass`); with another global option the app's eager
    `--version` answers, and both must print the same.
    """
    alone = _imported(["-m", "vmpatch", "--version"])
    assert "typer" not in alone and "vmpatch.cli.app" not in alone, sorted(alone)
    fast, through_app = run("--version"), run("--debug", "--version")
    assert fast.returncode == through_app.returncode == 0, through_app.stderr
    assert fast.stdout == through_app.stdout


def test_hook_imports_no_third_party_module() -> None:
    """The modules_install hook runs once per module: standard library only."""
    # Modules that .pth files load at start-up (certifi, _distutils_hack) are
    # not the hook's doing: only what importing it adds counts.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import vmpatch.hook\n"
        "for name in sorted(set(sys.modules) - before):\n"
        "    print(name, getattr(sys.modules[name], '__file__', None) or '')\n"
    )
    result = python("-c", code)
    assert result.returncode == 0, result.stderr
    site_dirs = {
        os.path.realpath(p)
        for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])
    }
    third_party = []
    for line in result.stdout.splitlines():
        name, _, file = line.partition(" ")
        if not file or name.split(".")[0] == "vmpatch":
            continue
        if name.startswith("__editable__"):  # pip's editable-install finder
            continue
        real = os.path.realpath(file)
        if any(real.startswith(d + os.sep) for d in site_dirs):
            third_party.append(name)
    assert third_party == [], third_party


def test_hook_import_leaves_cli_alone() -> None:
    """Neither typer nor rich may load for the hook: they are the bulk of start-up."""
    imported = _imported(["-c", "import vmpatch.hook"])
    assert "vmpatch.hook" in imported
    assert not {n for n in imported if n.split(".")[0] in ("typer", "click", "rich")}


def test_cli_decompression_limit_default_is_the_library_default() -> None:
    from vmpatch.cli.options import DEFAULT_MAX_DECOMPRESSED as CLI_DEFAULT
    from vmpatch.ko.compression import DEFAULT_MAX_DECOMPRESSED

    assert CLI_DEFAULT == DEFAULT_MAX_DECOMPRESSED


def test_decompression_limit_applies_to_append_and_the_hook(tmp_path: Path) -> None:
    """A tiny --max-decompressed refuses a real .ko.xz before anything is written."""
    xz = shutil.which("xz")
    require(xz is not None, "xz is not installed (apt-get install xz-utils)")
    tree = tmp_path / "t"
    shutil.copytree(TESTDATA / "kbuild-x86_64", tree)
    assert vmpatch("tree", tree).returncode == 0
    module = tree / "lib" / "crc_toy.ko"
    tool(str(xz), "--check=crc32", module)
    packed = module.with_name("crc_toy.ko.xz")
    before = packed.read_bytes()
    proof = tree / "lib" / "crc_toy.merkle"
    for run in (
        vmpatch("ko", "append", "--max-decompressed", "1000", packed, proof),
        clirun.hook("--max-decompressed", "1000", packed, proof),
    ):
        assert run.returncode == 2, run.stderr
        assert "1000" in run.stderr and "Traceback" not in run.stderr
        assert packed.read_bytes() == before


# --- lazy command registration ----------------------------------------------------

_REGISTERED = (
    "import sys; from vmpatch.cli.app import _register_commands, app; "
    "_register_commands(sys.argv[1:]); "
    "print(' '.join([c.name or c.callback.__name__ for c in app.registered_commands] "
    "+ [g.name for g in app.registered_groups]))"
)


def test_command_table_names_every_command() -> None:
    """``COMMAND_MODULES`` is what lets one command load alone; it must name them all.

    The evidence is click's own command list with everything registered: a new
    command missing from the table would still run, but a name in the table
    that no module defines, or the reverse, fails here.
    """
    from vmpatch.cli.commands import COMMAND_MODULES

    top = {path[0] for path in _command_paths() if len(path) == 1}
    assert top == set(COMMAND_MODULES)


@pytest.mark.parametrize("name", ["patch", "verify", "reroot", "diff", "ko"])
def test_running_a_command_registers_only_its_module(name: str) -> None:
    """``vmpatch NAME`` builds only NAME's module's commands (the start-up cost, issue 12)."""
    from vmpatch.cli.commands import COMMAND_MODULES

    alone = python("-c", _REGISTERED, "--debug", name, "--help", check=True)
    siblings = {
        other for other, module in COMMAND_MODULES.items() if module == COMMAND_MODULES[name]
    }
    assert set(alone.stdout.split()) == siblings
    everything = python("-c", _REGISTERED, "--help", check=True)
    assert everything.stdout.split() == list(COMMAND_MODULES)  # the --help order
