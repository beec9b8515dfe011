# SPDX-License-Identifier: GPL-2.0-or-later
"""Every command's real ``--json`` output against its schema (docs/schema/vmpatch.json).

The documents come from real runs over the miniature kbuild tree and the
testdata images; the schema is written by hand from docs/json.md, with
``additionalProperties: false`` throughout, so a key added, renamed or
retyped in the code without the schema (and its ``schema`` number) fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from clirun import ROOT, vmpatch
from conftest import TESTDATA, built_modules, require_tool

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((ROOT / "docs" / "schema" / "vmpatch.json").read_text())


def check(command: str, document: Any) -> None:
    """Validate ``document`` against the schema of ``command`` and the whole schema."""
    assert isinstance(document, dict) and document["command"] == command
    validator = jsonschema.Draft202012Validator
    validator(SCHEMA).validate(document)
    one = {**SCHEMA, "oneOf": None, "$ref": f"#/$defs/commands/{command.replace(' ', '%20')}"}
    del one["oneOf"]
    validator(one).validate(document)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    shutil.copytree(TESTDATA / "kbuild-x86_64", tree)
    return tree


def json_of(*args: object, code: int = 0) -> Any:
    run = vmpatch(*map(str, args), "--json")
    assert run.returncode == code, run.stderr
    return run.json()


def test_every_command_matches_its_schema(tree: Path, tmp_path: Path) -> None:
    strip = require_tool("strip", "binutils")
    bad = tmp_path / "bad.ko.xz"
    bad.write_bytes(b"not xz at all")
    kernel = tree / "vmlinux"
    # An image, a module and an unreadable file in one call.
    check("inspect", json_of("inspect", kernel, built_modules(tree)[0], bad, code=2))
    boot = TESTDATA / "boot"
    images = sorted(
        p for p in boot.rglob("*") if p.is_file() and p.name not in ("System.map", "bzImage-lzo")
    )
    check("inspect", json_of("inspect", *images))
    check("tree", json_of("tree", tree, "--root-out", tmp_path / "root.bin"))
    patched = json_of("patch", "--from-tree", tree, kernel)
    check("patch", patched)
    check("patch", json_of("patch", "--root-file", tmp_path / "root.bin", kernel))
    check(
        "ko append",
        json_of(
            "ko", "append", built_modules(tree)[0], built_modules(tree)[0].with_suffix(".merkle")
        ),
    )
    check("ko append-tree", json_of("ko", "append-tree", tree, "--kernel", kernel))
    # A corrupt .ko.xz is the kernel's EINVAL (a verdict); a missing file is an error entry.
    check("verify", json_of("verify", "--kernel", kernel, *built_modules(tree), bad, code=1))
    missing = tmp_path / "missing.ko"
    check("verify", json_of("verify", "--kernel", kernel, *built_modules(tree), missing, code=2))
    check("verify", json_of("verify", "--kernel", kernel, "--modules", tree, "--failures"))
    # Every refusal explained: with a tree for the expected leaves, and another image's root.
    flipped = tmp_path / "zz_first.ko"
    data = bytearray((tree / "lib" / "zz_first.ko").read_bytes())
    data[64] ^= 1
    flipped.write_bytes(bytes(data))
    check(
        "verify",
        json_of("verify", "--kernel", kernel, flipped, "--tree", tree, code=1),
    )
    check(
        "verify",
        json_of(
            "verify", "--kernel", kernel, "--modules", tree, "--tree", tree,
            "--other-kernel", kernel,
        ),
    )  # fmt: skip
    installed = TESTDATA / "installed-x86_64" / "lib" / "modules" / "6.12.0-vmpatch"
    check("diff", json_of("diff", tree, installed))
    check("diff", json_of("diff", "--bytes", tree, installed, code=1))
    check("diff", json_of("diff", kernel, tree, "--modules-a", tree))
    check("ko strip-proof", json_of("ko", "strip-proof", *built_modules(tree)))
    check(
        "ko strip",
        json_of(
            "ko",
            "strip",
            "--install-mod-strip",
            "1",
            "--strip-program",
            strip,
            built_modules(tree)[0],
        ),
    )
    check("reroot", json_of("reroot", "--dry-run", tree))
    check("reroot", json_of("reroot", tree))
    installed = TESTDATA / "installed-x86_64" / "lib" / "modules" / "6.12.0-vmpatch"
    check("reroot", json_of("reroot", "--kernel", kernel, "--output", tmp_path / "re", installed))
    # With proofs in place, inspect shows a module's trailer object in full.
    json_of("ko", "append-tree", tree)
    check("inspect", json_of("inspect", *built_modules(tree)))


def test_a_wrong_document_fails_its_schema(tree: Path) -> None:
    """The schema is strict: the old shapes (a bare list, numeric offsets) do not pass."""
    document = json_of("inspect", tree / "vmlinux")
    check("inspect", document)
    image = document["files"][0]
    numeric = {**document, "files": [{**image, "section": {**image["section"], "offset": 1952}}]}
    with pytest.raises(jsonschema.ValidationError):
        check("inspect", numeric)
    with pytest.raises((jsonschema.ValidationError, AssertionError)):
        check("inspect", document["files"])
