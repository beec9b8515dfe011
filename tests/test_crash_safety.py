# SPDX-License-Identifier: GPL-2.0-or-later
"""SIGKILL the real command line mid-write: "a run interrupted at any point loses nothing".

The README promises atomic rewrites (temp file beside the target, fsync,
rename). Unit tests cannot check that: an exception still runs ``finally``
blocks and context managers, a SIGKILL does not. So each test here runs
``python -m vmpatch ...`` once to the end (the reference result and its wall
time), then again and again, killed at once and at 20 evenly spaced moments
of that wall time, and after every kill checks the invariant: each file the
command writes is either exactly as before or exactly the reference result,
nothing else in the directory changed except temp files carrying
``fsutil.TEMP_MARK``, modes are kept, no forked worker outlives its parent
for long, and a later complete run is not confused by what was left behind.

Module sizes are chosen so that the writing window is a good part of a run
(a 20 MiB module of seeded random bytes takes ~0.15 s to append beyond the
~0.15 s start-up). The checkers themselves are shown to reject hand-made
half-written states, so a sweep that passes means something.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clirun import tool, vmpatch
from conftest import TESTDATA, require, require_tool
from killer import INSIDE, Kill, Sweep, listing, sweep, timed_run, wait_gone

from vmpatch.fs.atomic import TEMP_MARK
from vmpatch.records.trailer import merkle_trailer

VMLINUX = TESTDATA / "x86_64" / "vmlinux.unstripped"
KBUILD = TESTDATA / "kbuild-x86_64"

#: Modes nobody would produce by accident (not 0644, not mkstemp's 0600).
MODULE_MODE = 0o640
IMAGE_MODE = 0o750

#: How long forked hashing workers may outlive a killed `vmpatch tree`.
ORPHAN_GRACE = 5.0

ROOT_HEX = "5a" * 32
ROOT_LEVELS = "3"

#: Compression as kbuild's modules_install does it, and an independent decompressor.
COMPRESS = {
    ".xz": (["xz", "--check=crc32", "--lzma2=dict=1MiB", "-q"], "xz-utils"),
    ".zst": (["zstd", "-q", "--rm"], "zstd"),
}
DECOMPRESS = {".xz": ["xz", "-d", "-c"], ".zst": ["zstd", "-q", "-d", "-c"]}


# ---------------------------------------------------------------------------
# Inputs


def seeded_bytes(size: int, seed: int) -> bytes:
    """``size`` reproducible pseudo-random bytes (incompressible, so codecs work hard)."""
    return random.Random(seed).randbytes(size)


def seeded_proof(seed: int, levels: int = 3) -> bytes:
    """A well-formed Merkle trailer (a ``.merkle`` file's content)."""
    rng = random.Random(seed)
    return merkle_trailer(5, [rng.randbytes(32) for _ in range(levels)])


def make_module(directory: Path, codec: str, raw: bytes) -> Path:
    """``directory/big.ko[codec]`` holding ``raw``, compressed with the real tool."""
    plain = directory / "big.ko"
    plain.write_bytes(raw)
    if codec:
        argv, package = COMPRESS[codec]
        require_tool(argv[0], package)
        tool(*argv, plain)
    module = directory / f"big.ko{codec}"
    assert module.is_file() and not (codec and plain.exists())
    module.chmod(MODULE_MODE)
    return module


def restore(path: Path, content: bytes, mode: int) -> None:
    """Put ``content`` back at ``path`` (a fresh file, like a reinstall) with ``mode``."""
    path.unlink(missing_ok=True)
    path.write_bytes(content)
    path.chmod(mode)


# ---------------------------------------------------------------------------
# Invariant checkers: each raises AssertionError, or names the state it found


def kernel_bytes(path: Path, codec: str) -> bytes | None:
    """What the kernel would see: the file, or its decompression (None if corrupt)."""
    if not codec:
        return path.read_bytes()
    proc = tool(*DECOMPRESS[codec], path, check=False)
    return proc.stdout if proc.returncode == 0 else None


def file_state(path: Path, codec: str, mode: int, states: Mapping[str, bytes]) -> str:
    """Which of ``states`` (name -> kernel-visible bytes) ``path`` is in; it must be one."""
    assert path.is_file(), f"{path} is gone"
    got_mode = stat.S_IMODE(path.stat().st_mode)
    assert got_mode == mode, f"{path} has mode {got_mode:o}, not {mode:o}"
    content = kernel_bytes(path, codec)
    assert content is not None, f"{path} no longer decompresses"
    for name, expected in states.items():
        if content == expected:
            return name
    allowed = ", ".join(f"{n} ({len(b)} bytes)" for n, b in states.items())
    raise AssertionError(f"{path}: {len(content)} bytes matching none of: {allowed}")


def temp_files(directory: Path, before: set[str], targets: Iterable[Path]) -> list[str]:
    """Entries new in ``directory`` since ``before``: each must be a temp file of a target.

    A temp file of ``dir/name`` is ``dir/.name.<random>`` + TEMP_MARK (fsutil's mkstemp).
    """
    allowed: dict[Path, list[str]] = {}
    for target in targets:
        allowed.setdefault(target.parent, []).append(target.name)
    new = sorted(listing(directory) - before)
    for rel in new:
        entry = directory / rel
        names = allowed.get(entry.parent, [])
        assert any(
            re.fullmatch(rf"\.{re.escape(n)}\..+{re.escape(TEMP_MARK)}", entry.name) for n in names
        ), f"unexpected new file {rel} (not a {TEMP_MARK} temp file of a target)"
        assert entry.is_file(), f"{rel} is not a regular file"
    return new


def output_state(output: Path, reference: bytes, mode: int) -> str:
    """A copy written with --output: absent, or complete (the reference's bytes and mode)."""
    if not output.exists():
        return "absent"
    assert output.read_bytes() == reference, f"{output} exists but is not the complete copy"
    got_mode = stat.S_IMODE(output.stat().st_mode)
    assert got_mode == mode, f"{output} has mode {got_mode:o}, not {mode:o}"
    return "complete"


def identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is written to or replaced: inode, size, mtime, ctime."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def tree_state(
    build: Path,
    before: set[str],
    proofs: Mapping[Path, bytes],
    modules: Mapping[Path, tuple[int, int, int, int]],
) -> tuple[str, list[str]]:
    """After `vmpatch tree`: modules untouched, each proof absent or final, only temps besides.

    Returns the state (no, some or all proofs) and the temp files left.
    """
    for module, ident in modules.items():
        assert identity(module) == ident, f"module {module} was changed"
    present = [p for p in proofs if p.exists()]
    for proof in present:
        assert proof.read_bytes() == proofs[proof], f"{proof} is not the final proof"
        assert stat.S_IMODE(proof.stat().st_mode) == 0o644, f"{proof} is not 0644"
    temps = temp_files(build, before | {str(p.relative_to(build)) for p in present}, proofs)
    if not present:
        return "no proofs", temps
    return ("all proofs" if len(present) == len(proofs) else "some proofs"), temps


