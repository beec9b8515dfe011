# SPDX-License-Identifier: GPL-2.0-or-later
"""The .ko toolkit on real modules: append, replace, strip, compressed, concurrent.

Modules are the relocatable objects of ``testdata/kbuild-x86_64``; compressed
copies are made and checked with the real ``gzip``/``xz``/``zstd`` programs so
that the kernel-visible bytes are judged by an independent decompressor.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import shutil
import stat
from pathlib import Path

import pytest
from clirun import tool
from conftest import TESTDATA, require, require_tool

from vmpatch.cli.jsonout import to_json
from vmpatch.errors import InputError, MismatchError
from vmpatch.ko.proof import append_proof, strip_proof
from vmpatch.ko.report import module_report
from vmpatch.merkle import MerkleTree
from vmpatch.records.trailer import MARKER, SIGNATURE_INFO, count_trailers, merkle_trailer
from vmpatch.workflow.append_tree import append_tree
from vmpatch.workflow.strip_tree import StripCheck, check_strip_consistency

KBUILD = TESTDATA / "kbuild-x86_64"

#: Compress like kbuild's modules_install, decompress to stdout.
CODECS = {
    ".gz": (["gzip", "-n", "-c"], ["gzip", "-d", "-c"], "gzip"),
    ".xz": (["xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"], ["xz", "-d", "-c"], "xz-utils"),
    ".zst": (["zstd", "-q", "-c"], ["zstd", "-q", "-d", "-c"], "zstd"),
}


# ---------------------------------------------------------------------------
# Helpers shared with test_hook.py and test_cli_ko.py


def make_tree(tmp_path: Path) -> tuple[Path, MerkleTree]:
    """A writable copy of the kbuild test tree with its .merkle files written."""
    from vmpatch.workflow.tree import build_tree, plan_tree, write_proofs

    require(KBUILD.is_dir(), f"{KBUILD} is missing (run scripts/make-testdata)")
    tree = tmp_path / "build"
    shutil.copytree(KBUILD, tree)
    plan = plan_tree(tree)
    merkle = build_tree(plan)
    write_proofs(plan, merkle)
    return tree, merkle


def patched_vmlinux(tmp_path: Path, tree: MerkleTree) -> Path:
    """A copy of the test vmlinux carrying ``tree``'s root."""
    from vmpatch.workflow.patch import RootSource, patch_images

    image = tmp_path / "vmlinux"
    shutil.copyfile(KBUILD / "vmlinux", image)
    patch_images([image], RootSource(root=tree.root))
    return image


def modules(tree: Path) -> list[tuple[Path, Path]]:
    """(module, proof) pairs in modules.order order."""
    from vmpatch.workflow.tree import plan_tree

    return [(m.module, m.proof) for m in plan_tree(tree, suffix=".ko").modules]


def pkcs7_like(sig: bytes = b"\x30\x03\x02\x01\x00") -> bytes:
    """A type-2 trailer (content not a real signature; only the framing matters)."""
    return sig + SIGNATURE_INFO.pack(0, 0, 2, 0, 0, len(sig)) + MARKER


def cli_compress(path: Path, suffix: str) -> Path:
    """Compress ``path`` into ``path + suffix`` with the real tool; remove ``path``."""
    comp, _dec, package = CODECS[suffix]
    require_tool(comp[0], package)
    out = path.with_name(path.name + suffix)
    out.write_bytes(tool(*comp, path).stdout)
    path.unlink()
    return out


def cli_decompress(path: Path) -> bytes:
    _comp, dec, _package = CODECS[path.suffix]
    return bytes(tool(*dec, path).stdout)


# ---------------------------------------------------------------------------
# Appending


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, MerkleTree]:
    return make_tree(tmp_path)


