# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch ko ...`` through ``python -m vmpatch``: exit codes, JSON, real strip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import clirun
from clirun import Run, hook, tool
from conftest import require_tool
from test_kotool import cli_compress, cli_decompress, make_tree, modules, patched_vmlinux

ENV = {"NO_COLOR": "1", "COLUMNS": "200"}


def vmpatch(*args: str | Path) -> Run:
    return clirun.vmpatch(*args, env=ENV)


def assert_error(proc: Run, code: int, text: str) -> None:
    """Exit ``code`` and one ``error:`` line that carries ``text``, the whole reason."""
    assert text.strip(), "an empty expectation matches any message"
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert text in lines[0], (text, lines[0])


def test_append_json_twice_replace(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    (module, proof), (_other, other_proof) = modules(tree)[:2]
    original = module.read_bytes()
    proc = vmpatch("ko", "append", module, proof, "--json")
    assert proc.returncode == 0, proc.stderr
    (doc,) = json.loads(proc.stdout)["modules"]
    assert doc["action"] == "appended" and doc["position"] == 0 and doc["levels"] == 3
    assert doc["path"] == str(module)
    appended = module.read_bytes()

    proc = vmpatch("ko", "append", module, proof)
    assert proc.returncode == 0 and "unchanged" in proc.stdout

    assert_error(
        vmpatch("ko", "append", module, other_proof),
        2,
        f"{module}: already carries a merkle trailer; use --replace",
    )
    assert module.read_bytes() == appended

    proc = vmpatch("ko", "append", "--replace", module, other_proof, "--json")
    (doc,) = json.loads(proc.stdout)["modules"]
    assert doc["replaced_trailer"]["kind"] == "merkle"
    assert module.read_bytes() == original + other_proof.read_bytes()


def test_append_kernel_and_strip_check(tmp_path: Path) -> None:
    tree, merkle = make_tree(tmp_path)
    image = patched_vmlinux(tmp_path, merkle)
    (module, proof), (_other, other_proof) = modules(tree)[:2]
    original = module.read_bytes()
    assert_error(
        vmpatch("ko", "append", module, other_proof, "--kernel", image),
        1,
        f"{module}: the kernel would reject the result: hash mismatch at position 1",
    )
    proc = vmpatch("ko", "append", module, proof, "--install-mod-strip", "1", "--build-dir", tree)
    assert_error(proc, 1, "INSTALL_MOD_STRIP is '1' at install time but '' at build time")
    assert module.read_bytes() == original
    assert_error(
        vmpatch("ko", "append", module, proof, "--install-mod-strip", "1"),
        2,
        "error: --install-mod-strip and --build-dir go together",
    )
    proc = vmpatch("ko", "append", module, proof, "--kernel", image, "--json")
    assert [d["verdict"] for d in json.loads(proc.stdout)["modules"]] == ["ACCEPT"]


def test_append_tree_and_strip_proof(tmp_path: Path) -> None:
    tree, merkle = make_tree(tmp_path)
    image = patched_vmlinux(tmp_path, merkle)
    pairs = modules(tree)
    originals = [m.read_bytes() for m, _ in pairs]
    proc = vmpatch("ko", "append-tree", tree, "--kernel", image, "--json")
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)["modules"]
    assert [d["verdict"] for d in docs] == ["ACCEPT"] * len(pairs)
    assert [d["path"] for d in docs] == [str(m) for m, _ in pairs]
    proc = vmpatch("ko", "append-tree", tree)
    assert proc.returncode == 0 and "unchanged" in proc.stdout
    assert_error(
        vmpatch("ko", "append-tree", tree, "--install-mod-strip", "1"),
        1,
        f"{tree}: INSTALL_MOD_STRIP is '1' at install time but '' at build time",
    )

    proc = vmpatch("ko", "strip-proof", *(m for m, _ in pairs), "--json")
    assert proc.returncode == 0, proc.stderr
    removed = [d["removed"] for d in json.loads(proc.stdout)["modules"]]
    assert removed == [[{"kind": "merkle", "label": "merkle"}]] * len(pairs)
    assert [m.read_bytes() for m, _ in pairs] == originals
    proc = vmpatch("ko", "strip-proof", pairs[0][0])
    assert proc.returncode == 0 and "no trailer" in proc.stdout
    assert_error(
        vmpatch("ko", "strip-proof", pairs[0][0], pairs[1][0], "--output", tmp_path / "x"),
        2,
        "error: --output takes exactly one MODULE",
    )


