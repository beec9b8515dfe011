# SPDX-License-Identifier: GPL-2.0-or-later
"""Proofs over PKCS#7-signed modules (issue 8.3): stack on the signature, or replace it.

The kernel checks only a module's last trailer and hashes every byte before
it (docs/format.md section 4, rule 8). So a proof for a signed module is right
on top of the signature when the tree was hashed with the signature in place,
and in its place when the tree was hashed without it; the other choice is a
module the kernel refuses (ENOKEY). The modules here are the miniature kbuild
tree's, signed the way ``scripts/sign-file`` signs (``openssl cms``, SHA-256,
PKCS#1 v1.5, no signed attributes, no certificates, DER) with a throwaway key.

Two roots are made: over the signed bytes (the tree hashing of ``vmpatch
tree``, through the library because ``vmpatch tree`` itself refuses a build
tree whose modules carry trailers) and over the unsigned bytes (``vmpatch
patch --from-tree``). Each result is judged twice: by ``vmpatch verify`` and
by the kernel's rule written out below with hashlib alone, against a root
recomputed here from the format rules.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from clirun import hook, tool, vmpatch
from conftest import TESTDATA, require_tool
from formatref import INFO, MARKER, reference_root
from test_kotool import patched_vmlinux

KBUILD = TESTDATA / "kbuild-x86_64"


def kernel_accepts(data: bytes, levels: int, root: bytes) -> bool:
    """The kernel's check of a Merkle trailer (docs/format.md section 4, steps 1-6)."""
    if len(data) <= len(MARKER) or not data.endswith(MARKER):
        return False
    body = data[: -len(MARKER)]
    if len(body) <= INFO.size:
        return False
    algo, hash_, id_type, signer_len, key_id_len, sig_len = INFO.unpack(body[-INFO.size :])
    body = body[: -INFO.size]
    if id_type != 3 or sig_len >= len(body) or algo or hash_ or signer_len or key_id_len:
        return False
    if sig_len != 4 + 32 * levels:
        return False
    module, proof = body[:-sig_len], body[-sig_len:]
    pos = int.from_bytes(proof[:4], "big")
    cur = hashlib.sha256(b"\x01" + proof[:4] + module).digest()
    for k in range(levels):
        sibling = proof[4 + 32 * k : 4 + 32 * (k + 1)]
        pair = cur + sibling if not (pos >> k) & 1 else sibling + cur
        cur = hashlib.sha256(b"\x02" + pair).digest()
    return cur == root


def order(tree: Path) -> list[str]:
    return [line[:-2] for line in (tree / "modules.order").read_text().splitlines()]


@dataclass(frozen=True)
class Rooted:
    """A copy of the tree, its proofs, its patched vmlinux and the independent root."""

    tree: Path
    vmlinux: Path
    levels: int
    root: bytes

    def proof(self, stem: str) -> Path:
        return self.tree / (stem + ".merkle")


@dataclass(frozen=True)
class Signed:
    plain: dict[str, bytes]  # stem -> the module as built
    signed: dict[str, bytes]  # stem -> the module with its PKCS#7 trailer
    with_sig: Rooted  # hashed with the signatures in place
    without_sig: Rooted  # hashed without them
    work: Path


def _sign(openssl: str, work: Path, data: bytes) -> bytes:
    """``data`` followed by the trailer sign-file appends (signature type 2)."""
    src, sig = work / "to-sign", work / "sig.der"
    src.write_bytes(data)
    tool(
        openssl, "cms", "-sign", "-binary", "-noattr", "-nocerts", "-outform", "DER",
        "-md", "sha256", "-signer", work / "cert.pem", "-inkey", work / "key.pem",
        "-in", src, "-out", sig,
    )  # fmt: skip
    der = sig.read_bytes()
    assert der[0] == 0x30  # a DER SEQUENCE: the PKCS#7 ContentInfo
    return data + der + INFO.pack(0, 0, 2, 0, 0, len(der)) + MARKER


