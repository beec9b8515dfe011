# SPDX-License-Identifier: GPL-2.0-or-later
"""The package's layers, held by walking real imports (ARCHITECTURE.md, "Layers").

Two rules a docstring cannot keep by itself:

* ``vmpatch.hook`` and every module of ``records/``, ``ko/`` and ``fs/`` import
  nothing but the standard library (and those layers) at import time: the
  install hook runs about 5000 times a kernel and must not pay for pyelftools,
  rich, typer or zstandard;
* nothing below ``cli/`` imports ``cli/``: the library never prints or exits.

Each module is imported in a fresh interpreter, and ``sys.modules`` afterwards
is the evidence, so an import hidden behind another module is caught too.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from clirun import python

PACKAGE = Path(__file__).resolve().parent.parent / "vmpatch"

#: Layers whose modules must load with the standard library alone.
LEAN_LAYERS = ("records", "ko", "fs")


def _modules(package_dir: Path) -> list[str]:
    names = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _loaded_after_import(module: str) -> list[str]:
    """Top-level names of every module a fresh interpreter holds after ``import module``."""
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n"
    )
    out = python("-c", code, check=True).stdout
    return list(json.loads(out))


def _third_party(names: list[str]) -> list[str]:
    return [n for n in names if n not in sys.stdlib_module_names and n != "vmpatch"]


LEAN_MODULES = ["vmpatch.hook", "vmpatch.streams", "vmpatch.frozen"] + [
    name for layer in LEAN_LAYERS for name in _modules(PACKAGE / layer)
]


def test_the_lean_layers_exist() -> None:
    """The walk below must have something to walk (a renamed layer would pass it empty)."""
    for layer in LEAN_LAYERS:
        assert len(_modules(PACKAGE / layer)) >= 2, layer


@pytest.mark.parametrize("module", LEAN_MODULES)
def test_lean_modules_import_only_the_standard_library(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert "vmpatch" in loaded  # the import really happened in the child
    assert _third_party(loaded) == [], f"{module} pulls in {_third_party(loaded)}"


def test_the_walk_sees_a_third_party_import() -> None:
    """The check can fail: the CLI layer does load typer."""
    assert "typer" in _third_party(_loaded_after_import("vmpatch.cli.app"))


def _imports_of(path: Path) -> set[str]:
    """Every vmpatch module a source file names in an import, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("vmpatch")}


#: ``python -m vmpatch`` is an entry point, like the CLI it starts.
ENTRY_POINTS = {PACKAGE / "__main__.py"}
LIBRARY_FILES = [
    path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "cli" not in path.relative_to(PACKAGE).parts and path not in ENTRY_POINTS
]


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_library_never_imports_the_cli(path: Path) -> None:
    offending = sorted(n for n in _imports_of(path) if n.startswith("vmpatch.cli"))
    assert offending == [], f"{path.relative_to(PACKAGE)} imports {offending}"


def test_the_cli_check_can_fail() -> None:
    """The AST walk does see CLI imports where they are (in the CLI itself)."""
    assert any(
        name.startswith("vmpatch.cli")
        for name in _imports_of(PACKAGE / "cli" / "commands" / "ko.py")
    )


# ---------------------------------------------------------------------------
# What one real hook call loads (issue 12: the hook runs ~5000 times a kernel)

#: Modules the hook must never load for an append: dataclasses pulls inspect,
#: ast, dis and tokenize (20-28 ms of an 83 ms call, vmpatch/frozen.py),
#: pathlib pulls urllib.parse, ipaddress and re (a third of the hook's import
#: time, vmpatch/fs/atomic.py), and argparse, tempfile and typing are what the
#: lean path was written to avoid.
HEAVY = frozenset(
    {"dataclasses", "inspect", "ast", "dis", "tokenize", "argparse", "tempfile", "pathlib"}
)
#: typing too, but zstandard's own __init__ imports it (and platform): a .ko.zst pays that.
TYPING = frozenset({"typing"})

