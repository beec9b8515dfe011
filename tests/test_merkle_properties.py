# SPDX-License-Identifier: GPL-2.0-or-later
"""Properties of the Merkle tree and its proofs, checked against the kernel's rules.

Three independent views of the same tree are compared here:

* :mod:`vmpatch.merkle` (the generator, bottom-up over layers),
* :class:`RefTree` below (top-down and recursive, written from docs/format.md
  section 2 only, sharing no code with the generator), and
* :func:`vmpatch.verdict.kernel_verdict` (the kernel's load-time check,
  docs/format.md section 4), which recomputes the root from a proof.

A bug in one of them has to be repeated in another, written in a different
style, to go unnoticed. The golden vectors pin the bytes to values computed
outside this project, so all three cannot drift together either.

Module contents are tiny (``b"module-%d\\n" % i``) because the tree only ever
sees a module through its leaf digest: the size of the module changes nothing
about the tree, but a large module would make the exhaustive sweep slow.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest
from clirun import vmpatch
from formatref import leaf, node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmpatch.merkle import MerkleTree, leaf_digest, node_digest, tree_levels
from vmpatch.records.root import ModuleHashesRoot
from vmpatch.records.trailer import MARKER, find_trailer, proof_sig_len
from vmpatch.verdict import KernelModel, Pkcs7Support, kernel_verdict
from vmpatch.workflow.tree import build_tree, plan_tree, write_proofs

ROOT = Path(__file__).resolve().parent.parent

#: Largest tree the property tests build (a big distribution kernel has ~6000 modules).
MAX_N = 3000
#: Leaves precomputed for trees built from other trees' heights (2**13 > 2 * MAX_N).
LEAF_POOL = 2**13
#: The exhaustive sweep covers every tree size up to here, every position of each.
EXHAUSTIVE_N = 512

# Layout of the 40 bytes after the proof: struct module_signature (12) + marker (28).
INFO_SIZE = 12
ID_TYPE_OFFSET = 2
SIG_LEN_OFFSET = 8
#: Offsets in struct module_signature that must be zero: algo, hash, signer_len,
#: key_id_len, __pad[3].
RESERVED_OFFSETS = (0, 1, 3, 4, 5, 6, 7)
MERKLE_ID_TYPE = 3
PKCS7_ID_TYPE = 2

#: (n, levels, root, sha256 of module 0's .merkle, its size), computed outside vmpatch.
GOLDEN = [
    (
        1,
        1,
        "5f1300bff2d168453d7afae0a2b437d12fd96efe88389dab34c6e5f34e079351",
        "e6efff9d9264592de7ef04abb675af3b910c0e84bca1b08cc1643c26290f5876",
        76,
    ),
    (
        3,
        2,
        "2f26f57830df50c3ddec99efc2fae4e1807ed992e8136f552f31c1548722a620",
        "96035d51f6a31b7fc4f1075f41bb9333edefd9373e1f6cea6619431665edbb15",
        108,
    ),
    (
        9,
        4,
        "0f9e69317081415bfb6990544acc4f173fe47e913e917942abe0429bbf3c6033",
        "636d81a06cd183f9ef228e7217664b140d9af94c92f276374dffe770fc21dede",
        172,
    ),
    (
        100,
        7,
        "b4da557199350d0978742ebcbd5233a0c2e205449197907a4b46b6748941709d",
        "8c0563e4a304b1573a9eade3829c6d91312df649d27e305c2ca59b67cafff969",
        268,
    ),
]


# --------------------------------------------------------------------------------------------
# The independent reference: top-down, recursive, from docs/format.md section 2 alone
# (leaf and node from tests/formatref.py, the tests' one spelling of the hash rules).


def ref_levels(count: int) -> int:
    """The height by counting doublings, not by bit tricks: smallest L with 2**L >= n, min 1."""
    if count == 0:
        return 0
    levels = 1
    while 2**levels < count:
        levels += 1
    return levels


class RefTree:
    """The tree defined top-down: node (h, j) covers leaves j*2**h .. (j+1)*2**h - 1.

    Node (h, j) exists iff its first leaf exists (``j * 2**h < n``), because the
    bottom-up "duplicate the odd last element" rule leaves ceil(n / 2**h) nodes
    at height h. A node's missing right child is its left child. This is a
    different derivation from the generator's layer-by-layer loop, so the two
    agreeing is evidence, not tautology.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self.count = len(self.leaves)
        self.levels = ref_levels(self.count)
        self._memo: dict[tuple[int, int], bytes] = {}

    def exists(self, height: int, index: int) -> bool:
        return index * 2**height < self.count

    def node(self, height: int, index: int) -> bytes:
        if height == 0:
            return self.leaves[index]
        key = (height, index)
        if key not in self._memo:
            left = self.node(height - 1, 2 * index)
            right_exists = self.exists(height - 1, 2 * index + 1)
            right = self.node(height - 1, 2 * index + 1) if right_exists else left
            self._memo[key] = node(left, right)
        return self._memo[key]

    def root(self) -> bytes:
        return self.node(self.levels, 0) if self.count else bytes(32)

    def proof(self, index: int) -> list[bytes]:
        """Siblings bottom-up: at height h the partner of the ancestor, or the ancestor itself."""
        siblings = []
        for height in range(self.levels):
            mine = index // 2**height
            partner = mine + 1 if mine % 2 == 0 else mine - 1
            siblings.append(
                self.node(height, partner)
                if self.exists(height, partner)
                else self.node(height, mine)
            )
        return siblings

    def trailer(self, index: int) -> bytes:
        """docs/format.md section 3 written out field by field."""
        proof = index.to_bytes(4, "big") + b"".join(self.proof(index))
        info = bytes([0, 0, MERKLE_ID_TYPE, 0, 0, 0, 0, 0]) + len(proof).to_bytes(4, "big")
        return proof + info + b"~Module signature appended~\n"