def test_compressed_round_trip_cli(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    module, proof = modules(tree)[0]
    original = module.read_bytes()
    packed = cli_compress(module, ".zst")
    assert vmpatch("ko", "append", packed, proof).returncode == 0
    assert cli_decompress(packed) == original + proof.read_bytes()
    assert vmpatch("ko", "strip-proof", packed).returncode == 0
    assert cli_decompress(packed) == original


def test_strip_modules_like_kbuild(tmp_path: Path) -> None:
    strip = require_tool("strip", "binutils")
    tree, _ = make_tree(tmp_path)
    module, _proof = modules(tree)[0]
    reference = tmp_path / "reference.ko"
    shutil.copyfile(module, reference)
    tool(strip, "--strip-debug", reference)
    proc = vmpatch("ko", "strip", "--install-mod-strip", "1", module)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("+ strip --strip-debug ")
    stripped = module.with_name(module.name + ".stripped")
    assert stripped.read_bytes() == reference.read_bytes()
    assert len(stripped.read_bytes()) < len(module.read_bytes())
    assert_error(
        vmpatch("ko", "strip", "--install-mod-strip", "1"),
        2,
        "error: give MODULE... or --tree BUILD_DIR",
    )


def test_strip_tree_writes_record(tmp_path: Path) -> None:
    require_tool("strip", "binutils")
    tree, _ = make_tree(tmp_path)
    # kbuild's record says '' : a different value is refused before stripping
    assert_error(
        vmpatch("ko", "strip", "--install-mod-strip", "1", "--tree", tree),
        1,
        f"{tree}: INSTALL_MOD_STRIP is '1' now but '' in include/config/auto.conf",
    )
    (tree / "include" / "config" / "auto.conf").unlink()
    proc = vmpatch("ko", "strip", "--install-mod-strip", "1", "--tree", tree, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [m["path"] for m in doc["modules"]] == [str(m) for m, _ in modules(tree)]
    record = json.loads((tree / "vmpatch-strip.json").read_text())
    assert record["install_mod_strip"] == "1" and record["program"] == "strip"
    for module, _proof in modules(tree):
        assert module.with_name(module.name + ".stripped").is_file()
    # the record now guards appends
    module, proof = modules(tree)[0]
    proc = vmpatch("ko", "append", module, proof, "--install-mod-strip", "", "--build-dir", tree)
    assert_error(proc, 1, "INSTALL_MOD_STRIP is '' at install time but '1' at build time")


def test_append_judges_a_kernel_without_module_hashes_as_verify_does(tmp_path: Path) -> None:
    """One kernel model for verify and append: no .module_hashes is a kernel, not an error.

    The image is the test vmlinux with the section removed by the real
    objcopy. ``verify`` judges the module as ``cat`` would make it; ``ko
    append --kernel`` and the hook must come to the same verdict (they used to
    refuse the image with "no .module_hashes section", exit 2).
    """
    from conftest import TESTDATA

    objcopy = require_tool("objcopy", "binutils")
    tree, _ = make_tree(tmp_path)
    image = tmp_path / "vmlinux-no-hashes"
    tool(objcopy, "--remove-section=.module_hashes", TESTDATA / "kbuild-x86_64" / "vmlinux", image)
    sections = clirun.tool_text("readelf", "-S", "-W", image)
    assert ".module_hashes" not in sections
    (module, proof), (hooked, hooked_proof) = modules(tree)[:2]
    catted = tmp_path / "catted.ko"
    catted.write_bytes(module.read_bytes() + proof.read_bytes())
    run = vmpatch("verify", "--json", "--kernel", image, catted)
    doc = json.loads(run.stdout)
    assert doc["module_hashes"] is False
    [judged] = doc["modules"]
    proc = vmpatch("ko", "append", "--json", "--kernel", image, module, proof)
    assert proc.returncode == run.returncode, proc.stderr
    assert json.loads(proc.stdout)["modules"][0]["verdict"] == judged["verdict"]
    assert module.read_bytes() == catted.read_bytes()
    assert hook("--kernel", image, hooked, hooked_proof).returncode == run.returncode
