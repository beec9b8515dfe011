# SPDX-License-Identifier: GPL-2.0-or-later
"""``verify`` in forked workers gives exactly what it gives in threads, whatever the module.

Over many modules ``verify_files`` judges plain modules in forked children
that map each file (vmpatch.fs.forkmap), and everything else where it
cannot fork. The two must agree on every input, so one real tree holds every
kind of module the verdicts and errors know: the miniature kbuild tree's
five real modules installed under 96 names, rooted with ``patch
--from-tree`` and proved with kbuild's ``cat``, then damaged the ways a tree
goes wrong (a flipped byte, a cut proof, no proof, another tree's proof, a
PKCS#7 signature from ``openssl cms``, a signature under the proof, a strip
after hashing, a rebuilt module), plus files that are no module at all (a
directory, a FIFO, an empty file, a missing one, procfs, a sparse file past
the size bound, compressed modules good and corrupt). The threaded run is
the reference; a few verdicts are also checked against the kernel's rules
(docs/format.md section 4) so that the comparison is not of two wrong answers.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import builds
import pytest
from clirun import python, spawn, tool, traversable_dir, vmpatch
from conftest import TESTDATA, require_tool

from vmpatch.boot.kernel import kernel_model
from vmpatch.fs import forkmap
from vmpatch.workflow import verify as verify_module
from vmpatch.workflow.results import FileError
from vmpatch.workflow.verify import ModuleVerdict, run_verify, verify_files

COUNT = 96  # above verify's fork threshold
INFO_AND_MARKER = 12 + 28


@dataclass
class Mixed:
    tree: Path  # the kbuild-form tree with proofs appended (some damaged)
    reference: Path  # the tree as it was hashed (modules without proofs)
    kernel: Path
    extras: list[Path]  # module files outside modules.order, good and bad
    names: dict[str, Path]  # what each damaged module is, for the spot checks


def _kbuild_tree(target: Path, order: list[int]) -> list[str]:
    """A kbuild-form tree of COUNT copies of the five real modules; returns the stems."""
    stems = builds.order_stems(TESTDATA / "kbuild-x86_64")
    listed = []
    for i in order:
        stem = stems[i % len(stems)]
        name = f"{stem}_{i:03d}"
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TESTDATA / "kbuild-x86_64" / f"{stem}.ko", target / f"{name}.ko")
        listed.append(name)
    (target / "modules.order").write_text("".join(f"{s}.o\n" for s in listed))
    shutil.copyfile(TESTDATA / "kbuild-x86_64" / "vmlinux", target / "vmlinux")
    run = vmpatch("patch", "--from-tree", target, target / "vmlinux")
    assert run.returncode == 0, run.stderr
    return listed


def _prove(tree: Path, stems: list[str]) -> None:
    for stem in stems:  # kbuild's modules_install: cat module proof
        ko = tree / f"{stem}.ko"
        ko.write_bytes(ko.read_bytes() + (tree / f"{stem}.merkle").read_bytes())


def _build(base: Path) -> Mixed:
    require_tool("strip", "binutils")
    require_tool("openssl", "openssl")
    xz = require_tool("xz", "xz-utils")
    zstd = require_tool("zstd", "zstd")
    tree, other = base / "linux", base / "other"
    stems = _kbuild_tree(tree, list(range(COUNT)))
    reference = shutil.copytree(tree, base / "hashed")
    other_stems = _kbuild_tree(other, list(reversed(range(COUNT))))  # another root
    _prove(tree, stems)
    names: dict[str, Path] = {}

    def damaged(what: str, index: int, data: bytes) -> None:
        path = tree / f"{stems[index]}.ko"
        path.write_bytes(data)
        names[what] = path

    def plain(index: int) -> bytes:
        return (reference / f"{stems[index]}.ko").read_bytes()

    def proof(index: int) -> bytes:
        return (tree / f"{stems[index]}.merkle").read_bytes()

    flipped = bytearray((tree / f"{stems[3]}.ko").read_bytes())
    flipped[100] ^= 1
    damaged("flipped", 3, bytes(flipped))
    damaged("cut-proof", 7, plain(7) + proof(7)[:-10])
    damaged("short-proof", 11, plain(11) + proof(11)[32:])
    damaged("no-proof", 13, plain(13))
    other_proof = (other / f"{other_stems[COUNT - 1 - 17]}.merkle").read_bytes()
    damaged("other-tree-proof", 17, plain(17) + other_proof)
    damaged("pkcs7", 19, builds.pkcs7_signed(plain(19), base))
    damaged("pkcs7-under-proof", 23, builds.pkcs7_signed(plain(23), base) + proof(23))
    stripped = base / "stripped.ko"
    stripped.write_bytes(plain(29))
    tool("strip", "--strip-debug", stripped)
    damaged("stripped-after-hashing", 29, stripped.read_bytes() + proof(29))
    rebuilt = builds.variant_module(base / "variant", "lib/rebuilt", 31, "rebuilt")
    damaged("rebuilt", 31, rebuilt.read_bytes() + proof(31))
    damaged("empty-in-tree", 37, b"")
    damaged("xz-magic-plain", 41, b"\xfd7zXZ\x00" + plain(41)[6:] + proof(41))

    extras = base / "extras"
    extras.mkdir()
    good = (tree / f"{stems[0]}.ko").read_bytes()

    def extra(name: str, data: bytes | None = None) -> Path:
        path = extras / name
        if data is not None:
            path.write_bytes(data)
        names[name] = path
        return path

    directory = extra("directory.ko")
    directory.mkdir()
    fifo = extra("fifo.ko")
    os.mkfifo(fifo)
    link = extra("link.ko")
    link.symlink_to(tree / f"{stems[0]}.ko")
    sparse = extra("sparse.ko")
    with sparse.open("wb") as fh:
        fh.truncate(300 << 20)  # past the default 256 MiB bound, no blocks used
    xz_good = extra("good.ko.xz")
    xz_good.write_bytes(
        tool(xz, "--check=crc32", "--lzma2=dict=1MiB", "-c", input=good).stdout  # kbuild's
    )
    extra("crc64.ko.xz", tool(xz, "--check=crc64", "-c", input=good).stdout)
    extra("corrupt.ko.xz", b"\xfd7zXZ\x00" + b"\x00" * 40)
    extra("good.ko.gz", gzip.compress(good, mtime=0))
    extra("good.ko.zst", tool(zstd, "-q", "-c", input=good).stdout)
    listed = [
        extra("empty.ko", b""),
        directory,
        fifo,
        link,
        extra("missing.ko"),
        Path("/proc/version"),
        sparse,
        *sorted(extras.glob("*.ko.*")),
        extra("good-copy.ko", good),
    ]
    return Mixed(tree, reference, tree / "vmlinux", listed, names)


@pytest.fixture(scope="module")
def mixed() -> Iterator[Mixed]:
    with traversable_dir("vmpatch-forked-") as base:  # nobody must reach it (see below)
        yield _build(base)


def _same(
    forked: list[ModuleVerdict | FileError], threaded: list[ModuleVerdict | FileError]
) -> None:
    assert forked == threaded
    for a, b in zip(forked, threaded, strict=True):  # FileError's exception compares apart
        if isinstance(a, FileError):
            assert isinstance(b, FileError)
            assert type(a.exception) is type(b.exception)
            assert str(a.exception) == str(b.exception)


def test_forked_and_threaded_reports_are_identical(mixed: Mixed, forks: list[int]) -> None:
    def report(workers: int) -> Any:
        return run_verify(
            mixed.kernel,
            mixed.extras,
            modules_dir=mixed.tree,
            workers=workers,
            tree=mixed.reference,
        )

    threaded = report(1)
    assert forks == []
    forked = report(2)
    assert forks == [COUNT + len(mixed.extras)]
    assert forked == threaded  # every field: verdicts, errors, explanations, counts
    _same(list(forked.modules), list(threaded.modules))

    by_path = {m.path: m for m in forked.modules}
    verdicts = [m for m in forked.modules if isinstance(m, ModuleVerdict)]
    assert sum(m.verdict == "ACCEPT" for m in verdicts) >= COUNT - 15

    def errno(what: str) -> str | None:
        found = by_path[mixed.names[what]]
        assert isinstance(found, ModuleVerdict), found
        return found.errno

    # docs/format.md section 4, the kernel's order of checks:
    assert errno("flipped") == "ENOKEY"  # the leaf differs: the fold misses the root
    assert errno("cut-proof") == "ENODATA"  # the marker is gone
    assert errno("no-proof") == "ENODATA"
    assert errno("other-tree-proof") == "ENOKEY"
    assert errno("pkcs7") == "ENOPKG"  # this vmlinux has no MODULE_SIG
    assert errno("empty-in-tree") == "ENODATA"
    assert errno("good.ko.xz") is None and errno("good.ko.gz") is None
    assert errno("corrupt.ko.xz") == "EINVAL"  # the kernel's xz decoder refuses it
    assert errno("crc64.ko.xz") == "EINVAL"
    assert errno("link.ko") is None
    causes = {
        what: by_path[mixed.names[what]].explanation.cause  # type: ignore[union-attr]
        for what in ("stripped-after-hashing", "pkcs7-under-proof", "other-tree-proof")
    }
    assert causes == {
        "stripped-after-hashing": "stripped-after-hashing",  # strip ran in a worker
        "pkcs7-under-proof": "stacked-trailer",
        "other-tree-proof": "other-build",  # it folds to another root
    }
    errors = {m.path.name: m for m in forked.modules if isinstance(m, FileError)}
    assert set(errors) == {
        "directory.ko",
        "fifo.ko",
        "missing.ko",
        "sparse.ko",
        mixed.names["xz-magic-plain"].name,
    }
    assert "is a directory" in errors["directory.ko"].error.reason
    assert "is a FIFO" in errors["fifo.ko"].error.reason
    assert "exceeds" in errors["sparse.ko"].error.reason


def test_forked_files_alone_match_threads(mixed: Mixed, forks: list[int]) -> None:
    """verify_files over plain paths only (the tree's files, no explainer), progress exact."""
    model = kernel_model(mixed.kernel, None)
    paths = sorted(mixed.tree.rglob("*.ko")) + mixed.extras
    seen: list[int] = []
    forked = verify_files(model, paths, workers=2, progress=seen.append)
    assert forks == [len(paths)]
    assert seen == sorted(seen) and seen[-1] == len(paths)
    _same(forked, verify_files(model, paths, workers=1))


def test_no_fork_while_another_thread_runs(mixed: Mixed, forks: list[int]) -> None:
    import threading

    model = kernel_model(mixed.kernel, None)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with_thread = verify_files(model, mixed.extras * 10, workers=2)
    finally:
        stop.set()
        other.join()
    assert forks == []
    _same(with_thread, verify_files(model, mixed.extras * 10, workers=1))


#: Run as nobody (root reads a mode-0 file): forked and threaded verify of the
#: tree with one module made unreadable, both as JSON.
_UNPRIVILEGED = """
import json, sys
from pathlib import Path
from vmpatch.boot.kernel import kernel_model
from vmpatch.cli.jsonout import to_json
from vmpatch.workflow.verify import verify_files
kernel, *paths = sys.argv[1:]
model = kernel_model(kernel, None)
print(json.dumps([to_json(verify_files(model, [Path(p) for p in paths], workers=w))
                  for w in (1, 2)]))
"""


def test_an_unreadable_module_is_the_same_error(mixed: Mixed) -> None:
    paths = sorted(mixed.tree.rglob("*.ko"))
    victim = paths[5]
    victim.chmod(0)
    try:
        run = python("-c", _UNPRIVILEGED, mixed.kernel, *paths, unprivileged=True)
    finally:
        victim.chmod(0o644)
    assert run.returncode == 0, run.stderr
    threaded, forked = json.loads(run.stdout)
    assert forked == threaded
    errors = {r["path"]: r["error"] for r in forked if "error" in r}
    assert errors[str(victim)]["exit_code"] == 3  # the system refused: not the input's fault
    assert "Permission denied" in errors[str(victim)]["reason"]


_TRUNCATE_FOREVER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
while True:
    os.ftruncate(fd, 4096)
    os.ftruncate(fd, int(sys.argv[2]))
"""


def test_a_module_shrinking_under_its_mapping_is_its_own_error(mixed: Mixed) -> None:
    """A file truncated while a worker hashes its mapping: SIGBUS ends that worker only.

    Another process truncates and regrows a 64 MiB module over and over
    while verify runs; whenever the truncation lands inside the hashing, the
    worker dies of SIGBUS, and that module alone is an error (exit 3); every
    other module keeps the verdict it has in threads.
    """
    model = kernel_model(mixed.kernel, None)
    paths = sorted(mixed.tree.rglob("*.ko"))
    reference = verify_files(model, paths, workers=1)
    victim = mixed.tree / "victim.ko"
    size = 64 << 20
    with victim.open("wb") as fh:
        fh.truncate(size)
    truncating = spawn([sys.executable, "-c", _TRUNCATE_FOREVER, victim, str(size)], env={})
    try:
        outcomes = set()
        deadline = time.monotonic() + 60
        while "SIGBUS" not in outcomes and time.monotonic() < deadline:
            results = verify_files(model, [*paths, victim], workers=2)
            _same(results[:-1], reference)
            last = results[-1]
            if isinstance(last, FileError):
                assert "SIGBUS" in last.error.reason, last
                assert last.error.exit_code == 3 and last.path == victim
                outcomes.add("SIGBUS")
            else:
                assert last.errno == "ENODATA"  # zeros: no marker
                outcomes.add("verdict")
    finally:
        truncating.kill()
        truncating.wait()
        victim.unlink()
    assert "SIGBUS" in outcomes


def test_the_cli_prints_what_the_threads_find(mixed: Mixed) -> None:
    """The command (forked on a machine with 2 CPUs) prints the threaded report's JSON."""
    from vmpatch.cli.jsonout import document

    threaded = run_verify(
        mixed.kernel, mixed.extras, modules_dir=mixed.tree, workers=1, tree=mixed.reference
    )
    run = vmpatch(
        "verify", "--json", "--kernel", mixed.kernel, *mixed.extras,
        "--modules", mixed.tree, "--tree", mixed.reference,
    )  # fmt: skip
    assert run.returncode == threaded.exit_code == 2, run.stderr
    assert json.loads(run.stdout) == json.loads(json.dumps(document("verify", threaded)))


def test_the_fork_threshold_is_what_verify_uses() -> None:
    """The tests above are about the forked path only if COUNT modules take it."""
    assert COUNT >= verify_module._FORK_THRESHOLD
    assert sys.platform != "linux" or forkmap.can_fork()