# --------------------------------------------------------------------------------------------
# Shared data: leaves are independent of n, so they are computed once for all tree sizes.


def module_bytes(index: int) -> bytes:
    """The content of module ``index`` (the golden vectors' convention)."""
    return b"module-%d\n" % index


@cache
def all_leaves() -> tuple[bytes, ...]:
    """leaf(i) for every module the tests use, via the library (checked against leaf)."""
    return tuple(leaf_digest(i, module_bytes(i)) for i in range(LEAF_POOL))


@cache
def library_tree(count: int) -> MerkleTree:
    return MerkleTree.from_leaves(all_leaves()[:count])


def model(tree: MerkleTree, pkcs7: Pkcs7Support = Pkcs7Support.NO) -> KernelModel:
    """The kernel for ``tree``; PKCS#7 off so that id_type 2 is unsupported too."""
    return KernelModel(tree.root, merkle=True, pkcs7=pkcs7)


def signed(tree: MerkleTree, index: int) -> bytearray:
    """Module ``index`` with its proof appended, as modules_install leaves it."""
    return bytearray(module_bytes(index) + tree.trailer(index))


def expected_errno_for_sig_len(blob: bytes, new_sig_len: int, levels: int) -> str | None:
    """The kernel's errno once sig_len alone is changed, from docs/format.md section 4's order.

    The marker and id_type (3) are intact and remaining > 12, so steps 1-3 pass;
    step 4 fails first when sig_len leaves no module byte, step 6 when sig_len is
    not that of the root's level count. None means the proof still verifies.
    """
    remaining = len(blob) - len(MARKER)
    if new_sig_len >= remaining - INFO_SIZE:
        return "EBADMSG"
    if new_sig_len != 4 + 32 * levels:
        return "ENOPKG"
    return None


# --------------------------------------------------------------------------------------------
# Golden vectors.


@pytest.mark.parametrize(("count", "levels", "root", "merkle_sha", "merkle_size"), GOLDEN)
def test_golden_library(
    count: int, levels: int, root: str, merkle_sha: str, merkle_size: int
) -> None:
    """The library's tree over in-memory leaves matches the pinned bytes."""
    leaves = [leaf_digest(i, module_bytes(i)) for i in range(count)]
    tree = MerkleTree.from_leaves(leaves)
    assert tree.levels == levels
    assert tree.root == ModuleHashesRoot(levels, bytes.fromhex(root))
    trailer = tree.trailer(0)
    assert len(trailer) == merkle_size
    assert hashlib.sha256(trailer).hexdigest() == merkle_sha
    reference = RefTree([leaf(i, module_bytes(i)) for i in range(count)])
    assert reference.root().hex() == root
    assert reference.trailer(0) == trailer