def test_append_twice_refused_and_identical_is_unchanged(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    (module, proof), (_other, other_proof) = modules(tree)[:2]
    original = module.read_bytes()
    result = append_proof(module, proof)
    assert result.action == "appended" and result.position == 0
    appended = module.read_bytes()
    assert appended == original + proof.read_bytes()
    inode = module.stat().st_ino

    again = append_proof(module, proof)
    assert again.action == "unchanged" and not again.changed
    assert module.stat().st_ino == inode  # not even rewritten

    with pytest.raises(InputError, match="already carries a merkle trailer; use --replace"):
        append_proof(module, other_proof)
    assert module.read_bytes() == appended


def test_replace_leaves_exactly_one_trailer(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    (module, proof), (_other, other_proof) = modules(tree)[:2]
    original = module.read_bytes()
    append_proof(module, other_proof)
    result = append_proof(module, proof, replace=True)
    assert result.action == "replaced" and result.replaced_kind == "merkle"
    data = module.read_bytes()
    assert data == original + proof.read_bytes()
    assert MARKER not in original and data.count(MARKER) == 1  # exactly one trailer


def test_replace_pkcs7_and_refuse_it_without_replace(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    module, proof = modules(tree)[0]
    original = module.read_bytes()
    module.write_bytes(original + pkcs7_like())
    with pytest.raises(InputError, match="already carries a pkcs7 trailer"):
        append_proof(module, proof)
    assert append_proof(module, proof, replace=True).replaced_kind == "pkcs7"
    assert module.read_bytes() == original + proof.read_bytes()


def test_malformed_existing_trailer_refused(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    module, proof = modules(tree)[0]
    bad = module.read_bytes() + SIGNATURE_INFO.pack(0, 0, 3, 0, 0, 1 << 30) + MARKER
    module.write_bytes(bad)
    with pytest.raises(InputError, match="malformed merkle trailer; use --replace"):
        append_proof(module, proof)
    with pytest.raises(InputError, match="cannot remove"):
        append_proof(module, proof, replace=True)
    assert module.read_bytes() == bad


def _bad_proofs(good: bytes) -> dict[str, bytes]:
    info_at = len(good) - len(MARKER) - SIGNATURE_INFO.size
    fields = list(SIGNATURE_INFO.unpack_from(good, info_at))

    def with_info(**changes: int) -> bytes:
        names = ["algo", "hash", "id_type", "signer_len", "key_id_len", "sig_len"]
        values = [changes.get(n, v) for n, v in zip(names, fields, strict=True)]
        return good[:info_at] + SIGNATURE_INFO.pack(*values) + MARKER

    padded = bytearray(good)
    padded[info_at + 6] = 1
    return {
        "pkcs7 type": with_info(id_type=2),
        "unknown type": with_info(id_type=7),
        "algo set": with_info(algo=1),
        "key_id_len set": with_info(key_id_len=4),
        "pad set": bytes(padded),
        "sig_len too big": with_info(sig_len=fields[5] + 32),
        "sig_len too small": with_info(sig_len=fields[5] - 32),
        "truncated": good[:-1],
        "truncated proof": good[:4] + good[36:],
        "no marker": good[: -len(MARKER)],
        "empty": b"",
        "not 4+32n": good[:4]
        + b"x"
        + good[4:info_at]
        + SIGNATURE_INFO.pack(*fields[:5], fields[5] + 1)
        + MARKER,
    }


@pytest.mark.parametrize("case", list(_bad_proofs(merkle_trailer(0, [bytes(32)] * 3))))
def test_malformed_proof_refused(built: tuple[Path, MerkleTree], case: str) -> None:
    tree, _ = built
    module, proof = modules(tree)[0]
    original = module.read_bytes()
    bad = tree / "bad.merkle"
    bad.write_bytes(_bad_proofs(proof.read_bytes())[case])
    with pytest.raises(InputError) as info:
        append_proof(module, bad)
    assert info.value.path == str(bad)
    assert module.read_bytes() == original


def test_kernel_check_accepts_and_refuses_before_writing(
    built: tuple[Path, MerkleTree], tmp_path: Path
) -> None:
    tree, merkle = built
    image = patched_vmlinux(tmp_path, merkle)
    (module, proof), (other, other_proof) = modules(tree)[:2]
    original = module.read_bytes()
    with pytest.raises(MismatchError, match="kernel would reject the result: hash mismatch"):
        append_proof(module, other_proof, kernel=image)
    assert module.read_bytes() == original
    result = append_proof(module, proof, kernel=image)
    assert result.verdict == "ACCEPT"
    assert append_proof(other, other_proof, kernel=merkle.root).verdict == "ACCEPT"
    # an unpatched vmlinux (placeholder root) refuses every proof
    with pytest.raises(MismatchError, match="ENOPKG"):
        append_proof(module, proof, kernel=KBUILD / "vmlinux")


def test_kernel_check_two_module_tree(tmp_path: Path) -> None:
    """A tree of exactly two modules: each proof verifies only at its own place."""
    from vmpatch.workflow.tree import build_tree, plan_tree, write_proofs

    tree, _ = make_tree(tmp_path)
    order = (tree / "modules.order").read_text().splitlines()[:2]
    (tree / "modules.order").write_text("\n".join(order) + "\n")
    plan = plan_tree(tree)
    merkle = build_tree(plan)
    write_proofs(plan, merkle)
    assert merkle.levels == 1
    image = patched_vmlinux(tmp_path, merkle)
    (_a, pa), (b, _pb) = [(m.module, m.proof) for m in plan.modules]
    with pytest.raises(MismatchError):
        append_proof(b, pa, kernel=image)
    assert [r.verdict for r in append_tree(tree, kernel=image)] == ["ACCEPT", "ACCEPT"]


# ---------------------------------------------------------------------------
# Round trips, plain and compressed


def test_round_trip_plain(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    module, proof = modules(tree)[0]
    original = module.read_bytes()
    assert strip_proof(module).action == "no trailer"
    assert module.read_bytes() == original
    append_proof(module, proof)
    result = strip_proof(module)
    assert result.removed == ("merkle",) and result.module_size == len(original)
    assert module.read_bytes() == original
    append_proof(module, proof)
    assert module.read_bytes() == original + proof.read_bytes()


@pytest.mark.parametrize("suffix", list(CODECS))
def test_round_trip_compressed(built: tuple[Path, MerkleTree], suffix: str) -> None:
    tree, merkle = built
    module, proof = modules(tree)[0]
    original = module.read_bytes()
    packed = cli_compress(module, suffix)
    result = append_proof(packed, proof, kernel=merkle.root)
    assert result.codec != "none" and result.verdict == "ACCEPT"
    assert cli_decompress(packed) == original + proof.read_bytes()
    assert append_proof(packed, proof).action == "unchanged"
    stripped = strip_proof(packed)
    assert stripped.removed == ("merkle",)
    assert cli_decompress(packed) == original
    # strip to a plain output file
    append_proof(packed, proof)
    out = tree / "plain.ko"
    strip_proof(packed, output=out)
    assert out.read_bytes() == original
    assert cli_decompress(packed) == original + proof.read_bytes()


def test_strip_all_stacked_trailers(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    module, proof = modules(tree)[0]
    original = module.read_bytes()
    module.write_bytes(original + pkcs7_like())
    with pytest.raises(InputError):
        append_proof(module, proof)
    signed = module.read_bytes()
    module.write_bytes(signed + proof.read_bytes())  # kbuild's blind cat
    out = tree / "one.ko"
    assert strip_proof(module, output=out).removed == ("merkle",)
    assert out.read_bytes() == signed
    result = strip_proof(module, all_trailers=True)
    assert result.removed == ("merkle", "pkcs7")
    assert module.read_bytes() == original


def test_strip_proof_refuses_unfit_trailer(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    module, _proof = modules(tree)[0]
    bad = module.read_bytes() + SIGNATURE_INFO.pack(0, 0, 9, 0, 0, 1 << 30) + MARKER
    module.write_bytes(bad)
    with pytest.raises(InputError, match="unknown type 9"):
        strip_proof(module)
    assert module.read_bytes() == bad


# ---------------------------------------------------------------------------
# Metadata, trees, strip consistency


def test_mode_and_xattrs_kept(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    module, proof = modules(tree)[0]
    os.chmod(module, 0o640)
    try:
        os.setxattr(module, "user.vmpatch", b"x")
    except OSError as err:
        if err.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
            raise
        require(False, f"filesystem refuses user xattrs: {err}")
    append_proof(module, proof)
    assert stat.S_IMODE(module.stat().st_mode) == 0o640
    assert os.getxattr(module, "user.vmpatch") == b"x"
    strip_proof(module)
    assert stat.S_IMODE(module.stat().st_mode) == 0o640
    assert os.getxattr(module, "user.vmpatch") == b"x"


@pytest.mark.parametrize("workers", [1, 3])
def test_append_tree_build_dir(
    built: tuple[Path, MerkleTree], tmp_path: Path, workers: int
) -> None:
    """On one thread or several: results in modules.order order, each module + its proof."""
    from contextlib import contextmanager

    tree, merkle = built
    pairs = modules(tree)
    originals = [m.read_bytes() for m, _ in pairs]
    image = patched_vmlinux(tmp_path, merkle)
    counts: dict[str, list[int]] = {}

    @contextmanager
    def progress(description: str, total: int):  # type: ignore[no-untyped-def]
        seen = counts.setdefault(description, [])
        yield seen.append
        assert total == len(pairs)

    results = append_tree(tree, kernel=image, workers=workers, progress=progress)
    assert counts == {
        "checking modules": list(range(1, len(pairs) + 1)),
        "appending proofs": list(range(1, len(pairs) + 1)),
    }
    assert [r.position for r in results] == list(range(len(pairs)))
    assert {r.action for r in results} == {"appended"}
    for (module, proof), original in zip(pairs, originals, strict=True):
        assert module.read_bytes() == original + proof.read_bytes()
    assert {r.action for r in append_tree(tree)} == {"unchanged"}


def test_append_tree_staged_install_all_codecs(built: tuple[Path, MerkleTree]) -> None:
    from vmpatch.records.modorder import read_modules_order
    from vmpatch.verdict import KernelModel, kernel_verdict

    tree, merkle = built
    dest = tree.parent / "staging"
    entries = read_modules_order(tree / "modules.order")
    suffixes = ["", ".gz", ".xz", ".zst", ".gz"]
    installed = []
    for entry, suffix in zip(entries, suffixes, strict=True):
        target = dest / "kernel" / (entry.stem + ".ko")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / (entry.stem + ".ko"), target)
        installed.append(cli_compress(target, suffix) if suffix else target)
    results = append_tree(tree, dest=dest, kernel=merkle.root)
    assert [r.codec for r in results] == ["none", "gzip", "xz", "zstd", "gzip"]
    for path in installed:
        data = path.read_bytes() if path.suffix == ".ko" else cli_decompress(path)
        assert kernel_verdict(data, KernelModel(merkle.root)).verdict == "ACCEPT"


@pytest.mark.parametrize("workers", [1, 3])
def test_append_tree_validates_all_before_writing(
    built: tuple[Path, MerkleTree], workers: int
) -> None:
    tree, _ = built
    pairs = modules(tree)
    before = [m.read_bytes() for m, _ in pairs]
    last_proof = pairs[-1][1]
    last_proof.write_bytes(last_proof.read_bytes()[:-1])
    with pytest.raises(InputError, match=last_proof.name):
        append_tree(tree, workers=workers)
    assert [m.read_bytes() for m, _ in pairs] == before
    # a proof of the wrong position is refused too
    last_proof.write_bytes(pairs[0][1].read_bytes())
    with pytest.raises(InputError, match="position 0"):
        append_tree(tree)
    assert [m.read_bytes() for m, _ in pairs] == before


def test_strip_mismatch_caught_before_any_change(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    pairs = modules(tree)
    before = [m.read_bytes() for m, _ in pairs]
    check = StripCheck(tree, "1")
    with pytest.raises(MismatchError, match="INSTALL_MOD_STRIP is '1' at install time but ''"):
        append_tree(tree, strip_check=check)
    with pytest.raises(MismatchError):
        append_proof(*pairs[0], strip_check=check)
    assert [m.read_bytes() for m, _ in pairs] == before
    check_strip_consistency(tree, "")  # matches the build's record
    check_strip_consistency(tree, None)
    append_proof(*pairs[0], strip_check=StripCheck(tree, ""))


def test_strip_consistency_with_vmpatch_record(tmp_path: Path) -> None:
    from vmpatch.records.striprecord import StripRecord, write_record

    tree = tmp_path / "t"
    tree.mkdir()
    with pytest.raises(InputError, match="no build-time INSTALL_MOD_STRIP"):
        check_strip_consistency(tree, "1")
    write_record(tree, StripRecord("1", "strip"))
    check_strip_consistency(tree, "1", "strip")
    with pytest.raises(MismatchError, match="'--strip-all' at install time but '1'"):
        check_strip_consistency(tree, "--strip-all")
    with pytest.raises(MismatchError, match="'llvm-strip' at install time but 'strip'"):
        check_strip_consistency(tree, "1", "llvm-strip")


# ---------------------------------------------------------------------------
# Concurrency


def _append_many(jobs: list[tuple[str, str]]) -> list[str]:
    return [append_proof(m, p).action for m, p in jobs]


def test_concurrent_appends_from_8_processes(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    pairs = modules(tree)
    many = []
    for copy in range(12):  # 60 modules, each appended by all 8 processes
        for module, proof in pairs:
            dup = module.with_name(f"{module.stem}-{copy}.ko")
            shutil.copyfile(module, dup)
            many.append((str(dup), str(proof)))
    originals = {m: Path(m).read_bytes() for m, _ in many}
    rng = random.Random(1)
    work = []
    for _ in range(8):
        order = many[:]
        rng.shuffle(order)
        work.append(order)
    with multiprocessing.get_context("fork").Pool(8) as pool:
        actions = [a for chunk in pool.map(_append_many, work) for a in chunk]
    assert set(actions) <= {"appended", "unchanged"}
    for module, proof in many:
        data = Path(module).read_bytes()
        assert data == originals[module] + Path(proof).read_bytes()
        assert data.count(MARKER) == 1 and MARKER not in originals[module]
    leftovers = [p for p in tree.rglob("*") if ".vmpatch-tmp" in p.name]
    assert leftovers == []


# ---------------------------------------------------------------------------
# Reports


def test_module_report(built: tuple[Path, MerkleTree]) -> None:
    tree, _ = built
    module, proof = modules(tree)[2]
    plain = module_report(module)
    assert plain.trailer == "none" and plain.modinfo["name"] == ("crc_toy",)
    append_proof(module, proof)
    report = module_report(module)
    doc = to_json(report)
    assert doc["kind"] == "module"
    assert doc["trailer"]["kind"] == "merkle"
    assert doc["trailer"]["position"] == 2 and isinstance(doc["trailer"]["position"], int)
    assert doc["trailer"]["levels"] == 3
    # also at the top level, as the proof's own bytes say (docs/format.md section 3)
    raw = proof.read_bytes()
    assert (doc["position"], doc["levels"]) == (
        int.from_bytes(raw[:4], "big"),
        (len(raw) - 4 - 12 - 28) // 32,
    )
    assert (to_json(plain)["position"], to_json(plain)["levels"]) == (None, None)
    assert to_json(plain)["trailer"]["kind"] == "none"
    assert doc["modinfo"]["license"] == ["GPL"]
    assert ("position", "2") in report.rows()
    # PKCS#7 that does not parse: reported with a note, modinfo still read
    strip_proof(module)
    module.write_bytes(module.read_bytes() + pkcs7_like() + proof.read_bytes())
    report = module_report(module)
    assert report.trailer == "merkle" and report.trailers == 2
    strip_proof(module)
    report = module_report(module)
    assert report.trailer == "pkcs7" and report.notes
    assert report.modinfo["name"] == ("crc_toy",)
    module.write_bytes(module.read_bytes()[:-40] + SIGNATURE_INFO.pack(0, 0, 5, 0, 0, 5) + MARKER)
    assert module_report(module).trailer == "unknown type 5"


def test_count_trailers_on_framings_built_by_hand(built: tuple[Path, MerkleTree]) -> None:
    """Stacked trailers counted from bytes whose framing the test itself laid out.

    A malformed last trailer (sig_len reaching before the file) is one trailer,
    and ends the count, as ``inspect`` reports it; the old copy of this count
    in the tests said 0 there.
    """
    tree, _ = built
    module, proof = modules(tree)[0]
    plain = module.read_bytes()
    assert MARKER not in plain
    signed = plain + pkcs7_like()
    proved = proof.read_bytes()
    malformed = SIGNATURE_INFO.pack(0, 0, 3, 0, 0, 1 << 30) + MARKER
    cases = {
        "plain": (plain, 0),
        "proof": (plain + proved, 1),
        "signature": (signed, 1),
        "proof over signature": (signed + proved, 2),
        "malformed": (plain + malformed, 1),
        "malformed over signature": (signed + malformed, 1),
    }
    for name, (data, expected) in cases.items():
        assert count_trailers(data) == expected, name
        module.write_bytes(data)
        assert module_report(module).trailers == expected, name
    assert count_trailers(b"x" + MARKER) == 1  # the marker with no room for the info


def test_module_report_real_pkcs7_then_proof(built: tuple[Path, MerkleTree]) -> None:
    """A module signed like sign-file does (openssl cms), then a proof stacked on it."""
    openssl = require_tool("openssl", "openssl")
    tree, _ = built
    module, proof = modules(tree)[1]
    work = tree.parent
    tool(openssl, "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", work / "key.pem", "-out", work / "cert.pem",
         "-subj", "/CN=vmpatch test key")  # fmt: skip
    sig = tool(openssl, "cms", "-sign", "-binary", "-noattr", "-outform", "DER", "-nocerts",
               "-md", "sha256", "-signer", work / "cert.pem", "-inkey", work / "key.pem",
               "-in", module).stdout  # fmt: skip
    original = module.read_bytes()
    module.write_bytes(original + pkcs7_like(sig))
    report = module_report(module)
    assert (report.trailer, report.signer, report.hash_algo) == (
        "pkcs7",
        "vmpatch test key",
        "sha256",
    )
    assert report.key_id and not report.notes
    assert report.modinfo["name"] == ("tinyfs",)
    assert dict(report.rows())["signer"] == "vmpatch test key"
    append_proof(module, proof, replace=True)
    assert module.read_bytes() == original + proof.read_bytes()


def test_append_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    """Like kbuild's `cat >> link`: the linked file grows, the link stays a link."""
    tree, _merkle = make_tree(tmp_path)
    (module, proof) = modules(tree)[0]
    real = tmp_path / "real.ko"
    real.write_bytes(module.read_bytes())
    try:
        os.setxattr(real, "user.vmpatch", b"label")
    except OSError:
        require(False, "this filesystem refuses user xattrs")
    link = tmp_path / "link.ko"
    link.symlink_to(real)
    original = real.read_bytes()
    append_proof(link, proof)
    assert link.is_symlink() and link.resolve() == real
    assert real.read_bytes() == original + proof.read_bytes()
    assert os.getxattr(real, "user.vmpatch") == b"label"