@pytest.fixture
def signed(tmp_path: Path) -> Signed:
    from vmpatch.workflow.tree import build_tree, plan_tree, write_proofs

    openssl = require_tool("openssl", "openssl")
    work = tmp_path / "keys"
    work.mkdir()
    tool(
        openssl, "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", work / "key.pem", "-out", work / "cert.pem",
        "-subj", "/CN=vmpatch throwaway signing key",
    )  # fmt: skip
    unsigned_tree = tmp_path / "unsigned"
    signed_tree = tmp_path / "signed"
    shutil.copytree(KBUILD, unsigned_tree)
    shutil.copytree(KBUILD, signed_tree)
    plain, sigd = {}, {}
    for stem in order(signed_tree):
        module = signed_tree / (stem + ".ko")
        plain[stem] = module.read_bytes()
        sigd[stem] = _sign(openssl, work, plain[stem])
        module.write_bytes(sigd[stem])
    # over the signed bytes: vmpatch tree's own planning and hashing
    plan = plan_tree(signed_tree, refuse_trailers=False)
    merkle = build_tree(plan)
    write_proofs(plan, merkle)
    image = patched_vmlinux(tmp_path, merkle)
    levels, root = reference_root(signed_tree)
    assert (merkle.levels, merkle.root.digest) == (levels, root)
    with_sig = Rooted(signed_tree, image, levels, root)
    # over the unsigned bytes: the command line
    run = vmpatch("patch", "--from-tree", unsigned_tree, unsigned_tree / "vmlinux")
    assert run.returncode == 0, run.stderr
    levels, root = reference_root(unsigned_tree)
    without_sig = Rooted(unsigned_tree, unsigned_tree / "vmlinux", levels, root)
    assert with_sig.root != without_sig.root
    return Signed(plain, sigd, with_sig, without_sig, tmp_path)


def _target(s: Signed, stem: str) -> Path:
    """A fresh copy of the signed module, as modules_install would have installed it."""
    path = s.work / "install" / (stem + ".ko")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(s.signed[stem])
    return path


def _verdict(kernel: Path, module: Path) -> dict[str, object]:
    run = vmpatch("verify", "--json", "--kernel", kernel, module)
    [doc] = run.json()["modules"]
    return dict(doc)


def _judged(r: Rooted, data: bytes) -> bool:
    return kernel_accepts(data, r.levels, r.root)


@pytest.mark.parametrize("hashed_with_signature", [True, False])
def test_kernel_check_picks_the_choice_that_verifies(
    signed: Signed, hashed_with_signature: bool
) -> None:
    stem = order(signed.with_sig.tree)[0]
    rooted = signed.with_sig if hashed_with_signature else signed.without_sig
    other = signed.without_sig if hashed_with_signature else signed.with_sig
    module, proof = _target(signed, stem), rooted.proof(stem)
    run = vmpatch("ko", "append", "--json", "--kernel", rooted.vmlinux, module, proof)
    assert run.returncode == 0, run.stderr
    [doc] = run.json()["modules"]
    assert doc["chosen_by_kernel"] is True and doc["verdict"] == "ACCEPT"
    data = module.read_bytes()
    if hashed_with_signature:
        assert (doc["action"], doc["stacked_on"]) == ("stacked", "pkcs7")
        assert data == signed.signed[stem] + proof.read_bytes()
    else:
        assert (doc["action"], doc["replaced_trailer"]["kind"]) == ("replaced", "pkcs7")
        assert data == signed.plain[stem] + proof.read_bytes()
    assert _judged(rooted, data) and not _judged(other, data)
    assert _verdict(rooted.vmlinux, module)["verdict"] == "ACCEPT"
    refused = _verdict(other.vmlinux, module)
    assert (refused["verdict"], refused["errno"]) == ("REJECT", "ENOKEY")


def test_a_proof_that_fits_neither_choice_changes_nothing(signed: Signed) -> None:
    stem = order(signed.with_sig.tree)[1]
    module = _target(signed, stem)
    run = vmpatch(
        "ko", "append", "--kernel", signed.without_sig.vmlinux, module,
        signed.with_sig.proof(stem),
    )  # fmt: skip
    assert run.returncode == 1
    assert "both stacked on the pkcs7 signature" in run.stderr and "replacing it" in run.stderr
    assert module.read_bytes() == signed.signed[stem]