def _make_build_dir(base: Path, count: int) -> Path:
    """A build tree as kbuild leaves it: modules.order of ``m/modI.o``, files ``m/modI.ko``."""
    (base / "m").mkdir(parents=True)
    for i in range(count):
        (base / "m" / f"mod{i}.ko").write_bytes(module_bytes(i))
    (base / "modules.order").write_text("".join(f"m/mod{i}.o\n" for i in range(count)))
    return base


def _check_written_proofs(build_dir: Path, count: int, merkle_sha: str, merkle_size: int) -> None:
    first = (build_dir / "m" / "mod0.merkle").read_bytes()
    assert len(first) == merkle_size
    assert hashlib.sha256(first).hexdigest() == merkle_sha
    reference = RefTree([leaf(i, module_bytes(i)) for i in range(count)])
    for i in range(count):
        assert (build_dir / "m" / f"mod{i}.merkle").read_bytes() == reference.trailer(i), i


@pytest.mark.parametrize(("count", "levels", "root", "merkle_sha", "merkle_size"), GOLDEN)
def test_golden_treegen(
    tmp_path: Path, count: int, levels: int, root: str, merkle_sha: str, merkle_size: int
) -> None:
    """plan_tree/build_tree/write_proofs on a real directory write the pinned .merkle files."""
    build_dir = _make_build_dir(tmp_path / "build", count)
    plan = plan_tree(build_dir)
    assert plan.suffix == ".ko"
    tree = build_tree(plan, workers=2)
    assert (tree.levels, tree.root.digest.hex()) == (levels, root)
    write_proofs(plan, tree)
    _check_written_proofs(build_dir, count, merkle_sha, merkle_size)


