# SPDX-License-Identifier: GPL-2.0-or-later
"""Every example of README.md, run as written (issue 8, item 11).

The fenced code blocks are extracted from README.md and each is handed to the
runner registered for it in :data:`RUNNERS`, keyed by the block's first line.
A block with no runner fails :func:`test_every_readme_block_has_a_runner`, so
an example added to the README is run here or, at the least, listed here with
the reason it cannot be (:data:`NOT_RUNNABLE`).

Shell blocks run under ``bash -e`` with a ``vmpatch`` (and ``vmpatch-ko-append``)
on PATH that is this checkout; the placeholders (``$KBUILD_OUTPUT``,
``$INSTALL_MOD_PATH``, ``$KVER``, ``/lib/modules/$(uname -r)``, ``/tmp/``) point
into ``tmp_path``: a copy of ``testdata/kbuild-x86_64`` and an install tree
staged from it the way ``make modules_install`` lays one out. Results are
checked against the format rules (:func:`formatref.reference_root`), readelf's
section offsets and the bytes on disk, not against vmpatch's own report alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from clirun import Run, python, tool
from conftest import ROOT, TESTDATA, require_tool
from elfcorrupt import SECTION, readelf_facts
from formatref import MARKER, reference_root

README = ROOT / "README.md"
KBUILD = TESTDATA / "kbuild-x86_64"
#: kbuild's xz parameters for modules (scripts/Makefile.modinst, cmd_xz).
KBUILD_XZ = ("xz", "--check=crc32", "--lzma2=dict=1MiB")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence, for messages

    @property
    def key(self) -> str:
        return self.text.splitlines()[0] if self.text else ""


def readme_blocks() -> list[Block]:
    """The fenced code blocks of README.md, in order."""
    blocks: list[Block] = []
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not match:
            i += 1
            continue
        fence, lang, start = match.group(1), match.group(2), i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"README.md:{start + 1}: unclosed code block"
        blocks.append(Block(lang, "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


# --- the sandbox the shell examples run in ---------------------------------------------


def _bin_dir(tmp_path: Path) -> Path:
    """``vmpatch`` and ``vmpatch-ko-append`` commands that run this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, module in (("vmpatch", "vmpatch"), ("vmpatch-ko-append", "vmpatch.hook")):
        script = bin_dir / name
        script.write_text(
            f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m {module} "$@"\n'
            if module == "vmpatch"
            else f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -c "
            f"'import sys; from vmpatch.hook import main; sys.exit(main())' \"$@\"\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _bash(
    script: str,
    tmp_path: Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> Run:
    """``script`` under bash as a user types it: the installed commands first on PATH."""
    path = f"{_bin_dir(tmp_path)}{os.pathsep}{os.environ.get('PATH', '')}"
    full_env: dict[str, str | None] = {
        "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", **(env or {}),
        "PATH": path, "PYTHONPATH": None,
    }  # fmt: skip
    return tool(
        "bash", "-e", "-c", script, "bash", *(args or []),
        cwd=cwd, env=full_env, text=True, check=False,
    )  # fmt: skip


def _ok(done: Run, what: str) -> str:
    assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    shutil.copytree(KBUILD, tree)
    return tree


def _stems(tree: Path) -> list[str]:
    return [line[:-2] for line in (tree / "modules.order").read_text().splitlines()]


def _root_in(image: Path) -> bytes:
    """The 36 section bytes, at the offset readelf gives."""
    sec = readelf_facts(image).section(SECTION)
    return image.read_bytes()[sec.offset : sec.offset + sec.size]


def _check_root(image: Path, tree: Path) -> None:
    levels, digest = reference_root(tree)
    assert levels > 0
    assert _root_in(image) == struct.pack("<I", levels) + digest, f"{image}: not the tree's root"


def _stage_install(tree: Path, mod_dir: Path) -> dict[str, Path]:
    """``make modules_install`` of ``tree`` into ``mod_dir``: DEST/kernel/<stem>.ko, as built.

    One module is installed xz-compressed with kbuild's parameters, as
    CONFIG_MODULE_COMPRESS_XZ does, so the recipe meets both kinds.
    """
    installed = {}
    for i, stem in enumerate(_stems(tree)):
        target = mod_dir / "kernel" / (stem + ".ko")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / (stem + ".ko"), target)
        if i == 1:
            tool(*KBUILD_XZ, "-q", target)
            target = target.with_name(target.name + ".xz")
        installed[stem] = target
    shutil.copyfile(tree / "modules.order", mod_dir / "modules.order")
    return installed


