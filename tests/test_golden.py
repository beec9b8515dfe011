# SPDX-License-Identifier: GPL-2.0-or-later
"""Golden outputs: every human table at 80 and 60 columns, with and without colour.

Each command runs in a copy of a fixed layout (``k/`` a copy of
``testdata/kbuild-x86_64``, ``inst/`` of ``testdata/installed-x86_64``, a boot
image) with relative paths, so its stdout is the same on every machine; the
only varying number, reroot's seconds, is masked. The outputs live under
``tests/golden/`` and are compared byte for byte.

Regenerate them after a deliberate change of the human output with
``scripts/update-golden`` (``VMPATCH_UPDATE_GOLDEN=1`` for this file), then
read the diff: it is the change users will see.

The property the goldens exist for is checked apart, on the same outputs:
no hash and no path a user may copy is ever cut or broken inside a name.
Each must appear either on one line, or folded over consecutive lines whose
pieces are all of those lines (nothing of another column between them), a
path broken only after a ``/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.clirun import vmpatch
from tests.conftest import ROOT, TESTDATA, require_tool

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("VMPATCH_UPDATE_GOLDEN", "") not in ("", "0")

KVER = "6.12.0-vmpatch"
INSTALLED_XZ = f"inst/lib/modules/{KVER}/kernel/drivers/net/dummy_net.ko.xz"

#: The terminals: (name, environment). Colour is forced as on a terminal, plain
#: output is both NO_COLOR and not a terminal (the captured pipe).
TERMINALS = {
    "80.plain": {"COLUMNS": "80", "NO_COLOR": "1"},
    "60.plain": {"COLUMNS": "60", "NO_COLOR": "1"},
    "80.color": {"COLUMNS": "80", "FORCE_COLOR": "1", "TERM": "xterm-256color"},
    "60.color": {"COLUMNS": "60", "FORCE_COLOR": "1", "TERM": "xterm-256color"},
}
_COLOUR_ENV = {"COLORTERM": None, "CI": None}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SECONDS = re.compile(r"\b\d+\.\d\d s\b")


@dataclass(frozen=True)
class Facts:
    """What the layout holds, read through --json (which no renderer touches)."""

    root: str  # the tree root of k/
    boot_root: str  # the root in the boot image
    modules: tuple[str, ...]  # k/'s modules, as verify and ko append-tree name them


@dataclass(frozen=True)
class Scenario:
    state: str  # which prepared layout it runs in
    argv: tuple[str, ...]
    exit_code: int = 0
    values: Callable[[Facts], list[str]] = lambda facts: []
    tools: tuple[str, ...] = ()
    not_shown: tuple[str, ...] = ()  # arguments the output does not name (ko append's PROOF)


def _paths(argv: tuple[str, ...]) -> list[str]:
    """The paths the command reports on: its arguments naming files of the layout
    (--kernel's image is the judge, not a result, and is not echoed)."""
    return [
        arg
        for before, arg in zip(("", *argv), argv, strict=False)
        if "/" in arg and not arg.startswith("-") and before != "--kernel"
    ]


SCENARIOS: dict[str, Scenario] = {
    "inspect-vmlinux": Scenario("patched", ("inspect", "k/vmlinux"), values=lambda f: [f.root]),
    "inspect-placeholder": Scenario("fresh", ("inspect", "k/vmlinux")),
    "inspect-boot": Scenario(
        "fresh", ("inspect", "boot/bzImage-xz"), values=lambda f: [f.boot_root]
    ),
    "inspect-module": Scenario("appended", ("inspect", "k/lib/crc_toy.ko", INSTALLED_XZ)),
    "tree": Scenario("fresh", ("tree", "k"), values=lambda f: [f.root]),
    "patch": Scenario("fresh", ("patch", "--from-tree", "k", "k/vmlinux")),
    "verify": Scenario(
        "appended",
        ("verify", "--kernel", "k/vmlinux", "--modules", "k"),
        values=lambda f: [f.root, *f.modules],
    ),
    "verify-failures": Scenario(
        "patched",
        ("verify", "--failures", "--kernel", "k/vmlinux", "k/lib/crc_toy.ko", INSTALLED_XZ),
        exit_code=1,
        values=lambda f: [f.root],
    ),
    "ko-append": Scenario(
        "patched",
        ("ko", "append", "--kernel", "k/vmlinux", "k/lib/crc_toy.ko", "k/lib/crc_toy.merkle"),
        not_shown=("k/lib/crc_toy.merkle",),
    ),
    "ko-append-tree": Scenario(
        "patched",
        ("ko", "append-tree", "--kernel", "k/vmlinux", "k"),
        values=lambda f: list(f.modules),
    ),
    "ko-strip-proof": Scenario(
        "appended", ("ko", "strip-proof", "k/lib/crc_toy.ko", "k/drivers/net/dummy_net.ko")
    ),
    "ko-strip": Scenario(
        "fresh",
        ("ko", "strip", "--install-mod-strip", "1", "k/lib/crc_toy.ko", "k/fs/tinyfs/tinyfs.ko"),
        values=lambda f: ["k/lib/crc_toy.ko.stripped", "k/fs/tinyfs/tinyfs.ko.stripped"],
        tools=("strip",),
    ),
    "reroot": Scenario(
        "fresh", ("reroot", "k", "--kernel", "k/vmlinux"), values=lambda f: [f.root]
    ),
}


def _run_ok(*args: str, cwd: Path) -> None:
    run = vmpatch(*args, cwd=cwd)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The prepared layouts, each to be copied before a command may change it."""
    base = tmp_path_factory.mktemp("golden-layouts")
    fresh = base / "fresh"
    shutil.copytree(TESTDATA / "kbuild-x86_64", fresh / "k")
    shutil.copytree(TESTDATA / "installed-x86_64", fresh / "inst")
    (fresh / "boot").mkdir()
    shutil.copy2(TESTDATA / "boot" / "x86_64" / "bzImage-xz", fresh / "boot" / "bzImage-xz")
    patched = base / "patched"
    shutil.copytree(fresh, patched, symlinks=True)
    _run_ok("patch", "--from-tree", "k", "k/vmlinux", cwd=patched)
    appended = base / "appended"
    shutil.copytree(patched, appended, symlinks=True)
    _run_ok("ko", "append-tree", "k", cwd=appended)
    return {"fresh": fresh, "patched": patched, "appended": appended}


@pytest.fixture(scope="module")
def facts(layouts: dict[str, Path]) -> Facts:
    fresh = layouts["fresh"]
    tree = vmpatch("tree", "--json", "--no-proofs", "k", cwd=fresh).json()
    boot = vmpatch("inspect", "--json", "boot/bzImage-xz", cwd=fresh).json()
    order = (fresh / "k" / "modules.order").read_text().split()
    (boot_entry,) = boot["files"]
    return Facts(
        root=tree["root"],
        boot_root=boot_entry["root"],
        modules=tuple(f"k/{line.removesuffix('.o')}.ko" for line in order),
    )


def _output(name: str, terminal: str, layouts: dict[str, Path], where: Path) -> str:
    scenario = SCENARIOS[name]
    for tool in scenario.tools:
        require_tool(tool, "binutils")
    work = where / f"{name}.{terminal}"
    shutil.copytree(layouts[scenario.state], work, symlinks=True)
    run = vmpatch(*scenario.argv, cwd=work, env={**_COLOUR_ENV, **TERMINALS[terminal]})
    assert run.returncode == scenario.exit_code, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    return _SECONDS.sub("N.NN s", run.stdout)


CASES = [(name, terminal) for name in SCENARIOS for terminal in TERMINALS]


class _Outputs(dict[tuple[str, str], str]):
    """Each (scenario, terminal) run once, when a test first asks for it."""

    def __init__(self, layouts: dict[str, Path], where: Path) -> None:
        super().__init__()
        self.layouts, self.where = layouts, where

    def __missing__(self, key: tuple[str, str]) -> str:
        self[key] = value = _output(*key, self.layouts, self.where)
        return value


@pytest.fixture(scope="module")
def outputs(layouts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> _Outputs:
    return _Outputs(layouts, tmp_path_factory.mktemp("golden-runs"))


@pytest.mark.parametrize(("name", "terminal"), CASES, ids=[f"{n}.{t}" for n, t in CASES])
def test_golden(name: str, terminal: str, outputs: dict[tuple[str, str], str]) -> None:
    """The human output is exactly the reviewed one (scripts/update-golden rewrites it)."""
    got = outputs[(name, terminal)]
    golden = GOLDEN / f"{name}.{terminal}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_bytes(got.encode())
    assert golden.exists(), (
        f"no golden output {golden.relative_to(ROOT)}: run scripts/update-golden"
    )
    assert got.encode() == golden.read_bytes(), (
        f"{golden.relative_to(ROOT)} differs; if the change is meant, run scripts/update-golden"
    )


def test_colour_follows_the_terminal(outputs: dict[tuple[str, str], str]) -> None:
    """NO_COLOR and a pipe give no escape codes; a forced terminal gives styled tables."""
    for name in SCENARIOS:
        for width in ("80", "60"):
            plain = outputs[(name, f"{width}.plain")]
            assert "\x1b[" not in plain, name
            assert _ANSI.sub("", outputs[(name, f"{width}.color")]) == plain, name
    assert "\x1b[" in outputs[("verify", "80.color")]


def whole(text: str, value: str) -> bool:
    """Whether ``value`` can be read back whole from ``text``.

    Either one line holds it, or it starts at the end of a line and goes on
    over the next lines, each of which (indentation aside) is nothing but the
    next piece of it, the last piece starting its line; a path may break only
    after a ``/`` (never inside a name).
    """
    lines = [line.rstrip() for line in _ANSI.sub("", text).splitlines()]
    if any(value in line for line in lines):
        return True
    is_path = "/" in value
    for index, line in enumerate(lines):
        for cut in range(len(value) - 1, 0, -1):
            if not line.endswith(value[:cut]):
                continue
            rest, pieces = value[cut:], [value[:cut]]
            for following in lines[index + 1 :]:
                piece = following.strip()
                if rest.startswith(piece) and piece and len(piece) < len(rest):
                    pieces.append(piece)
                    rest = rest[len(piece) :]
                    continue
                if piece.startswith(rest):
                    pieces.append(rest)
                    rest = ""
                break
            if not rest and (not is_path or all(p.endswith("/") for p in pieces[:-1])):
                return True
    return False


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("terminal", list(TERMINALS))
def test_no_value_is_cut(
    name: str, terminal: str, outputs: dict[tuple[str, str], str], facts: Facts
) -> None:
    """Every hash and every path of the command line reads back whole from the output."""
    scenario = SCENARIOS[name]
    text = outputs[(name, terminal)]
    shown = [p for p in _paths(scenario.argv) if p not in scenario.not_shown]
    values = [*shown, *scenario.values(facts)]
    assert values
    for value in values:
        assert whole(text, value), f"{value!r} is cut or broken in:\n{text}"


def test_whole_tells_cut_values() -> None:
    """The check itself: a value folded inside a table cell, or a path broken in a name, fails."""
    digest = "ab" * 32
    assert whole(f"root  {digest[:40]}\n      {digest[40:]}\n", digest)
    assert not whole(f"root  {digest[:40]}…\n", digest)
    grid = "│ k/drivers/ │ REJECT │\n│ net/a.ko   │        │\n"
    assert not whole(grid, "k/drivers/net/a.ko")
    assert whole("k/drivers/\nnet/a.ko\n", "k/drivers/net/a.ko")
    assert not whole("k/drivers/ne\nt/a.ko\n", "k/drivers/net/a.ko")


def test_long_modinfo_values_fold_whole() -> None:
    """Long .modinfo values (many aliases, a parameter's description) fold, nothing cut.

    The values are e1000e's from Debian's 6.12 package, the kind the issue saw cut with "…".
    """
    from tests.clirun import python

    aliases = [f"pci:v00008086d0000{device}sv*sd*bc*sc*i*" for device in ("15B8", "15B9", "15BB")]
    parm = (
        "InterruptThrottleRate:Maximum interrupts per second, per vector, (100-100000), "
        "default 3=adaptive, 4=simplified (array of int)"
    )
    code = (
        "import sys; from vmpatch.cli.commands.vmlinux import _print_rows as fields; "
        "fields(sys.argv[1], [('alias', sys.argv[2]), ('parm', sys.argv[3])])"
    )
    path = "lib/modules/6.12.117+deb12-amd64/kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz"
    for columns in ("80", "60", "40"):
        run = python(
            "-c", code, path, ", ".join(aliases), parm, env={"COLUMNS": columns, "NO_COLOR": "1"}
        )
        assert run.returncode == 0, run.stderr
        assert all(len(line) <= int(columns) for line in run.stdout.splitlines()), run.stdout
        assert "…" not in run.stdout
        for value in [path, *aliases]:
            assert whole(run.stdout, value), (columns, value, run.stdout)
        joined = " ".join(line.strip() for line in run.stdout.splitlines())
        assert parm in joined, run.stdout