@pytest.mark.parametrize(("count", "levels", "root", "merkle_sha", "merkle_size"), GOLDEN)
def test_golden_cli(
    tmp_path: Path, count: int, levels: int, root: str, merkle_sha: str, merkle_size: int
) -> None:
    """``vmpatch tree BUILD_DIR --json`` end to end, as kbuild would call it."""
    build_dir = _make_build_dir(tmp_path / "build", count)
    done = vmpatch("tree", build_dir, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["levels"] == levels
    assert report["root"] == root
    assert report["module_count"] == len(report["modules"]) == count
    _check_written_proofs(build_dir, count, merkle_sha, merkle_size)


# --------------------------------------------------------------------------------------------
# Exhaustive: every size up to EXHAUSTIVE_N, every position.


def test_library_leaves_match_reference() -> None:
    """The shared leaf cache itself is right (everything below relies on it)."""
    leaves = all_leaves()
    assert all(leaves[i] == leaf(i, module_bytes(i)) for i in range(len(leaves)))
    assert node_digest(leaves[0], leaves[1]) == node(leaves[0], leaves[1])


def test_exhaustive_small_trees() -> None:
    """Every n in 0..512, every position: sizes, layout, reference agreement, verification.

    kernel_verdict runs on all 131,328 (n, position) pairs: with 10-byte modules and
    leaves computed once for all n this takes a few seconds on two cores, so no sampling
    is needed.
    """
    leaves = all_leaves()
    marker_len = len(MARKER)
    for count in range(EXHAUSTIVE_N + 1):
        tree = MerkleTree.from_leaves(leaves[:count])
        reference = RefTree(leaves[:count])
        expected_levels = 0 if count == 0 else 1 if count == 1 else ref_levels(count)
        assert tree.levels == expected_levels == tree_levels(count), count
        assert tree.root.levels == expected_levels
        assert tree.root.digest == reference.root(), count
        if count == 0:
            assert tree.root.is_placeholder
            with pytest.raises(IndexError):
                tree.proof(0)
            continue
        kernel = model(tree)
        sig_len = 4 + 32 * expected_levels
        assert proof_sig_len(expected_levels) == sig_len
        for index in range(count):
            trailer = tree.trailer(index)
            assert trailer == reference.trailer(index), (count, index)
            siblings = tree.proof(index)
            assert len(siblings) == expected_levels
            proof = trailer[:sig_len]
            assert len(proof) == 4 + 32 * expected_levels
            assert proof[:4] == struct.pack(">I", index)
            assert proof[4:] == b"".join(siblings)
            info = trailer[sig_len : sig_len + INFO_SIZE]
            assert info[:SIG_LEN_OFFSET] == bytes([0, 0, MERKLE_ID_TYPE, 0, 0, 0, 0, 0])
            assert struct.unpack(">I", info[SIG_LEN_OFFSET:])[0] == sig_len
            assert len(trailer) == sig_len + INFO_SIZE + marker_len == sig_len + 40
            assert trailer[-marker_len:] == MARKER
            verdict = kernel_verdict(module_bytes(index) + trailer, kernel)
            assert verdict.verdict == "ACCEPT", (count, index, verdict.reason)
            assert verdict.errno is None
            assert verdict.position == index
        assert tree.trailers(range(count)) == [reference.trailer(i) for i in range(count)]


# --------------------------------------------------------------------------------------------
# Property tests over larger trees.

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Tree sizes, biased towards the edges where odd-duplication and level changes happen.
sizes = st.one_of(
    st.integers(min_value=1, max_value=MAX_N),
    st.sampled_from(
        sorted({2**k + d for k in range(12) for d in (-1, 0, 1) if 1 <= 2**k + d <= MAX_N})
    ),
)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[int, int]:
    """A tree size and a position in it, positions biased to the first and last."""
    count = draw(sizes)
    index = draw(
        st.one_of(
            st.integers(min_value=0, max_value=count - 1),
            st.sampled_from(sorted({0, count - 1, count // 2})),
        )
    )
    return count, index


@PROPERTY_SETTINGS
@given(tree_and_index())
def test_reference_agrees(case: tuple[int, int]) -> None:
    """Roots and proofs of the generator equal the top-down reference for random n."""
    count, index = case
    tree = library_tree(count)
    reference = RefTree(all_leaves()[:count])
    assert tree.root.digest == reference.root()
    assert tree.levels == reference.levels
    assert tree.proof(index) == reference.proof(index)
    assert tree.trailer(index) == reference.trailer(index)


@PROPERTY_SETTINGS
@given(sizes, st.data())
def test_trailers_of_any_indexes_are_each_trailer(count: int, data: st.DataObject) -> None:
    """The batch form (shared path walks) gives each index's own trailer, in any order,
    with repeats and gaps, and refuses an index outside the tree as trailer() does."""
    tree = library_tree(count)
    reference = RefTree(all_leaves()[:count])
    indexes = data.draw(st.lists(st.integers(min_value=0, max_value=count - 1), max_size=64))
    assert tree.trailers(indexes) == [reference.trailer(i) for i in indexes]
    with pytest.raises(IndexError):
        tree.trailers([*indexes, count])


@PROPERTY_SETTINGS
@given(tree_and_index(), st.binary(min_size=1, max_size=2048))
def test_proof_verifies_any_content(case: tuple[int, int], data: bytes) -> None:
    """Whatever module ``index`` contains, the proof of a tree over it verifies."""
    count, index = case
    leaves = list(all_leaves()[:count])
    leaves[index] = leaf_digest(index, data)
    tree = MerkleTree.from_leaves(leaves)
    verdict = kernel_verdict(data + tree.trailer(index), model(tree))
    assert verdict.verdict == "ACCEPT", verdict.reason
    assert verdict.position == index
    assert verdict.proof_levels == tree.levels


@PROPERTY_SETTINGS
@given(tree_and_index(), st.data())
def test_module_byte_flip_is_enokey(case: tuple[int, int], data: st.DataObject) -> None:
    """Any change to the module's bytes changes the leaf: the root no longer matches."""
    count, index = case
    tree = library_tree(count)
    blob = signed(tree, index)
    offset = data.draw(st.integers(0, len(module_bytes(index)) - 1), label="offset")
    blob[offset] ^= data.draw(st.integers(1, 255), label="xor")
    verdict = kernel_verdict(bytes(blob), model(tree))
    assert verdict.errno == "ENOKEY", verdict.reason
    assert verdict.verdict == "REJECT"
    assert verdict.load_result == "EKEYREJECTED"


@PROPERTY_SETTINGS
@given(tree_and_index(), st.data())
def test_proof_byte_flip_is_enokey(case: tuple[int, int], data: st.DataObject) -> None:
    """pos and every sibling digest are bound into the recomputed root."""
    count, index = case
    tree = library_tree(count)
    blob = signed(tree, index)
    start = len(module_bytes(index))
    offset = data.draw(st.integers(start, start + 4 + 32 * tree.levels - 1), label="offset")
    blob[offset] ^= data.draw(st.integers(1, 255), label="xor")
    verdict = kernel_verdict(bytes(blob), model(tree))
    assert verdict.errno == "ENOKEY", verdict.reason


@PROPERTY_SETTINGS
@given(tree_and_index(), st.sampled_from(RESERVED_OFFSETS), st.integers(1, 255))
def test_reserved_field_flip_is_ebadmsg(case: tuple[int, int], field: int, xor: int) -> None:
    """Non-zero algo/hash/signer_len/key_id_len/__pad: malformed, fatal even unenforced."""
    count, index = case
    tree = library_tree(count)
    blob = signed(tree, index)
    info_at = len(blob) - len(MARKER) - INFO_SIZE
    blob[info_at + field] ^= xor
    verdict = kernel_verdict(bytes(blob), model(tree))
    assert verdict.errno == "EBADMSG", verdict.reason
    assert verdict.load_result == "EBADMSG"


@PROPERTY_SETTINGS
@given(
    tree_and_index(),
    st.integers(0, 255).filter(lambda v: v != MERKLE_ID_TYPE),
    st.sampled_from((*RESERVED_OFFSETS, None)),
)
def test_unsupported_id_type_is_enopkg(
    case: tuple[int, int], id_type: int, also_reserved: int | None
) -> None:
    """An id_type the kernel lacks is ENOPKG, decided before the reserved fields (step 3 < 4)."""
    count, index = case
    tree = library_tree(count)
    blob = signed(tree, index)
    info_at = len(blob) - len(MARKER) - INFO_SIZE
    blob[info_at + ID_TYPE_OFFSET] = id_type
    if also_reserved is not None:
        blob[info_at + also_reserved] = 0xFF
    # With MODULE_SIG=n, type 2 is as unknown as any other; with it, 2 is not judged.
    verdict = kernel_verdict(bytes(blob), model(tree, Pkcs7Support.NO))
    assert verdict.errno == "ENOPKG", verdict.reason
    with_sig = kernel_verdict(bytes(blob), model(tree, Pkcs7Support.YES))
    if id_type == PKCS7_ID_TYPE:
        assert with_sig.verdict == ("REJECT" if also_reserved is not None else "UNCHECKED")
    else:
        assert with_sig.errno == "ENOPKG"


@PROPERTY_SETTINGS
@given(tree_and_index())
def test_merkle_without_module_hashes_is_enopkg(case: tuple[int, int]) -> None:
    """A kernel built without MODULE_HASHES does not know id_type 3."""
    count, index = case
    tree = library_tree(count)
    kernel = KernelModel(tree.root, merkle=False, pkcs7=Pkcs7Support.YES)
    assert kernel_verdict(bytes(signed(tree, index)), kernel).errno == "ENOPKG"


@PROPERTY_SETTINGS
@given(tree_and_index(), st.data())
def test_sig_len_change(case: tuple[int, int], data: st.DataObject) -> None:
    """Any other sig_len: EBADMSG if it leaves no module byte, else ENOPKG (wrong levels)."""
    count, index = case
    tree = library_tree(count)
    blob = signed(tree, index)
    info_at = len(blob) - len(MARKER) - INFO_SIZE
    current = struct.unpack_from(">I", blob, info_at + SIG_LEN_OFFSET)[0]
    boundary = info_at  # the first sig_len that leaves no module byte
    new = data.draw(
        st.one_of(
            st.integers(0, 2**32 - 1),
            st.integers(max(0, current - 70), current + 70),
            st.integers(max(0, boundary - 3), boundary + 3),
            st.sampled_from([4 + 32 * k for k in range(33)]),
        ).filter(lambda v: v != current),
        label="sig_len",
    )
    struct.pack_into(">I", blob, info_at + SIG_LEN_OFFSET, new)
    expected = expected_errno_for_sig_len(bytes(blob), new, tree.levels)
    assert expected is not None
    verdict = kernel_verdict(bytes(blob), model(tree))
    assert verdict.errno == expected, (new, verdict.reason)


@PROPERTY_SETTINGS
@given(tree_and_index(), st.data())
def test_marker_flip_is_enodata(case: tuple[int, int], data: st.DataObject) -> None:
    """Without the exact marker at the end the module counts as unsigned."""
    count, index = case
    tree = library_tree(count)
    blob = signed(tree, index)
    offset = data.draw(st.integers(len(blob) - len(MARKER), len(blob) - 1), label="offset")
    blob[offset] ^= data.draw(st.integers(1, 255), label="xor")
    verdict = kernel_verdict(bytes(blob), model(tree))
    assert verdict.errno == "ENODATA", verdict.reason
    assert find_trailer(bytes(blob)) is None


@PROPERTY_SETTINGS
@given(tree_and_index(), st.data())
def test_proof_of_another_module_is_enokey(case: tuple[int, int], data: st.DataObject) -> None:
    """Module j never verifies with module i's proof (contents differ; pos is in the leaf)."""
    count, index = case
    if count == 1:
        other = 1  # a module outside the tree entirely
    else:
        other = data.draw(st.integers(0, count - 1).filter(lambda j: j != index), label="j")
    tree = library_tree(count)
    blob = module_bytes(other) + tree.trailer(index)
    verdict = kernel_verdict(blob, model(tree))
    assert verdict.errno == "ENOKEY", verdict.reason


@PROPERTY_SETTINGS
@given(tree_and_index(), st.data())
def test_proof_of_other_height_is_enopkg(case: tuple[int, int], data: st.DataObject) -> None:
    """A proof from a tree with another level count fails the sig_len check of step 6."""
    count, index = case
    tree = library_tree(count)
    # Heights that can hold position ``index`` (2**L > index) other than this tree's.
    heights = [h for h in range(1, LEAF_POOL.bit_length()) if 2**h > index and h != tree.levels]
    height = data.draw(st.sampled_from(heights), label="height")
    # The smallest tree of that height that still contains ``index``.
    other = library_tree(max(index + 1, 2 ** (height - 1) + 1 if height > 1 else 1))
    assert other.levels == height
    blob = module_bytes(index) + other.trailer(index)
    assert kernel_verdict(blob, model(other)).verdict == "ACCEPT"
    verdict = kernel_verdict(blob, model(tree))
    assert verdict.errno == "ENOPKG", verdict.reason


def test_every_byte_flip_small_trees() -> None:
    """Deterministic complement to the properties: flip every byte of a few signed modules.

    The region a byte lies in decides the errno: module and proof ENOKEY, the
    reserved fields EBADMSG, id_type ENOPKG, sig_len by the rules, marker ENODATA.
    """
    for count, index in ((1, 0), (2, 1), (3, 2), (5, 4), (100, 37), (257, 256)):
        tree = library_tree(count)
        base = signed(tree, index)
        module_len = len(module_bytes(index))
        proof_end = module_len + 4 + 32 * tree.levels
        info_at = proof_end
        for offset in range(len(base)):
            blob = bytearray(base)
            blob[offset] ^= 0xFF
            verdict = kernel_verdict(bytes(blob), model(tree))
            rel = offset - info_at
            if offset < proof_end:
                expected: str | None = "ENOKEY"
            elif rel in RESERVED_OFFSETS:
                expected = "EBADMSG"
            elif rel == ID_TYPE_OFFSET:
                expected = "ENOPKG"
            elif SIG_LEN_OFFSET <= rel < INFO_SIZE:
                new = struct.unpack_from(">I", blob, info_at + SIG_LEN_OFFSET)[0]
                expected = expected_errno_for_sig_len(bytes(blob), new, tree.levels)
            else:
                expected = "ENODATA"
            assert verdict.errno == expected, (count, index, offset, verdict.reason)