#: Each codec's libraries: a module loads its own codec's and no other's.
CODEC_LIBRARIES = {
    "": set(),
    ".gz": {"gzip"},  # not zlib: the xz header checks use its crc32 too
    ".xz": {"lzma", "_lzma"},
    ".zst": {"zstandard"},
}
#: The compressor kbuild runs for each suffix (scripts/Makefile.modinst), and its package.
COMPRESSORS = {
    ".gz": (["gzip", "-n", "-c"], "gzip"),
    ".xz": (["xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"], "xz-utils"),
    ".zst": (["zstd", "-q", "-c"], "zstd"),
}
DECOMPRESSORS = {".gz": ["gzip", "-dc"], ".xz": ["xz", "-dc"], ".zst": ["zstd", "-qdc"]}

#: Runs one hook call in this interpreter and prints its exit code, then every
#: module loaded after start-up (what ``python -c pass`` already holds is not
#: counted: setuptools' editable finder, where it is installed, loads pathlib).
_PROBE = """\
import sys
before = set(sys.modules)
{also}from vmpatch.hook import main
code = main(sys.argv[1:])
print("loaded:", code, *sorted(set(sys.modules) - before))
"""


def _probe(*argv: Path | str, also: str = "") -> tuple[int, set[str]]:
    """Run the hook with ``argv`` (after importing ``also``): its exit code and what it loaded."""
    code = _PROBE.format(also=f"import {also}\n" if also else "")
    out = python("-c", code, *argv, check=True).stdout.split("loaded:")[-1].split()
    return int(out[0]), set(out[1:])


@pytest.fixture
def hashed_tree(tmp_path: Path) -> Path:
    """A copy of the miniature kbuild tree with its proofs, as ``vmpatch tree`` writes them."""
    import shutil

    from clirun import vmpatch

    tree = tmp_path / "linux"
    shutil.copytree(PACKAGE.parent / "testdata" / "kbuild-x86_64", tree)
    assert vmpatch("tree", tree).returncode == 0
    return tree


@pytest.mark.parametrize("suffix", list(CODEC_LIBRARIES), ids=lambda s: s or ".ko")
def test_a_hook_append_loads_nothing_heavy(hashed_tree: Path, tmp_path: Path, suffix: str) -> None:
    """A real append through the hook, by codec: no dataclasses, no typing, no other codec."""
    from clirun import tool
    from conftest import require_tool

    stem = (hashed_tree / "modules.order").read_text().split()[0][: -len(".o")]
    plain = (hashed_tree / stem).with_suffix(".ko").read_bytes()
    proof = (hashed_tree / stem).with_suffix(".merkle")
    module = tmp_path / f"mod.ko{suffix}"
    if suffix:
        argv, package = COMPRESSORS[suffix]
        require_tool(argv[0], package)
        module.write_bytes(tool(*argv, input=plain).stdout)
    else:
        module.write_bytes(plain)

    code, loaded = _probe(module, proof)

    assert code == 0
    appended = tool(*DECOMPRESSORS[suffix], module).stdout if suffix else module.read_bytes()
    assert appended == plain + proof.read_bytes()  # the call did the whole append
    assert "vmpatch.ko.proof" in loaded
    heavy = HEAVY if suffix == ".zst" else HEAVY | TYPING
    assert loaded & heavy == set(), f"the hook loads {sorted(loaded & heavy)}"
    others = set().union(*(libs for s, libs in CODEC_LIBRARIES.items() if s != suffix))
    assert loaded & others == set(), f"a {suffix or '.ko'} append loads {sorted(loaded & others)}"
    assert CODEC_LIBRARIES[suffix] <= loaded


def test_the_hook_probe_sees_heavy_imports() -> None:
    """The probe can fail: a hook path that imported dataclasses would show it."""
    code, loaded = _probe("--help", also="vmpatch.cli.jsonout")  # prints usage, then the line
    assert code == 0
    assert {"dataclasses", "inspect", "typing"} <= loaded