# ---------------------------------------------------------------------------
# The checkers can fail: hand-made broken states are rejected


def test_checkers_reject_half_written_states(tmp_path: Path) -> None:
    """A torn append, a truncated .ko.xz, a mode change, a stray file, a partial copy."""
    raw, proof = seeded_bytes(4096, 1), seeded_proof(1)
    states = {"original": raw, "appended": raw + proof}
    module = make_module(tmp_path, "", raw)
    assert file_state(module, "", MODULE_MODE, states) == "original"
    restore(module, raw + proof[: len(proof) // 2], MODULE_MODE)
    with pytest.raises(AssertionError, match="matching none"):
        file_state(module, "", MODULE_MODE, states)
    restore(module, raw + proof, 0o644)
    with pytest.raises(AssertionError, match="mode"):
        file_state(module, "", MODULE_MODE, states)

    xz_dir = tmp_path / "xz"
    xz_dir.mkdir()
    packed = make_module(xz_dir, ".xz", raw + proof)
    assert file_state(packed, ".xz", MODULE_MODE, states) == "appended"
    restore(packed, packed.read_bytes()[:-40], MODULE_MODE)
    with pytest.raises(AssertionError, match="no longer decompresses"):
        file_state(packed, ".xz", MODULE_MODE, states)

    before = listing(tmp_path)
    (tmp_path / f".big.ko.x1{TEMP_MARK}").write_bytes(b"")
    assert temp_files(tmp_path, before, [module]) == [f".big.ko.x1{TEMP_MARK}"]
    (tmp_path / "big.ko.orig").write_bytes(raw)
    with pytest.raises(AssertionError, match=r"unexpected new file big\.ko\.orig"):
        temp_files(tmp_path, before, [module])
    (tmp_path / "big.ko.orig").unlink()
    (tmp_path / f".other.ko.x2{TEMP_MARK}").write_bytes(b"")
    with pytest.raises(AssertionError, match="unexpected new file"):
        temp_files(tmp_path, before, [module])

    copy = tmp_path / "copy"
    assert output_state(copy, raw, IMAGE_MODE) == "absent"
    copy.write_bytes(raw[:1000])
    with pytest.raises(AssertionError, match="not the complete copy"):
        output_state(copy, raw, IMAGE_MODE)


def test_in_place_checker_rejects_a_mixed_root(tmp_path: Path) -> None:
    """An image whose 36 section bytes are half old, half new is neither state."""
    original = VMLINUX.read_bytes()
    image = tmp_path / "vmlinux"
    shutil.copy(VMLINUX, image)
    image.chmod(IMAGE_MODE)
    timed_run("patch", "--root", ROOT_HEX, "--levels", ROOT_LEVELS, image)
    patched = image.read_bytes()
    diff = [i for i, (a, b) in enumerate(zip(original, patched, strict=True)) if a != b]
    assert diff and diff[-1] - diff[0] < 36
    mixed = bytearray(original)
    middle = (diff[0] + diff[-1]) // 2
    mixed[diff[0] : middle] = patched[diff[0] : middle]
    restore(image, bytes(mixed), IMAGE_MODE)
    with pytest.raises(AssertionError, match="matching none"):
        file_state(image, "", IMAGE_MODE, {"original": original, "patched": patched})


def test_tree_checker_rejects_partial_proofs(tmp_path: Path) -> None:
    """A truncated .merkle, a touched module and a stray file all fail the tree check."""
    build = copy_kbuild(tmp_path / "build")
    before = listing(build)
    modules = {m: identity(m) for m in build.rglob("*.ko")}
    timed_run("tree", build)
    proofs = {p: p.read_bytes() for p in build.rglob("*.merkle")}
    assert len(proofs) == len(modules) == 5
    assert tree_state(build, before, proofs, modules) == ("all proofs", [])
    victim = next(iter(sorted(proofs)))
    victim.write_bytes(proofs[victim][:-10])
    with pytest.raises(AssertionError, match="not the final proof"):
        tree_state(build, before, proofs, modules)
    victim.unlink()
    assert tree_state(build, before, proofs, modules) == ("some proofs", [])
    temp = victim.parent / f".{victim.name}.abc{TEMP_MARK}"
    temp.write_bytes(b"half")
    assert tree_state(build, before, proofs, modules)[1] == [str(temp.relative_to(build))]
    (victim.parent / "stray.merkle").write_bytes(b"")
    with pytest.raises(AssertionError, match="unexpected new file"):
        tree_state(build, before, proofs, modules)
    (victim.parent / "stray.merkle").unlink()
    module = next(iter(sorted(modules)))
    module.write_bytes(module.read_bytes())
    with pytest.raises(AssertionError, match="was changed"):
        tree_state(build, before, proofs, modules)


# ---------------------------------------------------------------------------
# A signal between a system call and its bookkeeping
#
# SIGINT and SIGTERM raise in the main thread at the next bytecode
# (vmpatch.errors), which may be the one right after os.open created a temp
# file and before its path was recorded for removal: test_stops_cleanly_on_signal
# caught `tree` leaving one such .merkle temp. These tests put the signal's
# exception exactly there (real files; only the moment is chosen), and among
# the renames of a batch.


def interrupt_after(monkeypatch: pytest.MonkeyPatch, name: str, calls: int) -> None:
    """Make the ``calls``-th ``os.NAME`` on a temp file succeed, then raise KeyboardInterrupt."""
    real = getattr(os, name)
    seen = 0

    def call(path: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        result = real(path, *args, **kwargs)
        if TEMP_MARK in str(path):
            seen += 1
            if seen == calls:
                raise KeyboardInterrupt
        return result

    monkeypatch.setattr(os, name, call)


@pytest.mark.parametrize(("name", "calls"), [("open", 3), ("replace", 2)])
def test_batch_interrupted_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, calls: int
) -> None:
    """durable_batch interrupted right after creating a temp file or among the renames:
    each target old or new, no temp file left."""
    from vmpatch.fs.batch import durable_batch

    targets = [tmp_path / f"f{i}.merkle" for i in range(5)]
    for t in targets:
        t.write_bytes(b"old")  # another size than the new bytes: replaced, not overwritten
    interrupt_after(monkeypatch, name, calls)
    with pytest.raises(KeyboardInterrupt):
        durable_batch([(t, b"newer") for t in targets])
    monkeypatch.undo()
    renamed = calls if name == "replace" else 0
    assert [t.read_bytes() for t in targets] == [b"newer"] * renamed + [b"old"] * (5 - renamed)
    assert not list(tmp_path.glob(f"*{TEMP_MARK}")), "a temp file was left"


def test_batch_interrupted_among_in_place_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same-size targets are rewritten in place: a SIGINT after the second write leaves
    two new, the rest old, and no temp file (there was none)."""
    from vmpatch.fs.batch import durable_batch

    targets = [tmp_path / f"f{i}.merkle" for i in range(5)]
    inodes = []
    for t in targets:
        t.write_bytes(b"old")
        inodes.append(t.stat().st_ino)
    real = os.pwrite
    seen = 0

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        nonlocal seen
        result = real(fd, data, offset)
        seen += 1
        if seen == 2:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(KeyboardInterrupt):
        durable_batch([(t, b"new") for t in targets])
    monkeypatch.undo()
    assert [t.read_bytes() for t in targets] == [b"new"] * 2 + [b"old"] * 3
    assert [t.stat().st_ino for t in targets] == inodes
    assert not list(tmp_path.glob(f"*{TEMP_MARK}"))


def test_atomic_write_interrupted_after_open_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """atomic_write interrupted right after its temp file was created: nothing left."""
    from vmpatch.fs.atomic import atomic_write

    target = tmp_path / "f.ko"
    target.write_bytes(b"old")
    interrupt_after(monkeypatch, "open", 1)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(f"*{TEMP_MARK}")), "a temp file was left"


# ---------------------------------------------------------------------------
# 1 and 4: ko append, ko strip-proof


@pytest.mark.parametrize(
    ("codec", "size"),
    [("", 20 << 20), (".xz", 256 << 10), (".zst", 16 << 20)],
    ids=["ko", "ko.xz", "ko.zst"],
)
def test_append_survives_sigkill(tmp_path: Path, codec: str, size: int) -> None:
    """`ko append` killed anywhere: the module is the original or the appended result.

    For compressed modules the decompressed content is judged, and an appended
    file must also be the reference run's exact bytes. Only temp files may
    appear beside the module; afterwards a complete run over the leftovers works.
    """
    raw, proof_data = seeded_bytes(size, 20 + len(codec)), seeded_proof(2)
    proof = tmp_path / "big.merkle"
    proof.write_bytes(proof_data)
    (tmp_path / "ref").mkdir()
    reference = make_module(tmp_path / "ref", codec, raw)
    work = tmp_path / "work"
    work.mkdir()
    module = work / reference.name
    original = reference.read_bytes()
    duration = timed_run("ko", "append", reference, proof)
    final = reference.read_bytes()
    states = {"original": raw, "appended": raw + proof_data}
    assert file_state(reference, codec, MODULE_MODE, states) == "appended"

    before: set[str] = set()

    def reset() -> None:
        nonlocal before
        restore(module, original, MODULE_MODE)
        before = listing(work)

    def check() -> tuple[str, list[str]]:
        state = file_state(module, codec, MODULE_MODE, states)
        if state == "appended":
            assert module.read_bytes() == final, "appended, but not the reference's bytes"
        return state, temp_files(work, before, [module])

    result = sweep(["ko", "append", module, proof], duration, reset=reset, check=check, watch=work)
    print(f"\nko append {module.name}: {result.summary()}")
    assert result.states["original"] >= 1  # the immediate kill
    assert result.complete == "appended"
    assert_rerun_not_confused(work, module, ["ko", "append", module, proof], original, final)


def test_strip_proof_survives_sigkill(tmp_path: Path) -> None:
    """`ko strip-proof` in place killed anywhere: the module has its trailer or is stripped."""
    raw, proof_data = seeded_bytes(20 << 20, 4), seeded_proof(4)
    (tmp_path / "ref").mkdir()
    reference = make_module(tmp_path / "ref", "", raw + proof_data)
    duration = timed_run("ko", "strip-proof", reference)
    assert reference.read_bytes() == raw
    work = tmp_path / "work"
    work.mkdir()
    module = make_module(work, "", raw + proof_data)
    states = {"with trailer": raw + proof_data, "stripped": raw}
    before: set[str] = set()

    def reset() -> None:
        nonlocal before
        restore(module, raw + proof_data, MODULE_MODE)
        before = listing(work)

    def check() -> tuple[str, list[str]]:
        state = file_state(module, "", MODULE_MODE, states)
        return state, temp_files(work, before, [module])

    result = sweep(["ko", "strip-proof", module], duration, reset=reset, check=check, watch=work)
    print(f"\nko strip-proof: {result.summary()}")
    assert result.states["with trailer"] >= 1
    assert result.complete == "stripped"
    assert_rerun_not_confused(work, module, ["ko", "strip-proof", module], raw + proof_data, raw)


def assert_rerun_not_confused(
    directory: Path, target: Path, args: list[str | Path], original: bytes, final: bytes
) -> None:
    """With every temp file of the sweep still there, a complete run gives the final file.

    A half-written temp file is planted too, so the leftovers are never just luck's.
    It is then run again on its own result (a no-op) and neither run leaves a file behind.
    """
    leftovers = temp_files(directory, {str(target.relative_to(directory))}, [target])
    print(f"  {len(leftovers)} temp files left by the kills: {leftovers[:3]}...")
    planted = directory / f".{target.name}.planted{TEMP_MARK}"
    planted.write_bytes(final[: len(final) // 2])
    restore(target, original, MODULE_MODE)
    before = listing(directory)
    timed_run(*args)
    assert target.read_bytes() == final
    assert stat.S_IMODE(target.stat().st_mode) == MODULE_MODE
    timed_run(*args)
    assert target.read_bytes() == final
    assert listing(directory) == before, "a complete run left files behind"
    assert planted.read_bytes() == final[: len(final) // 2], "a run touched a foreign temp file"


# ---------------------------------------------------------------------------
# 2: patch --output and patch in place


def image_copy(directory: Path, padding: int) -> Path:
    """The test vmlinux, optionally followed by ``padding`` zero bytes (ELF readers
    ignore trailing bytes; the copy with --output then takes long enough to be hit)."""
    require(VMLINUX.is_file(), f"{VMLINUX} is missing (run scripts/make-testdata)")
    directory.mkdir()
    image = directory / "vmlinux"
    image.write_bytes(VMLINUX.read_bytes() + bytes(padding))
    image.chmod(IMAGE_MODE)
    return image


@pytest.mark.parametrize("padding", [0, 32 << 20], ids=["testdata", "padded-32MiB"])
def test_patch_output_survives_sigkill(tmp_path: Path, padding: int) -> None:
    """`patch --output NEW IMAGE` killed anywhere: NEW is absent or the complete copy.

    IMAGE itself never changes; beside NEW only its temp files may appear.
    """
    image = image_copy(tmp_path / "in", padding)
    original = image.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    new = out / "vmlinux.patched"
    root = ["--root", ROOT_HEX, "--levels", ROOT_LEVELS]
    reference_path = tmp_path / "reference"
    duration = timed_run("patch", *root, "--output", reference_path, image)
    reference = reference_path.read_bytes()
    assert reference != original and len(reference) == len(original)
    reference_path.unlink()
    before: set[str] = set()

    def reset() -> None:
        nonlocal before
        new.unlink(missing_ok=True)
        before = listing(out)

    def check() -> tuple[str, list[str]]:
        assert image.read_bytes() == original, "the input image changed"
        state = output_state(new, reference, IMAGE_MODE)
        return state, temp_files(out, before | {new.name}, [new])

    result = sweep(
        ["patch", *root, "--output", new, image], duration, reset=reset, check=check, watch=out
    )
    print(f"\npatch --output ({padding} bytes padding): {result.summary()}")
    assert result.states["absent"] >= 1
    assert result.complete == "complete"
    new.unlink(missing_ok=True)
    timed_run("patch", *root, "--output", new, image)
    assert new.read_bytes() == reference


def test_patch_in_place_survives_sigkill(tmp_path: Path) -> None:
    """`patch IMAGE` killed anywhere: IMAGE is the original or the patched bytes, never a mix."""
    image = image_copy(tmp_path / "in", 0)
    original = image.read_bytes()
    root = ["--root", ROOT_HEX, "--levels", ROOT_LEVELS]
    duration = timed_run("patch", *root, image)
    states = {"original": original, "patched": image.read_bytes()}
    directory = image.parent

    def reset() -> None:
        restore(image, original, IMAGE_MODE)

    def check() -> tuple[str, list[str]]:
        state = file_state(image, "", IMAGE_MODE, states)
        return state, temp_files(directory, {image.name}, [image])

    result = sweep(
        ["patch", *root, image],
        duration,
        reset=reset,
        check=check,
        # In place is one pwrite of the 36-byte section (workflow/patch.py), no
        # temp file: there is no multi-step write window to aim kills at.
        window_share=0,
    )
    print(f"\npatch in place: {result.summary()}")
    assert result.states["original"] >= 1
    assert result.complete == "patched"
    restore(image, original, IMAGE_MODE)
    timed_run("patch", *root, image)
    assert image.read_bytes() == states["patched"]


# ---------------------------------------------------------------------------
# 3: vmpatch tree


def copy_kbuild(build: Path) -> Path:
    """A writable copy of the miniature kbuild tree (5 modules: the threaded path)."""
    require(KBUILD.is_dir(), f"{KBUILD} is missing (run scripts/make-testdata)")
    shutil.copytree(KBUILD, build)
    return build


def generated_tree(build: Path, *, count: int = 300, size: int = 64 << 10) -> Path:
    """``count`` modules of seeded random bytes under 10 directories.

    300 is above merkle's _PROCESS_THRESHOLD (256), so hashing forks workers.
    """
    rng = random.Random(3)
    lines = []
    for i in range(count):
        sub = build / "drivers" / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"m{i:03d}.ko").write_bytes(rng.randbytes(size))
        lines.append(f"drivers/d{i % 10}/m{i:03d}.o")
    (build / "modules.order").write_text("\n".join(lines) + "\n")
    return build


def digests(paths: Iterable[Path]) -> dict[Path, bytes]:
    return {p: hashlib.sha256(p.read_bytes()).digest() for p in paths}


def workers_gone(marker: str, outlived: list[float]) -> None:
    """Fail unless every process whose command line names ``marker`` ends within the grace.

    Forked workers inherit the parent's command line (``python -m vmpatch tree DIR``);
    how long any outlived the killed parent is appended to ``outlived``.
    """
    first, alive, waited = wait_gone(marker, ORPHAN_GRACE)
    assert not alive, f"workers {alive} still alive {waited:.1f}s after the parent was killed"
    if first:
        outlived.append(waited)


def test_tree_survives_sigkill(tmp_path: Path) -> None:
    """`vmpatch tree` of the kbuild tree (5 modules, threads) killed anywhere: each
    .merkle is absent or final, no module changes.

    No process of the killed run may live on for more than a few seconds; a
    complete run afterwards, among the temp files left, writes every proof.
    The proofs are written as one batch (vmpatch.fs.atomic.durable_batch:
    every temporary written and flushed, then all renamed). 300 modules
    (forked hashing workers, more than one batch of open temporaries) are
    test_tree_survives_50_kills.
    """
    build = copy_kbuild(tmp_path / "build")
    reference = copy_kbuild(tmp_path / "reference")
    args: list[str | Path] = ["tree", "--workers", "2"]
    duration = timed_run(*args, reference)
    proofs = {build / p.relative_to(reference): p.read_bytes() for p in reference.rglob("*.merkle")}
    module_files = sorted(build.rglob("*.ko"))
    order = (build / "modules.order").read_text().splitlines()
    assert len(proofs) == len(module_files) == len(order)
    shutil.rmtree(reference)
    contents = digests(module_files)
    modules = {m: identity(m) for m in module_files}
    before: set[str] = set()
    outlived: list[float] = []

    def reset() -> None:
        nonlocal before
        for p in proofs:
            p.unlink(missing_ok=True)
        before = listing(build)

    def check() -> tuple[str, list[str]]:
        workers_gone(str(build), outlived)
        return tree_state(build, before, proofs, modules)

    result = sweep([*args, build], duration, reset=reset, check=check, watch=build)
    print(
        f"\ntree kbuild-x86_64: {result.summary()}; a process outlived the parent "
        f"{len(outlived)}x, at most {max(outlived, default=0):.3f}s"
    )
    assert result.states["no proofs"] >= 1
    assert result.complete == "all proofs"
    reset()
    timed_run(*args, build)
    assert tree_state(build, before, proofs, modules) == ("all proofs", [])
    assert digests(module_files) == contents


def test_tree_hashing_workers_die_with_parent(tmp_path: Path) -> None:
    """`vmpatch tree --no-proofs` killed while its forked workers hash: they end soon.

    Without proof writing a run is mostly start-up and hashing, so this sweep
    lands in the forked-workers window far more often than the one above. A
    killed run changes nothing at all.
    """
    build = generated_tree(tmp_path / "build", size=320 << 10)
    args: list[str | Path] = ["tree", "--workers", "2", "--no-proofs", build]
    duration = timed_run(*args)
    before = listing(build)
    modules = {m: identity(m) for m in build.rglob("*.ko")}
    outlived: list[float] = []

    def check() -> tuple[str, list[str]]:
        workers_gone(str(build), outlived)
        state, temps = tree_state(build, before, {}, modules)
        assert listing(build) == before, "a --no-proofs run left files"
        return state, temps

    # --no-proofs writes nothing: no write window, the workers are what is tested.
    result = sweep(args, duration, reset=lambda: None, check=check, window_share=0)
    print(
        f"\ntree --no-proofs: {result.summary()}; workers outlived the parent "
        f"{len(outlived)}x, at most {max(outlived, default=0):.3f}s"
    )
    assert result.complete == "no proofs"


# ---------------------------------------------------------------------------
# Beyond the four cases: `ko strip --tree` (INSTALL_MOD_STRIP)


def kbuild_copies(build: Path, count: int) -> Path:
    """``count`` copies of the kbuild test modules (real x86_64 ELF objects strip can read)."""
    require(KBUILD.is_dir(), f"{KBUILD} is missing (run scripts/make-testdata)")
    sources = sorted(KBUILD.rglob("*.ko"))
    lines = []
    for i in range(count):
        sub = build / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(sources[i % len(sources)], sub / f"m{i:03d}.ko")
        lines.append(f"d{i % 10}/m{i:03d}.o")
    (build / "modules.order").write_text("\n".join(lines) + "\n")
    return build


def test_strip_tree_survives_sigkill(tmp_path: Path) -> None:
    """`ko strip --install-mod-strip 1 --tree` killed anywhere: each %.ko.stripped is
    absent or complete, no module changes, and only TEMP_MARK temp files are left."""
    require_tool("x86_64-linux-gnu-strip", "binutils-x86-64-linux-gnu")
    build = kbuild_copies(tmp_path / "build", 150)
    args: list[str | Path] = ["ko", "strip", "--install-mod-strip", "1"]
    args += ["--cross-compile", "x86_64-linux-gnu-", "--tree", build]
    modules = {m: identity(m) for m in build.rglob("*.ko")}
    before = listing(build)
    duration = timed_run(*args)
    outputs = {p: p.read_bytes() for p in build.rglob("*.ko.stripped")}
    assert len(outputs) == len(modules)
    record = build / "vmpatch-strip.json"
    outputs[record] = record.read_bytes()

    def reset() -> None:
        nonlocal before
        for p in outputs:
            p.unlink(missing_ok=True)
        before = listing(build)

    def check() -> tuple[str, list[str]]:
        workers_gone(str(build), [])
        state, temps = tree_state(build, before, outputs, modules)
        return state.replace("proofs", "outputs"), temps

    result = sweep(args, duration, reset=reset, check=check, watch=build)
    print(f"\nko strip --tree: {result.summary()}")


# ---------------------------------------------------------------------------
# Whole-run sweeps over trees of a few hundred modules (issue 13.2)
#
# Each of `ko append-tree`, `tree`, `patch --from-tree` and `ko strip-proof`
# over 300 modules (the installed copies gzip and plain, cheap, with some xz
# and zstd) is killed at 26 evenly spaced moments and 25 aimed at the write
# window (killer.sweep's ``triggered``), and again while fewer than 50 kills
# landed. At least 40% of the kills must land between the first write and the
# last rename; where each landed is printed and kept in the assertion message.
# After every kill each file is exactly its old or its new content (a
# multi-file command may leave a mix, never a partial file) and only temp files
# are new, and no process of the killed run (a forked hashing worker) outlives
# it for long. On a spread sample of kills (VERIFY_EVERY below) `vmpatch verify
# --json` must tell, module by module, the state the bytes show; after every
# RERUN_EVERY-th kill a re-run among what the kill left must end byte for byte
# as a run never interrupted.

SWEEP_EVEN = 25  # + the immediate kill: 26 evenly spaced moments
SWEEP_AIMED = 25  # kills that wait for the first temp file, spread over the window
SWEEP_KILLS = 50  # kills that landed (the run still going), at least
SWEEP_SHARE = 0.4
SWEEP_MODULES = 300
SUFFIXES = (".ko.gz", ".ko", ".ko.gz", ".ko", ".ko.gz", ".ko", ".ko.xz", ".ko.zst")

#: `vmpatch verify` after every VERIFY_EVERY-th kill, every third kill that left
#: a mix of old and new files, and the first kill leaving each state: a verify
#: of 300 modules costs about as much as a kill, too much after every one.
VERIFY_EVERY = 4
#: A re-run from the killed state after every RERUN_EVERY-th kill (a whole run each).
RERUN_EVERY = 10


def installed_copy(build: Path, dest: Path) -> list[Path]:
    """DEST/kernel/<stem>.ko[.gz|.xz|.zst] for every module of ``build``, as modules_install."""
    from vmpatch.ko.compression import Codec, compress

    codecs = {".ko": Codec.NONE, ".ko.gz": Codec.GZIP, ".ko.xz": Codec.XZ, ".ko.zst": Codec.ZSTD}
    made = []
    lines = (build / "modules.order").read_text().splitlines()
    for i, line in enumerate(lines):
        stem = line[: -len(".o")]
        suffix = SUFFIXES[i % len(SUFFIXES)]
        target = dest / "kernel" / (stem + suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(compress((build / (stem + ".ko")).read_bytes(), codecs[suffix]))
        made.append(target)
    return made


def snapshot_files(top: Path) -> dict[Path, bytes]:
    """Every file under ``top`` and its bytes, temp files left out (checked by name)."""
    found = sorted(top.rglob("*"))
    return {p: p.read_bytes() for p in found if p.is_file() and TEMP_MARK not in p.name}


#: Files and their bytes (a snapshot_files result).
Files = Mapping[Path, bytes]

#: Judges a killed state with `vmpatch verify`: given the files now, before and
#: after a complete run, it raises AssertionError or describes what verify said.
Judge = Callable[[Files, Files, Files], str]


def old_or_new_sweep(
    args: list[str | Path],
    work: Path,
    initial: Mapping[Path, bytes],
    *,
    label: str,
    judge: Judge,
) -> Sweep:
    """Sweep ``args`` over ``work``: every file stays its initial or its final bytes.

    ``initial`` is every file of ``work`` before a run; a reference run gives
    the final bytes. New files may be the run's outputs (then final) or temp
    files; files of ``initial`` may be neither missing nor partial. ``judge``
    runs on the sampled kills (module comment above), then a re-run on every
    RERUN_EVERY-th.
    """

    def reset() -> None:
        for p in sorted(work.rglob("*"), reverse=True):
            if p.is_file() and p not in initial:
                p.unlink()
        for p, data in initial.items():
            if p.read_bytes() != data:
                p.write_bytes(data)

    reset()
    duration = timed_run(*args)
    final = snapshot_files(work)
    # verify tells the two ends too: the complete run, and the untouched start
    ends = [judge(final, initial, final)]
    reset()
    ends.append(judge(initial, initial, final))
    before = listing(work)
    outputs = [p for p in final if p not in initial]
    changed = sum(1 for p in final if final[p] != initial.get(p))
    outlived: list[float] = []
    assert changed >= SWEEP_MODULES, f"a complete {label} changed only {changed} files"

    def check() -> tuple[str, list[str]]:
        workers_gone(str(work), outlived)
        now = snapshot_files(work)
        new_count = 0
        for p, data in initial.items():
            assert p in now, f"{p} vanished"
            if now[p] != data:
                assert now[p] == final[p], f"{p} is neither its old nor its new content"
                new_count += 1
        for p in outputs:
            if p in now:
                assert now[p] == final[p], f"{p} is a partial output"
                new_count += 1
        stray = [p for p in now if p not in initial and p not in final]
        assert not stray, f"unexpected new files {stray[:3]}"
        temps = temp_files(work, before | {str(p.relative_to(work)) for p in outputs}, final)
        if new_count == 0:
            return "old", temps
        return ("new" if new_count == changed else "old and new files"), temps

    verified: list[str] = []  # after kills (the two ends are in ``ends``)
    reruns = 0

    def after(index: int, kill: Kill) -> None:
        nonlocal reruns
        mixed = kill.state == "old and new files"
        if kill.state not in seen_states or index % VERIFY_EVERY == 0 or (mixed and index % 3 == 0):
            verified.append(judge(snapshot_files(work), initial, final))
            seen_states.add(kill.state)
        if index % RERUN_EVERY == 0:
            timed_run(*args)  # among whatever the kill left behind
            now = snapshot_files(work)
            differ = sorted(p for p in set(now) | set(final) if now.get(p) != final.get(p))
            assert not differ, f"a re-run after the kill left {len(differ)} files: {differ[:3]}"
            reruns += 1

    seen_states: set[str] = set()
    result = sweep(
        args,
        duration,
        reset=reset,
        check=check,
        count=SWEEP_EVEN,
        watch=work,
        window_share=SWEEP_SHARE,
        triggered=SWEEP_AIMED,
        min_killed=SWEEP_KILLS,
        after=after,
    )
    landed = result.landed
    report = (
        f"{label}: {len(result.kills)} kills; {result.summary()}; where each landed "
        f"(b before, i inside, a after, - finished first; aimed in capitals): "
        f"{result.landings()}; verify agreed with the bytes at the ends ({' / '.join(ends)}) "
        f"and after {len(verified)} kills "
        f"({len(set(verified))} distinct states, e.g. {', '.join(sorted(set(verified))[:4])}); "
        f"{reruns} re-runs from a killed state completed; a process outlived the killed "
        f"run {len(outlived)}x, at most {max(outlived, default=0):.3f}s"
    )
    print(f"\n{report}")
    assert result.killed >= SWEEP_KILLS, report
    assert landed[INSIDE] >= SWEEP_SHARE * result.killed, report
    assert result.complete == "new", report
    assert len(verified) >= SWEEP_KILLS // VERIFY_EVERY and reruns >= SWEEP_KILLS // RERUN_EVERY, (
        report
    )
    return result


def verify_json(kernel: Path, modules: Sequence[Path]) -> tuple[int, dict[str, Any]]:
    """`vmpatch verify --kernel KERNEL --json MODULES`: exit code and report."""
    proc = vmpatch("verify", "--kernel", kernel, "--json", *modules, timeout=None)
    assert proc.returncode in (0, 1), f"verify exited {proc.returncode}: {proc.stderr}"
    return proc.returncode, proc.json()


def verdict_of(entry: Mapping[str, Any]) -> tuple[str, int | None, str | None]:
    """A verify entry as (verdict, proof position when accepted, cause when rejected)."""
    assert "error" not in entry, entry
    if entry["verdict"] == "ACCEPT":
        return "ACCEPT", entry["trailer"]["position"], None
    return entry["verdict"], None, (entry["explanation"] or {}).get("cause")


def expected_verdict(index: int, proof: bool, patched: bool) -> tuple[str, int | None, str | None]:
    """What the kernel does with the module at ``index``, from what the bytes showed:
    it loads with its proof under the tree's root, else no proof, else a blank root."""
    if proof and patched:
        return "ACCEPT", index, None
    return "REJECT", None, "kernel-not-patched" if proof else "no-proof"


def judge_verdicts(
    kernel: Path, modules: Sequence[Path], proofs: Sequence[bool], *, patched: bool = True
) -> str:
    """Verify ``modules`` (in modules.order order) against ``kernel``: module ``i`` must be
    accepted at position ``i`` exactly when ``proofs[i]`` and the kernel is ``patched``."""
    code, report = verify_json(kernel, modules)
    assert report["placeholder"] is not patched, f"verify says placeholder={report['placeholder']}"
    entries = {entry["path"]: entry for entry in report["modules"]}
    wrong = []
    for index, (module, proof) in enumerate(zip(modules, proofs, strict=True)):
        got = verdict_of(entries[str(module)])
        want = expected_verdict(index, proof, patched)
        if got != want:
            wrong.append(f"{module.name}: verify {got}, the bytes say {want}")
    assert not wrong, f"{len(wrong)} verdicts disagree with the bytes: {wrong[:3]}"
    accepted = sum(proofs) if patched else 0
    assert code == (0 if accepted == len(modules) else 1), f"verify exited {code}"
    return f"{accepted}/{len(modules)} accepted"


def installed_view(view: Path, modules: Sequence[Path], now: Mapping[Path, bytes]) -> list[Path]:
    """What `make modules_install` would install from the build tree as it is now:
    each module with its ``.merkle`` appended when there is one, in ``view``."""
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir()
    made = []
    for index, module in enumerate(modules):
        target = view / f"m{index:03d}.ko"
        target.write_bytes(now[module] + now.get(module.with_suffix(".merkle"), b""))
        made.append(target)
    return made


def sweep_tree(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    build = kbuild_copies(tmp_path / "work" / "build", SWEEP_MODULES)
    shutil.copy(KBUILD / "vmlinux", build / "vmlinux")
    dest = tmp_path / "work" / "dest"
    return build, dest, installed_copy(build, dest)


def build_modules(build: Path) -> list[Path]:
    """The build tree's modules in modules.order order."""
    order = (build / "modules.order").read_text().splitlines()
    return [build / (line[: -len(".o")] + ".ko") for line in order]


@dataclass(frozen=True)
class SweptCommand:
    """One command of the whole-tree sweeps, ready to run over ``work``."""

    label: str
    args: list[str | Path]
    work: Path
    judge: Judge


def swept_command(tmp_path: Path, command: str) -> SweptCommand:
    """``command`` over a fresh 300-module tree, with what it needs done before it.

    * `ko append-tree`: the build tree was patched (`patch --from-tree`), so
      verify against its vmlinux accepts exactly the installed modules whose
      bytes are the appended ones;
    * `ko strip-proof` of those modules once appended: verify accepts exactly
      the ones whose bytes still carry their proof;
    * `tree` (``--workers 2``: 300 modules are above merkle's
      _PROCESS_THRESHOLD, hashing forks workers): verify judges what `make
      modules_install` would install from the tree as the kill left it (module
      + .merkle where there is one) against a vmlinux patched with the tree's
      root beforehand, outside the swept directory: exactly the modules whose
      proof was written are accepted;
    * `patch --from-tree` with the vmlinux patched in place: the same install
      judged against that vmlinux as the kill left it: with the old (blank)
      root every proof is refused, with the new one every module loads. The
      root is written only after every proof (README): a new root with a proof
      missing fails.
    """
    build, dest, installed = sweep_tree(tmp_path)
    work = tmp_path / "work"
    vmlinux = build / "vmlinux"
    modules = build_modules(build)
    if command in ("ko append-tree", "ko strip-proof"):
        assert timed_run("patch", "--from-tree", build, vmlinux) > 0
    if command == "ko append-tree":

        def appended(now: Files, old: Files, new: Files) -> str:
            return judge_verdicts(vmlinux, installed, [now[m] == new[m] for m in installed])

        return SweptCommand(command, ["ko", "append-tree", build, "--dest", dest], work, appended)
    if command == "ko strip-proof":
        assert timed_run("ko", "append-tree", build, "--dest", dest) > 0

        def stripped(now: Files, old: Files, new: Files) -> str:
            return judge_verdicts(vmlinux, installed, [now[m] == old[m] for m in installed])

        return SweptCommand(command, ["ko", "strip-proof", *installed], work, stripped)
    view = tmp_path / "view"
    if command == "tree":
        kernel = tmp_path / "kernel" / "vmlinux"
        kernel.parent.mkdir()
        assert timed_run("patch", "--from-tree", build, "--output", kernel, vmlinux) > 0
        for proof in build.rglob("*.merkle"):
            proof.unlink()

        def proved(now: Files, old: Files, new: Files) -> str:
            proofs = [m.with_suffix(".merkle") in now for m in modules]
            return judge_verdicts(kernel, installed_view(view, modules, now), proofs)

        return SweptCommand(command, ["tree", "--workers", "2", build], work, proved)
    assert command == "patch --from-tree", command

    def rooted(now: Files, old: Files, new: Files) -> str:
        patched = now[vmlinux] == new[vmlinux]
        proofs = [m.with_suffix(".merkle") in now for m in modules]
        assert not patched or all(proofs), "the root was written before every proof"
        verdicts = judge_verdicts(
            vmlinux, installed_view(view, modules, now), proofs, patched=patched
        )
        return ("new root, " if patched else "old root, ") + verdicts

    return SweptCommand(command, ["patch", "--from-tree", build, vmlinux], work, rooted)


def sweep_command(tmp_path: Path, command: str) -> None:
    swept = swept_command(tmp_path, command)
    initial = snapshot_files(swept.work)
    old_or_new_sweep(swept.args, swept.work, initial, label=swept.label, judge=swept.judge)


def test_append_tree_survives_50_kills(tmp_path: Path) -> None:
    """`ko append-tree --dest` over 300 installed modules (gzip, plain, xz, zstd)."""
    sweep_command(tmp_path, "ko append-tree")


def test_strip_proof_many_survives_50_kills(tmp_path: Path) -> None:
    """`ko strip-proof` of 300 installed modules carrying proofs."""
    sweep_command(tmp_path, "ko strip-proof")


def test_tree_survives_50_kills(tmp_path: Path) -> None:
    """`vmpatch tree --workers 2` over 300 modules: each .merkle absent or final."""
    sweep_command(tmp_path, "tree")


def test_patch_from_tree_survives_50_kills(tmp_path: Path) -> None:
    """`patch --from-tree` over 300 modules and a vmlinux patched in place."""
    sweep_command(tmp_path, "patch --from-tree")


SWEPT = ["ko append-tree", "tree", "patch --from-tree", "ko strip-proof"]
SIGNALS = [("SIGINT", 130), ("SIGTERM", 143)] * 2


@pytest.mark.parametrize(
    ("command", "signal_name", "code"),
    [(command, *signal) for command, signal in zip(SWEPT, SIGNALS, strict=True)],
)
def test_stops_cleanly_on_signal(tmp_path: Path, command: str, signal_name: str, code: int) -> None:
    """SIGINT/SIGTERM once writing began: exit 130/143, every file old or new, no temp
    left, verify tells the state, and a re-run completes the job.

    Each command gets one of the two signals and each signal two commands:
    both go through one handler (vmpatch.errors), and a case costs seconds.
    """
    import signal
    import time

    from clirun import spawn_vmpatch
    from killer import temps_under

    swept = swept_command(tmp_path, command)
    work, args = swept.work, swept.args
    initial = snapshot_files(work)
    timed_run(*args)
    final = snapshot_files(work)
    outputs = [p for p in final if p not in initial]
    for p in outputs:
        p.unlink()
    for p, data in initial.items():
        p.write_bytes(data)
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as stream:
        proc = spawn_vmpatch(*args, stderr=stream)
        while proc.poll() is None and not temps_under(work):
            pass
        # Some files written, not all: a batch synced by filesystem (vmpatch.fs.batch)
        # holds its temporaries for tens of milliseconds only.
        time.sleep(0.005)
        proc.send_signal(getattr(signal, signal_name))
        status = proc.wait()
    said = errors.read_text(errors="replace").strip()
    assert status == code, f"exit {status} after {signal_name}; stderr: {said!r}"
    assert not temps_under(work), "a temp file was left"
    now = snapshot_files(work)
    assert set(now) <= set(final), f"unexpected files {sorted(set(now) - set(final))[:3]}"
    assert all(now[p] in (initial.get(p), final[p]) for p in now), "a file is partial"
    changed = sum(now[p] != initial.get(p) for p in now)
    verdicts = swept.judge(now, initial, final)
    print(f"\n{command} {signal_name}: stopped after {changed} files were written; {verdicts}")
    timed_run(*args)
    assert snapshot_files(work) == final
