# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel config and the kernel-faithful decoder through tree and verify.

The e2e artifacts are the evidence: their configs are real kernel configs,
and their root (results/root.bin, made by the series' own generator over the
plain modules) is what ``tree --suffix .ko.xz`` must find over the modules
compressed as kbuild compresses them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.clirun import tool, vmpatch
from tests.conftest import require, require_tool
from vmpatch.errors import InputError
from vmpatch.records.kconfig import read_config
from vmpatch.records.root import ModuleHashesRoot

E2E = Path(__file__).resolve().parents[2] / "shared" / "e2e"
if not (E2E / "artifacts").is_dir():
    E2E = Path("/work/shared/e2e")
ARTIFACTS = E2E / "artifacts"


@pytest.fixture
def e2e() -> Path:
    require(ARTIFACTS.is_dir(), f"{ARTIFACTS} is not present (the e2e artifacts)")
    return ARTIFACTS


def test_config_of_each_e2e_kernel(e2e: Path) -> None:
    for codec in ("gzip", "xz", "zstd"):
        cfg = read_config(e2e / f"config-modz-{codec}")
        assert cfg.module_decompress == codec
        assert cfg.enabled("CONFIG_MODULE_SIG_FORCE") and cfg.enabled("CONFIG_MODULE_HASHES")
    assert read_config(e2e / "config").module_decompress == ""
    assert read_config(e2e / "config-modz-xz").enabled("CONFIG_XZ_DEC_ARM64")


def test_config_of_a_build_tree(tmp_path: Path, e2e: Path) -> None:
    (tmp_path / "include" / "config").mkdir(parents=True)
    auto = tmp_path / "include" / "config" / "auto.conf"
    auto.write_text("CONFIG_MODULE_DECOMPRESS=y\nCONFIG_MODULE_COMPRESS_ZSTD=y\n")
    assert read_config(tmp_path).module_decompress == "zstd"
    shutil.copy(e2e / "config-modz-gzip", tmp_path / ".config")
    assert read_config(tmp_path).module_decompress == "gzip"  # .config first


@pytest.mark.parametrize("text", ["", "hello world\n", "CONFIG_X=y\nnot a line\n"])
def test_not_a_config(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "config"
    bad.write_text(text)
    with pytest.raises(InputError) as err:
        read_config(bad)
    assert str(bad) in str(err.value)


def _xz_tree(tmp_path: Path, e2e: Path, *xz_args: str) -> Path:
    require_tool("xz", "xz-utils")
    tree = tmp_path / "tree"
    shutil.copytree(e2e / "lib", tree / "lib")
    shutil.copy(e2e / "modules.order", tree / "modules.order")
    for ko in sorted(tree.rglob("*.ko")):
        tool("xz", *xz_args, ko)
    return tree


def test_tree_over_kbuild_xz_modules_hashes_what_the_kernel_sees(tmp_path: Path, e2e: Path) -> None:
    """Issue 8.1: the root over .ko.xz is the e2e root, not the hash of the files."""
    tree = _xz_tree(tmp_path, e2e, "--check=crc32", "--lzma2=dict=1MiB")
    expected = ModuleHashesRoot.decode((E2E / "results" / "root.bin").read_bytes(), "little")
    run = vmpatch("tree", "--suffix", ".ko.xz", "--json", "--no-proofs", tree)
    assert run.returncode == 0, run.stderr
    assert (run.json()["levels"], run.json()["root"]) == (expected.levels, expected.digest.hex())


def test_tree_refuses_a_module_the_kernel_refuses(tmp_path: Path, e2e: Path) -> None:
    tree = _xz_tree(tmp_path, e2e, "--check=crc32", "--lzma2=dict=1MiB")
    crc8 = tree / "lib" / "crc8.ko.xz"
    tool("xz", "-d", crc8)
    tool("xz", crc8.with_suffix(""))  # default: CRC64
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tree.rglob("*"))
    run = vmpatch("tree", "--suffix", ".ko.xz", tree)
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {crc8}: ") and "CRC64" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tree.rglob("*")) == before