def test_without_a_kernel_the_choice_is_asked_for(signed: Signed) -> None:
    stem = order(signed.with_sig.tree)[2]
    module = _target(signed, stem)
    run = vmpatch("ko", "append", module, signed.with_sig.proof(stem))
    assert run.returncode == 2
    [line] = run.stderr.splitlines()
    assert "--stack if the tree was hashed with the signature in place" in line
    assert "--replace if it was hashed without it" in line
    assert module.read_bytes() == signed.signed[stem]
    both = vmpatch("ko", "append", "--stack", "--replace", module, signed.with_sig.proof(stem))
    assert both.returncode == 2 and module.read_bytes() == signed.signed[stem]

    run = vmpatch("ko", "append", "--json", "--stack", module, signed.with_sig.proof(stem))
    assert run.returncode == 0, run.stderr
    [doc] = run.json()["modules"]
    assert (doc["action"], doc["chosen_by_kernel"]) == ("stacked", False)
    data = module.read_bytes()
    assert data == signed.signed[stem] + signed.with_sig.proof(stem).read_bytes()
    assert _judged(signed.with_sig, data)
    assert _verdict(signed.with_sig.vmlinux, module)["verdict"] == "ACCEPT"

    module = _target(signed, stem)
    run = vmpatch("ko", "append", "--replace", module, signed.without_sig.proof(stem))
    assert run.returncode == 0, run.stderr
    data = module.read_bytes()
    assert data == signed.plain[stem] + signed.without_sig.proof(stem).read_bytes()
    assert _judged(signed.without_sig, data)
    assert _verdict(signed.without_sig.vmlinux, module)["verdict"] == "ACCEPT"


def test_the_hook_stacks_and_chooses(signed: Signed) -> None:
    stem = order(signed.with_sig.tree)[3]
    proof = signed.with_sig.proof(stem)
    module = _target(signed, stem)
    refused = hook(module, proof)
    assert refused.returncode == 2 and "--stack" in refused.stderr
    assert module.read_bytes() == signed.signed[stem]
    assert hook("--stack", "--replace", module, proof).returncode == 2
    done = hook("--stack", module, proof)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert module.read_bytes() == signed.signed[stem] + proof.read_bytes()
    module = _target(signed, stem)
    assert hook("--kernel", signed.with_sig.vmlinux, module, proof).returncode == 0
    assert _judged(signed.with_sig, module.read_bytes())


def test_append_tree_stacks_in_place_and_replaces_at_dest(signed: Signed) -> None:
    # in place: the signed build tree was hashed as it is, so every proof stacks
    tree = signed.with_sig.tree
    run = vmpatch("ko", "append-tree", "--json", tree, "--kernel", signed.with_sig.vmlinux)
    assert run.returncode == 0, run.stderr
    assert [d["action"] for d in run.json()["modules"]] == ["stacked"] * 5
    for stem in order(tree):
        data = (tree / (stem + ".ko")).read_bytes()
        assert data == signed.signed[stem] + signed.with_sig.proof(stem).read_bytes()
        assert _judged(signed.with_sig, data)
    verify = vmpatch("verify", "--json", "--kernel", signed.with_sig.vmlinux, "--modules", tree)
    assert [m["verdict"] for m in verify.json()["modules"]] == ["ACCEPT"] * 5
    # a staged install of signed modules, rooted over the unsigned build tree: replaced
    dest = signed.work / "staged"
    for stem in order(tree):
        target = dest / "kernel" / (stem + ".ko")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(signed.signed[stem])
    build = signed.without_sig.tree
    plain = vmpatch("ko", "append-tree", build, "--dest", dest)
    assert plain.returncode == 2 and "--stack" in plain.stderr
    run = vmpatch(
        "ko", "append-tree", "--json", build, "--dest", dest,
        "--kernel", signed.without_sig.vmlinux,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert {(d["action"], d["replaced_trailer"]["kind"]) for d in run.json()["modules"]} == {
        ("replaced", "pkcs7")
    }
    for stem in order(build):
        data = (dest / "kernel" / (stem + ".ko")).read_bytes()
        assert data == signed.plain[stem] + signed.without_sig.proof(stem).read_bytes()
        assert _judged(signed.without_sig, data)
    # the same again finds every proof in place
    again = vmpatch("ko", "append-tree", "--json", build, "--dest", dest, "--stack")
    assert [d["action"] for d in json.loads(again.stdout)["modules"]] == ["unchanged"] * 5