# --- the runners, one per README block ---------------------------------------------------


def run_quick_start(block: Block, tmp_path: Path) -> None:
    """All but the last line as written (a real venv and ``pip install .``), in a sandbox.

    ``/tmp/`` and ``mktemp -d`` (through ``TMPDIR``) point into tmp_path, and it
    runs in a copy of the source tree so that the build leaves nothing in the
    checkout; the committed install tree and kernel must come out unchanged.
    The re-rooted copy is checked against the root computed from the
    modules' bytes decompressed by the real tools (test_reroot's reference).
    The last line is the test suite itself: only checked to name real files.
    """
    from formatref import peel_trailers as trailers
    from formatref import reference_root_of as reroot_reference
    from test_reroot import kernel_visible, order_files

    lines = block.text.splitlines()
    assert len(lines) == 5, "the Quick start has three lines and the suite; teach this test"
    job, suite = "\n".join(lines[:-1]) + "\n", lines[-1]
    assert suite == "./scripts/setup-tests && .venv/bin/python -m pytest"
    assert os.access(ROOT / "scripts" / "setup-tests", os.X_OK)
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "build", "__pycache__", "*_cache"
        ),
    )
    sandbox = tmp_path / "tmp"
    sandbox.mkdir()
    assert "/tmp/" in job and "mktemp -d" in job
    installed = source / "testdata/installed-x86_64/lib/modules/6.12.0-vmpatch"
    committed = {
        p: p.read_bytes()
        for p in [source / "testdata/kbuild-x86_64/vmlinux", *installed.rglob("*")]
        if p.is_file()
    }

    def positioned(tree: Path) -> list[Path]:  # modules.order's, then the one --extra module
        return [*order_files(tree), tree / "updates" / "toy_extra.ko.xz"]

    assert "--extra updates" in job
    bases = [trailers(kernel_visible(p))[0] for p in positioned(installed)]
    stdout = _ok(
        _bash(
            job.replace("/tmp/", f"{sandbox}/"),
            tmp_path,
            cwd=source,
            env={"TMPDIR": str(sandbox)},
        ),
        "Quick start",
    )
    assert {p: p.read_bytes() for p in committed} == committed, "committed files changed"
    (out,) = [p for p in sandbox.iterdir() if p.name != "vmpatch-venv"]
    result = out / "6.12.0-vmpatch"
    levels, root = reroot_reference(bases)
    (kernel,) = json.loads(
        _ok(
            _bash(f"vmpatch inspect --json {result / 'vmlinux'}", tmp_path, cwd=tmp_path), "inspect"
        )
    )["files"]
    assert (kernel["levels"], kernel["root"]) == (levels, root.hex())
    for position, module in enumerate(positioned(result)):
        data = kernel_visible(module)
        base, kinds = trailers(data)
        assert kinds == [3] and base == bases[position], module
        assert struct.unpack(">I", data[len(base) : len(base) + 4])[0] == position
    assert root.hex() in stdout, stdout  # reroot shows the root
    assert re.search(r"5 modules: 5 accepted, 0 rejected", stdout), stdout  # verify judged them
    assert "toy_extra.ko.xz" in stdout, stdout  # the --extra module, judged apart