def test_verify_states_config_and_loading_path(tmp_path: Path, e2e: Path) -> None:
    require_tool("gzip", "gzip")
    module = tmp_path / "crc8.ko"
    shutil.copy(e2e / "lib" / "crc8.ko", module)
    tool("gzip", "-n", module)
    gz = tmp_path / "crc8.ko.gz"
    kernel = e2e / "vmlinux-modz-xz"
    forced = vmpatch(
        "verify", "--json", "--kernel", kernel, "--config", e2e / "config-modz-xz",
        "--load-path", "in-kernel", gz,
    )  # fmt: skip
    doc = forced.json()
    assert doc["module_decompress"] == "xz" and doc["config"].endswith("config-modz-xz")
    (entry,) = doc["modules"]
    assert (entry["load_path"], entry["errno"]) == ("in-kernel", "EINVAL")
    assert "not an xz compressed module" in entry["reason"]
    # As kmod chooses: a codec the kernel does not decompress goes through userspace.
    chosen = vmpatch("verify", "--json", "--kernel", kernel, "--config", e2e / "config-modz-xz", gz)
    (entry,) = chosen.json()["modules"]
    assert entry["load_path"] == "userspace" and entry["errno"] == "ENODATA"  # no proof
    plain = vmpatch(
        "verify", "--json", "--kernel", e2e / "vmlinux", "--config", e2e / "config",
        "--load-path", "in-kernel", gz,
    )  # fmt: skip
    assert plain.json()["modules"][0]["errno"] == "EOPNOTSUPP"
    bare = vmpatch("verify", "--json", "--kernel", kernel, gz)
    assert any("no kernel config" in a for a in bare.json()["assumptions"])


def test_config_of_another_kernel_is_refused(e2e: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("CONFIG_MODULES=y\n# CONFIG_MODULE_HASHES is not set\n")
    run = vmpatch("verify", "--kernel", e2e / "vmlinux", "--config", cfg, e2e / "lib" / "crc8.ko")
    assert run.returncode == 2 and run.stderr.startswith(f"error: {cfg}: ")


@pytest.mark.parametrize("codec", ["gzip", "xz", "zstd"])
def test_userspace_path_reads_every_stream(codec: str) -> None:
    """kmod decompresses the whole file: concatenated members, streams and frames."""
    from vmpatch.ko.kdecompress import KernelRefusal, kernel_decompress, userspace_decompress

    argv = {
        "gzip": ["gzip", "-n", "-c"],
        "xz": ["xz", "--check=crc32", "-c"],
        "zstd": ["zstd", "-c"],
    }
    require_tool(argv[codec][0])

    def comp(data: bytes) -> bytes:
        return bytes(tool(*argv[codec], input=data).stdout)

    blob = comp(b"first half ") + comp(b"second half")
    assert userspace_decompress(blob, codec, max_size=1 << 20).data == b"first half second half"
    assert kernel_decompress(blob, codec, max_size=1 << 20).data == b"first half "
    if codec != "gzip":  # zlib's gzread ignores trailing garbage; liblzma and libzstd do not
        with pytest.raises(KernelRefusal):
            userspace_decompress(blob + b"garbage!", codec, max_size=1 << 20)


@pytest.mark.parametrize("codec", ["gzip", "xz", "zstd"])
def test_streams_longer_than_one_output_step(codec: str) -> None:
    """Output of several MiB (many decode steps): both paths give the bytes, and the kernel's
    decoder stops exactly where the real tool's stream ends (gzip: before its 8-byte trailer).

    A 3 MiB module once made the kmod path refuse a good .ko.gz ("CRC32 is wrong"):
    the input consumed was miscounted once decoding took more than one step.
    """
    from vmpatch.ko.kdecompress import kernel_decompress, userspace_decompress

    argv = {
        "gzip": ["gzip", "-n", "-c"],
        "xz": ["xz", "--check=crc32", "-c"],
        "zstd": ["zstd", "-c"],
    }
    require_tool(argv[codec][0])
    original = bytes(range(256)) * 4096 + b"\0" * (2 << 20)  # 3 MiB, partly incompressible
    packed = bytes(tool(*argv[codec], input=original).stdout)
    assert userspace_decompress(packed, codec, max_size=8 << 20).data == original
    decoded = kernel_decompress(packed, codec, max_size=8 << 20)
    assert decoded.data == original
    trailer = {"gzip": 8, "xz": 0, "zstd": 0}[codec]  # RFC 1952: CRC32 and ISIZE
    assert (decoded.consumed, decoded.ignored) == (len(packed) - trailer, trailer)
