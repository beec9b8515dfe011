# SPDX-License-Identifier: GPL-2.0-or-later
"""Errors in the shape the contract promises (issue 8, item 10), through real runs.

Each test here failed on the code before the fix: a swapped MODULE and PROOF
blamed a marker that is there, ``ko strip`` told CLI users to pass ``STRIP=``
and echoed temporary names, usage lines showed ``{files}...``,
``--max-decompressed 1k`` was "not a valid int range", and usage hints sent
everyone to the top-level ``vmpatch --help``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from clirun import hook, vmpatch
from conftest import require_tool
from test_kotool import cli_compress, make_tree, modules

from vmpatch.fs.atomic import TEMP_MARK
from vmpatch.sizes import format_size, parse_size


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- MODULE and PROOF swapped --------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".xz"])
def test_swapped_module_and_proof(tmp_path: Path, suffix: str) -> None:
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    if suffix:
        module = cli_compress(module, suffix)
    original = module.read_bytes()
    expected_kind = "an ELF file" if not suffix else "xz-compressed data (a .ko.xz module?)"
    for run, prefix in (
        (vmpatch("ko", "append", proof, module), "error: "),
        (hook(proof, module), "vmpatch-ko-append: "),
    ):
        assert run.returncode == 2, run.stderr
        line = one_line(run.stderr)
        assert line.startswith(f"{prefix}{module}: not a valid Merkle proof: it is "), line
        assert expected_kind in line
        assert "swapped" in line  # the hint says what probably happened
        assert "signature marker" not in line  # the module may well end with one
    assert module.read_bytes() == original
    assert proof.read_bytes()[-28:] == b"~Module signature appended~\n"


def test_a_proof_with_garbage_after_it_is_not_called_a_module(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    proof.write_bytes(proof.read_bytes() + b"x" * 5000)
    run = vmpatch("ko", "append", module, proof)
    assert run.returncode == 2
    line = one_line(run.stderr)
    assert "larger than any proof" in line and "swapped" not in line


# --- ko strip: the hint names the CLI's option, the echo the real files ---------------


def test_missing_strip_program_hint_names_the_option(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    module, _proof = modules(tree)[0]
    run = vmpatch(
        "ko", "strip", "--install-mod-strip", "1", "--strip-program", "no-such-strip-xyz", module
    )
    assert run.returncode == 4, run.stderr
    line = one_line(run.stderr)
    assert line.startswith("error: no-such-strip-xyz: strip program not found"), line
    assert "pass --strip-program to name another program" in line
    assert "STRIP=" not in line
    assert not module.with_name(module.name + ".stripped").exists()


def test_strip_echo_names_the_real_files(tmp_path: Path) -> None:
    require_tool("strip", "binutils")
    tree, _ = make_tree(tmp_path)
    sources = [m for m, _p in modules(tree)[:2]]
    run = vmpatch("ko", "strip", "--install-mod-strip", "--strip-unneeded -R .comment", *sources)
    assert run.returncode == 0, run.stderr
    targets = [str(m.with_name(m.name + ".stripped")) for m in sources]
    expected = shlex.join(["strip", "--strip-unneeded", "-R", ".comment", *targets])
    assert run.stderr.splitlines() == [f"+ {expected}"]
    assert TEMP_MARK not in run.stderr


# --- usage lines and their hints -----------------------------------------------------

USAGE = {
    ("inspect",): "vmpatch inspect [OPTIONS] FILE...",
    ("patch",): "vmpatch patch [OPTIONS] IMAGE...",
    ("tree",): "vmpatch tree [OPTIONS] [BUILD_DIR]",
    ("verify",): "vmpatch verify [OPTIONS] [MODULE...|KVER]",
    ("ko", "append"): "vmpatch ko append [OPTIONS] MODULE PROOF",
    ("ko", "append-tree"): "vmpatch ko append-tree [OPTIONS] BUILD_DIR",
    ("ko", "strip-proof"): "vmpatch ko strip-proof [OPTIONS] MODULE...",
    ("ko", "strip"): "vmpatch ko strip [OPTIONS] [MODULE...]",
}


@pytest.mark.parametrize("command", sorted(USAGE), ids=" ".join)
def test_usage_lines_use_metavars(command: tuple[str, ...]) -> None:
    run = vmpatch(*command, "--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert run.returncode == 0, run.stderr
    usage = [line.strip() for line in run.stdout.splitlines() if "Usage:" in line]
    assert usage == [f"Usage: {USAGE[command]}"]


@pytest.mark.parametrize(
    ("args", "help_of"),
    [
        (("inspect",), "vmpatch inspect"),
        (("ko", "append", "only-one"), "vmpatch ko append"),
        (("ko", "strip-proof", "--bogus", "x"), "vmpatch ko strip-proof"),
        (("verify", "--kernel"), "vmpatch verify"),
        (("--bogus",), "vmpatch"),
    ],
)
def test_usage_hint_names_the_subcommand(args: tuple[str, ...], help_of: str) -> None:
    run = vmpatch(*args, env={"COLUMNS": "200"})
    assert run.returncode == 2
    line = one_line(run.stderr)
    assert line.startswith("error: ")
    assert line.endswith(f"(hint: see {help_of} --help)"), line
    assert "{" not in line


def test_missing_argument_names_its_metavar() -> None:
    line = one_line(vmpatch("ko", "append", env={"COLUMNS": "200"}).stderr)
    assert "Missing argument 'MODULE'" in line


# --- sizes for --max-decompressed ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4096", 4096),
        ("1k", 1024),
        ("1K", 1024),
        ("256M", 256 * 1024 * 1024),
        ("256MiB", 256 * 1024 * 1024),
        ("1G", 1024**3),
        ("2t", 2 * 1024**4),
        (" 64m ", 64 * 1024 * 1024),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "0k", "1KB", "1.5M", "-1", "M", "12q", "1 G B"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size_reads_back() -> None:
    for value in (1, 1000, 1024, 1536, 256 << 20, 3 << 30, (5 << 40) + 1):
        assert parse_size(format_size(value)) == value
    assert format_size(256 << 20) == "256M"


def test_max_decompressed_takes_sizes(tmp_path: Path) -> None:
    """`1k` is a limit the module exceeds (refused, named); `256M` and bytes are taken."""
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    size = module.stat().st_size
    assert size > 1024
    packed = cli_compress(module, ".xz")
    for run in (
        vmpatch("inspect", "--max-decompressed", "1k", packed),
        vmpatch("ko", "append", "--max-decompressed", "1k", packed, proof),
    ):
        assert run.returncode == 2, run.stderr
        line = one_line(run.stderr)
        assert line.startswith(f"error: {packed}: decompressed size exceeds 1024 bytes"), line
    hooked = hook("--max-decompressed", "1k", packed, proof)
    assert hooked.returncode == 2
    assert f"{packed}: decompressed size exceeds 1024 bytes" in one_line(hooked.stderr)
    assert vmpatch("inspect", "--max-decompressed", str(size), packed).returncode == 0
    assert vmpatch("inspect", "--max-decompressed", "256M", packed).returncode == 0
    assert hook("--max-decompressed", "256M", packed, proof).returncode == 0


@pytest.mark.parametrize("bad", ["1x", "0", "1.5G"])
def test_max_decompressed_bad_size_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    target = tmp_path / "m.ko"
    for run in (
        vmpatch("inspect", "--max-decompressed", bad, target),
        hook("--max-decompressed", bad, target, target),
    ):
        assert run.returncode == 2
        line = one_line(run.stderr)
        assert "--max-decompressed" in line and repr(bad) in line, line
        assert "int range" not in line
        assert re.search(r"is not a size|must be at least 1 byte", line), line