def run_reroot_recipe(block: Block, tmp_path: Path) -> None:
    """The re-rooting recipe on a build tree and an install tree staged from it."""
    require_tool("xz", "xz-utils")
    tree = _build_tree(tmp_path)
    kver = "6.12.0-readme"
    install_mod_path = tmp_path / "staging"
    mod_dir = install_mod_path / "lib" / "modules" / kver
    installed = _stage_install(tree, mod_dir)
    built = {stem: (tree / (stem + ".ko")).read_bytes() for stem in installed}
    env = {"KBUILD_OUTPUT": str(tree), "INSTALL_MOD_PATH": str(install_mod_path), "KVER": kver}
    stdout = _ok(_bash(block.text, tmp_path, cwd=tmp_path, env=env), "re-rooting recipe")
    _check_root(tree / "vmlinux", tree)
    levels, _ = reference_root(tree)
    for i, (stem, module) in enumerate(installed.items()):
        assert (tree / (stem + ".ko")).read_bytes() == built[stem], f"{stem}: build tree changed"
        if module.suffix == ".xz":
            content = tool("xz", "-dc", module).stdout
        else:
            content = module.read_bytes()
        proof = (tree / (stem + ".merkle")).read_bytes()
        assert content == built[stem] + proof, f"{module}: not the built module plus its proof"
        assert struct.unpack(">I", proof[:4])[0] == i and len(proof) == 4 + 32 * levels + 40
        assert proof.endswith(MARKER)
    assert "ACCEPT" in stdout, stdout
    # The recipe's last step exits 0 for UNCHECKED modules too: ask for the verdicts.
    paths = [str(p) for p in installed.values()]
    verdicts = json.loads(
        _ok(
            _bash(
                'vmpatch verify --json --kernel "$KBUILD_OUTPUT/vmlinux" "$@"',
                tmp_path,
                cwd=tmp_path,
                env=env,
                args=paths,
            ),
            "verify --json",
        )
    )
    assert [m["verdict"] for m in verdicts["modules"]] == ["ACCEPT"] * len(paths), verdicts


def run_inspect_examples(block: Block, tmp_path: Path) -> None:
    """``inspect`` of the two image forms, and of an installed ``.ko.zst``."""
    require_tool("zstd")
    work = tmp_path / "images"
    shutil.copytree(TESTDATA / "x86_64", work)
    installed = tmp_path / "lib-modules-running"
    module = installed / "kernel" / "lib" / "crc8.ko"
    module.parent.mkdir(parents=True)
    shutil.copyfile(KBUILD / "lib" / "crc_toy.ko", module)
    tool("zstd", "-q", "--rm", module)
    assert "/lib/modules/$(uname -r)" in block.text
    script = block.text.replace("/lib/modules/$(uname -r)", str(installed))
    stdout = _ok(_bash(script, tmp_path, cwd=work), "inspect examples")
    for name in ("vmlinux", "vmlinux.unstripped", "crc8.ko.zst"):
        assert name in stdout, stdout


def run_modinst_hook(block: Block, tmp_path: Path) -> None:
    """The Makefile line: names the hook, and its command appends the proof when run."""
    assert block.text.strip() == "cmd_sign = vmpatch-ko-append $@ $(objtree)/$*.merkle"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^vmpatch-ko-append = "vmpatch\.hook:main"$', pyproject, re.M)
    tree = _build_tree(tmp_path)
    _ok(_bash("vmpatch tree .", tmp_path, cwd=tree), "vmpatch tree")
    stem = _stems(tree)[0]
    module = tmp_path / "installed.ko"
    shutil.copyfile(tree / (stem + ".ko"), module)
    command = block.text.split("=", 1)[1].strip()
    command = command.replace("$@", str(module)).replace("$(objtree)/$*", str(tree / stem))
    _ok(_bash(command, tmp_path, cwd=tmp_path), "modules_install hook")
    proof = (tree / (stem + ".merkle")).read_bytes()
    assert module.read_bytes() == (tree / (stem + ".ko")).read_bytes() + proof


