# SPDX-License-Identifier: GPL-2.0-or-later
"""vmpatch.ko.strip against real objects built by gcc and stripped by GNU/LLVM strip."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from clirun import tool, tool_text
from conftest import require, require_tool

from vmpatch.errors import InputError, ToolError
from vmpatch.fs.atomic import TEMP_MARK
from vmpatch.ko.strip import (
    SIGNATURE_MARKER,
    _batches,
    probe_program,
    strip_modules,
    strip_options,
    strip_program,
)
from vmpatch.records.striprecord import (
    RECORD_NAME,
    StripRecord,
    auto_conf_install_strip,
    read_record,
    write_record,
)

SOURCE = r"""
static const char modinfo_license[] __attribute__((used, section(".modinfo"), aligned(1)))
    = "license=GPL";
static const char modinfo_alias[] __attribute__((used, section(".modinfo"), aligned(1)))
    = "alias=pci:v00008086d*";
int helper(int x) { return x * 3 + 1; }
int init_module(void) { return helper(%d); }
"""


def _build(tmp_path: Path, name: str = "mod", n: int = 1) -> Path:
    """A relocatable object with debug info, like a .ko before modpost (close enough)."""
    gcc = require_tool("gcc", "gcc")
    c_file = tmp_path / f"{name}.c"
    c_file.write_text(SOURCE % n)
    ko = tmp_path / f"{name}.ko"
    tool(gcc, "-c", "-g", "-O2", "-o", ko, c_file)
    return ko


def _sections(path: Path) -> list[str]:
    readelf = require_tool("readelf", "binutils")
    out = tool_text(readelf, "-W", "-S", path)
    names = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("[") and "]" in line and not line.startswith("[Nr]"):
            names.append(line.split("]", 1)[1].split()[0])
    return names


def _llvm_strip() -> str | None:
    for cand in ("llvm-strip", "llvm-strip-14", "/usr/lib/llvm-14/bin/llvm-strip"):
        found = shutil.which(cand)
        if found:
            return found
    return None


# --- INSTALL_MOD_STRIP and $(STRIP) semantics -------------------------------------------


def test_strip_options_semantics() -> None:
    assert strip_options(None) is None
    assert strip_options("") is None
    assert strip_options("1") == ["--strip-debug"]
    assert strip_options("--strip-unneeded") == ["--strip-unneeded"]
    assert strip_options("-g -R .comment") == ["-g", "-R", ".comment"]
    assert strip_options("--remove-section='.note x'") == ["--remove-section=.note x"]
    # Defined but blank: make's ifdef is true and strip runs without options.
    assert strip_options(" ") == []


def test_strip_options_unbalanced_quote() -> None:
    with pytest.raises(InputError, match="INSTALL_MOD_STRIP"):
        strip_options("'-g")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "strip"),
        ({"cross_compile": "aarch64-linux-gnu-"}, "aarch64-linux-gnu-strip"),
        ({"llvm": "1"}, "llvm-strip"),
        ({"llvm": "1", "cross_compile": "aarch64-linux-gnu-"}, "llvm-strip"),
        ({"llvm": "/opt/llvm/bin/"}, "/opt/llvm/bin/llvm-strip"),
        ({"llvm": "-18"}, "llvm-strip-18"),
        ({"llvm": "-18", "override": "my-strip"}, "my-strip"),
        ({"cross_compile": "s390x-linux-gnu-", "override": "/x/strip"}, "/x/strip"),
        ({"llvm": ""}, "strip"),
    ],
)
def test_strip_program_table(kwargs: dict[str, str], expected: str) -> None:
    assert strip_program(**kwargs) == expected


def test_environment_strip_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIP", "env-strip")
    assert strip_program() == "strip"


# --- stripping real objects ---------------------------------------------------------------


def test_strip_debug_matches_gnu_strip(tmp_path: Path) -> None:
    strip = require_tool("strip", "binutils")
    srcs = [_build(tmp_path, f"m{i}", i) for i in range(3)]
    assert any(name.startswith(".debug_") for name in _sections(srcs[0]))
    pairs = [(src, src.with_name(src.name + ".stripped")) for src in srcs]
    echoed: list[str] = []
    strip_modules(pairs, strip_options("1"), "strip", echo=echoed.append)
    for src, dst in pairs:
        ref = tmp_path / (src.name + ".ref")
        tool(strip, "--strip-debug", "-o", ref, src)
        assert dst.read_bytes() == ref.read_bytes()
        names = _sections(dst)
        assert not [n for n in names if n.startswith(".debug_")], names
        assert ".modinfo" in names
    # One process for all three files, echoed like make V=1 would: on the real
    # %.ko.stripped names, never the temporary copies strip actually rewrote.
    real = [str(dst) for _src, dst in pairs]
    assert echoed == ["+ " + shlex.join(["strip", "--strip-debug", *real])]
    assert TEMP_MARK not in echoed[0]
    # No temporary files left behind.
    assert not list(tmp_path.glob(".*.tmp"))


def test_custom_options_match_gnu_strip(tmp_path: Path) -> None:
    strip = require_tool("strip", "binutils")
    src = _build(tmp_path)
    dst = tmp_path / "mod.ko.stripped"
    value = "--strip-unneeded -R .comment"
    strip_modules([(src, dst)], strip_options(value), "strip", echo=None)
    ref = tmp_path / "ref.ko"
    shutil.copy(src, ref)
    tool(strip, *value.split(), ref)
    assert dst.read_bytes() == ref.read_bytes()
    assert ".comment" not in _sections(dst)


@pytest.mark.parametrize("value", [None, ""])
def test_unset_copies_unchanged(tmp_path: Path, value: str | None) -> None:
    src = _build(tmp_path)
    dst = tmp_path / "mod.ko.stripped"
    dst.write_bytes(b"stale")
    echoed: list[str] = []
    strip_modules([(src, dst)], strip_options(value), "strip", echo=echoed.append)
    assert dst.read_bytes() == src.read_bytes()
    assert echoed == []


def test_unset_never_needs_the_program(tmp_path: Path) -> None:
    src = _build(tmp_path)
    dst = tmp_path / "mod.ko.stripped"
    strip_modules([(src, dst)], None, "no-such-strip-program", echo=None)
    assert dst.read_bytes() == src.read_bytes()


def test_many_files_are_batched(tmp_path: Path) -> None:
    strip = require_tool("strip", "binutils")
    src = _build(tmp_path)
    pairs = []
    for i in range(40):
        copy = tmp_path / f"c{i:02d}.ko"
        shutil.copy(src, copy)
        pairs.append((copy, tmp_path / f"c{i:02d}.ko.stripped"))
    strip_modules(pairs, ["--strip-debug"], "strip", echo=None)
    ref = tmp_path / "ref.ko"
    tool(strip, "--strip-debug", "-o", ref, src)
    for _src, dst in pairs:
        assert dst.read_bytes() == ref.read_bytes()


def test_batches_respect_budget() -> None:
    files = [f"/some/dir/file{i:03d}.ko" for i in range(100)]
    head = ["strip", "--strip-debug"]
    batches = _batches(head, files, budget=300)
    assert len(batches) > 1
    assert [f for b in batches for f in b[2:]] == files
    for b in batches:
        assert b[:2] == head
        assert sum(len(a) + 1 for a in b) <= 300
    # A single argument longer than the budget still goes out alone rather than vanishing.
    assert _batches(head, ["x" * 500], budget=300) == [[*head, "x" * 500]]


def test_refuses_module_with_trailer(tmp_path: Path) -> None:
    src = _build(tmp_path)
    src.write_bytes(src.read_bytes() + b"\0" * 12 + SIGNATURE_MARKER)
    dst = tmp_path / "mod.ko.stripped"
    with pytest.raises(InputError, match="appended signature") as err:
        strip_modules([(src, dst)], ["--strip-debug"], "strip", echo=None)
    assert str(src) in str(err.value)
    assert not dst.exists()


def test_missing_program_is_tool_error(tmp_path: Path) -> None:
    src = _build(tmp_path)
    dst = tmp_path / "mod.ko.stripped"
    with pytest.raises(ToolError) as err:
        strip_modules([(src, dst)], ["--strip-debug"], "aarch64-nowhere-strip", echo=None)
    assert err.value.hint is not None and "binutils-aarch64-nowhere" in err.value.hint
    with pytest.raises(ToolError) as err:
        strip_modules([(src, dst)], ["--strip-debug"], "llvm-strip-999", echo=None)
    assert err.value.hint is not None and "llvm" in err.value.hint
    assert not dst.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_failing_strip_is_tool_error_and_leaves_nothing(tmp_path: Path) -> None:
    require_tool("strip", "binutils")
    src = _build(tmp_path)
    dst = tmp_path / "mod.ko.stripped"
    with pytest.raises(ToolError) as err:
        strip_modules([(src, dst)], ["--no-such-option-xyz"], "strip", echo=None)
    assert "no-such-option-xyz" in str(err.value) or "unrecognized" in str(err.value)
    assert not dst.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_llvm_strip_matches_llvm_strip_cli(tmp_path: Path) -> None:
    llvm_strip = _llvm_strip()
    require(llvm_strip is not None, "llvm-strip is not installed (apt-get install llvm)")
    assert llvm_strip is not None
    src = _build(tmp_path)
    dst = tmp_path / "mod.ko.stripped"
    strip_modules([(src, dst)], ["--strip-debug"], llvm_strip, echo=None)
    ref = tmp_path / "ref.ko"
    tool(llvm_strip, "--strip-debug", "-o", ref, src)
    assert dst.read_bytes() == ref.read_bytes()
    assert not [n for n in _sections(dst) if n.startswith(".debug_")]


# --- records ------------------------------------------------------------------------------


def test_record_roundtrip_and_format(tmp_path: Path) -> None:
    require_tool("strip", "binutils")
    record = probe_program("1", "strip")
    assert record.program_path is not None and Path(record.program_path).is_absolute()
    version = tool_text("strip", "--version").splitlines()[0]
    assert record.version == version.strip()
    assert read_record(tmp_path) is None
    path = write_record(tmp_path, record)
    assert path == tmp_path / RECORD_NAME
    raw = json.loads(path.read_text())
    assert list(raw) == sorted(raw)
    assert read_record(tmp_path) == record


def test_record_without_stripping_needs_no_program() -> None:
    assert probe_program(None, "no-such-strip") == StripRecord(None, "no-such-strip")
    assert probe_program("", "no-such-strip") == StripRecord(None, "no-such-strip")


def test_probe_missing_program() -> None:
    with pytest.raises(ToolError):
        probe_program("1", "no-such-strip")


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"program": 3}', '{"bogus": "x"}'])
def test_bad_record_is_input_error(tmp_path: Path, text: str) -> None:
    (tmp_path / RECORD_NAME).write_text(text)
    with pytest.raises(InputError) as err:
        read_record(tmp_path)
    assert RECORD_NAME in str(err.value)


# --- auto.conf ----------------------------------------------------------------------------


def _auto_conf(tmp_path: Path, body: str) -> Path:
    conf = tmp_path / "include" / "config" / "auto.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_MODULES=y\n" + body)
    return tmp_path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("CONFIG_MODULE_INSTALL_STRIP=1\n", "1"),  # auto.conf since 5.18: unquoted
        ("CONFIG_MODULE_INSTALL_STRIP=\n", ""),
        (
            "CONFIG_MODULE_INSTALL_STRIP=--strip-unneeded -R .comment\n",
            "--strip-unneeded -R .comment",
        ),
        ('CONFIG_MODULE_INSTALL_STRIP="1"\n', "1"),  # kconfig's quoted form
        ('CONFIG_MODULE_INSTALL_STRIP=""\n', ""),
        ('CONFIG_MODULE_INSTALL_STRIP="-R \\"x\\" \\\\y"\n', '-R "x" \\y'),
        ("", None),
    ],
)
def test_auto_conf_install_strip(tmp_path: Path, line: str, expected: str | None) -> None:
    assert auto_conf_install_strip(_auto_conf(tmp_path, line)) == expected


def test_auto_conf_missing_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"auto\.conf"):
        auto_conf_install_strip(tmp_path)