def run_python_api(block: Block, tmp_path: Path) -> None:
    """The Python example in a subprocess, ``path/to/linux`` a copy of the build tree."""
    tree = _build_tree(tmp_path)
    assert "path/to/linux" in block.text
    code = block.text.replace("path/to/linux", str(tree))
    done = python("-c", code, cwd=tmp_path)
    _ok(done, "Python example")
    _check_root(tree / "vmlinux", tree)
    for stem in _stems(tree):
        assert (tree / (stem + ".merkle")).read_bytes().endswith(MARKER)


def run_post_install_hook(block: Block, tmp_path: Path) -> None:
    """The once-after-install form: kbuild's stock install is packaging/modinst.mk's.

    Line 1 (``make ... modules_install`` in a kernel tree) becomes the same
    install through ``packaging/modinst.mk`` (cp, xz, no proofs); line 2 runs
    as written. Every installed module must then end with its proof, and the
    tree verify against the build's vmlinux.
    """
    first, second = block.text.splitlines()
    assert first == 'make INSTALL_MOD_PATH="$STAGE" modules_install'
    require_tool("make")
    tree = _build_tree(tmp_path)
    _ok(_bash("vmpatch patch --from-tree . vmlinux", tmp_path, cwd=tree), "vmpatch patch")
    stage, kver = tmp_path / "stage", "6.12.0-vmpatch"
    install = (
        f'make -s -f {ROOT / "packaging" / "modinst.mk"} objtree="$KBUILD_OUTPUT" KVER="$KVER" '
        'INSTALL_MOD_PATH="$STAGE" VMPATCH_HOOK=none MODULE_COMPRESS=xz'
    )
    env = {"KBUILD_OUTPUT": str(tree), "STAGE": str(stage), "KVER": kver}
    _ok(_bash(f"{install}\n{second}", tmp_path, cwd=tmp_path, env=env), "post-install hook")
    modules = stage / "lib" / "modules" / kver
    for stem in _stems(tree):
        data = tool("xz", "-dc", modules / "kernel" / f"{stem}.ko.xz").stdout
        proof = (tree / f"{stem}.merkle").read_bytes()
        assert data == (tree / f"{stem}.ko").read_bytes() + proof, stem
    verify = f'vmpatch verify --kernel "$KBUILD_OUTPUT/vmlinux" --modules "{modules}"'
    _ok(_bash(verify, tmp_path, cwd=tmp_path, env=env), "verify")


#: The packaging excerpts and the file each is quoted from (built by test_packaging_recipes).
PACKAGING_EXCERPTS = {
    "override_dh_strip:": "packaging/debian/debian/rules",
    "%define __spec_install_post \\": "packaging/rpm/kernel-vmpatch.spec",
    "options=(!strip !debug)": "packaging/arch/PKGBUILD",
}


def run_packaging_excerpt(block: Block, tmp_path: Path) -> None:
    """A recipe excerpt is quoted verbatim from the recipe the packaging tests build."""
    text = (ROOT / PACKAGING_EXCERPTS[block.key]).read_text()
    excerpt = block.text.rstrip("\n")
    if block.key.startswith("options="):  # the Arch excerpt: the good branch of the PKGBUILD
        assert re.search(r"^  options=\(!strip !debug\)$", text, re.M), excerpt
    else:
        assert excerpt in text, f"{PACKAGING_EXCERPTS[block.key]} no longer says:\n{excerpt}"


def run_system_example(block: Block, tmp_path: Path) -> None:
    """``verify --system --root`` on a staged Debian image (tests/test_verify_system.py)."""
    from test_verify_system import CONFIG, KVER, Staged

    staged = Staged(tmp_path / "stage")
    image = tmp_path / "image"
    shutil.copytree(staged.modules, image / "lib/modules" / KVER)
    (image / "boot").mkdir()
    shutil.copy(staged.bzimage, image / f"boot/vmlinuz-{KVER}")
    (image / f"boot/config-{KVER}").write_text(CONFIG)
    assert "/mnt/image" in block.text
    done = _bash(block.text.replace("/mnt/image", str(image)), tmp_path, cwd=tmp_path)
    # The out-of-tree module is unsigned: the one failure, exit 1.
    assert done.returncode == 1, done.stderr
    assert "updates/toy_extra.ko.xz" in done.stdout and "5 accepted" in done.stdout


def run_explain_and_diff(block: Block, tmp_path: Path) -> None:
    """The transcript, command by command from a sandbox: its output must be exactly the README's.

    ``testdata`` is a link to the committed tree; the commands copy what they change.
    """
    require_tool("strip", "binutils")
    work = tmp_path / "work"
    work.mkdir()
    (work / "testdata").symlink_to(TESTDATA)
    commands, expected = [], []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        expected.append(line)
    got = []
    for command in commands:
        done = _bash(f"{command} 2>&1", tmp_path, cwd=work)
        got.append(f"$ {command}")
        got += done.stdout.splitlines()
    assert got == expected


Runner = Callable[[Block, Path], None]

#: README block first line -> what runs it.
RUNNERS: dict[str, Runner] = {
    "python3 -m venv /tmp/vmpatch-venv && /tmp/vmpatch-venv/bin/pip install -q . "
    "&& out=$(mktemp -d)": run_quick_start,
    'vmpatch patch --from-tree "$KBUILD_OUTPUT" "$KBUILD_OUTPUT/vmlinux"   '
    "# root + <module>.merkle": run_reroot_recipe,
    "vmpatch inspect vmlinux vmlinux.unstripped": run_inspect_examples,
    "cmd_sign = vmpatch-ko-append $@ $(objtree)/$*.merkle": run_modinst_hook,
    "from vmpatch.workflow.patch import run_patch": run_python_api,
    'make INSTALL_MOD_PATH="$STAGE" modules_install': run_post_install_hook,
    **dict.fromkeys(PACKAGING_EXCERPTS, run_packaging_excerpt),
    "vmpatch verify --system --root /mnt/image --failures      # only what does not load": (
        run_system_example
    ),
    "$ cp -r testdata/kbuild-x86_64 hashed && vmpatch reroot hashed > /dev/null": (
        run_explain_and_diff
    ),
}

#: README block first line -> why no test runs it.
NOT_RUNNABLE: dict[str, str] = {
    "apt-get install -y debootstrap": "the fresh-machine check itself: it needs root, a Debian "
    "mirror and about ten minutes, and is run by hand before resolving an issue that adds a tool",
    ".venv/bin/python scripts/check-decompress-matrix          # compare; --write records": (
        "boots QEMU once per kernel; tests/test_decompress_matrix.py runs it with VMPATCH_E2E=1"
    ),
}


def test_every_readme_block_has_a_runner() -> None:
    blocks = readme_blocks()
    assert blocks, "no code blocks found in README.md"
    keys = [b.key for b in blocks]
    unknown = [
        f"README.md:{b.line}: {b.key!r}"
        for b in blocks
        if b.key not in RUNNERS and b.key not in NOT_RUNNABLE
    ]
    assert not unknown, "README examples no test runs (add a runner or a reason):\n" + "\n".join(
        unknown
    )
    stale = sorted((set(RUNNERS) | set(NOT_RUNNABLE)) - set(keys))
    assert not stale, f"runners for examples README.md no longer has: {stale}"
    assert len(keys) == len(set(keys)), "two README blocks start alike; tell them apart"


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda b: f"line{b.line}")
def test_readme_example_runs(block: Block, tmp_path: Path) -> None:
    if block.key in NOT_RUNNABLE:
        pytest.skip(f"README.md:{block.line}: {NOT_RUNNABLE[block.key]}")
    runner = RUNNERS.get(block.key)
    assert runner is not None, f"README.md:{block.line}: no runner for {block.key!r}"
    runner(block, tmp_path)
