# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify --system [--root DIR] [KVER]`` on staged image trees.

The staged tree is made of committed testdata with real tools: the ELF
payload of testdata/boot/x86_64/bzImage-gzip is taken out with ``gzip -d``,
testdata/installed-x86_64's modules are re-rooted onto it with ``vmpatch
reroot --kernel``, the patched ELF is put back with ``gzip -n -9`` behind
the same setup header (payload_length at 0x248+4, piggy.S's input_len and
output_len before it), and that is ``boot/vmlinuz-KVER``. So the image's root
is the modules' root. The expected root is read from the patched ELF with
``objcopy --dump-section``; the expected module list from modules.order
itself; the out-of-tree module's trailer from ``xz -dc``.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from clirun import tool, tool_text, vmpatch
from conftest import TESTDATA, require, require_tool
from test_json_schema import check

KVER = "6.12.0-vmpatch"
INSTALLED = TESTDATA / "installed-x86_64/lib/modules" / KVER
BZIMAGE = TESTDATA / "boot/x86_64/bzImage-gzip"
UKI_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
MARKER = b"~Module signature appended~\n"
CONFIG = (
    "CONFIG_MODULES=y\nCONFIG_MODULE_SIG=y\nCONFIG_MODULE_HASHES=y\n"
    "CONFIG_MODULE_DECOMPRESS=y\nCONFIG_MODULE_COMPRESS_XZ=y\n"
    "# CONFIG_MODULE_SIG_FORCE is not set\n"
)


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


class Staged:
    """A re-rooted module tree and the bzImage carrying its root."""

    def __init__(self, work: Path) -> None:
        gzip = require_tool("gzip", "gzip")
        objcopy = require_tool("objcopy", "binutils")
        work.mkdir(parents=True, exist_ok=True)
        setup = BZIMAGE.read_bytes()
        # arch/x86/boot/header.S: setup_sects at 0x1f1, payload_offset/length at 0x248/0x24c.
        start = ((setup[0x1F1] or 4) + 1) * 512 + _u32(setup, 0x248)
        piggy = setup[start : start + _u32(setup, 0x24C)]
        elf = tool(gzip, "-dc", input=piggy).stdout
        self.vmlinux = work / "vmlinux.bin"
        self.vmlinux.write_bytes(elf)
        self.modules = work / "modules"
        shutil.copytree(INSTALLED, self.modules)
        for path in [self.modules, *self.modules.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        run = vmpatch("reroot", "--kernel", self.vmlinux, self.modules)
        assert run.returncode == 0, run.stderr
        tool(objcopy, "--dump-section", f".module_hashes={work / 'root.bin'}", self.vmlinux)
        record = (work / "root.bin").read_bytes()
        self.levels, self.root = _u32(record, 0), record[4:].hex()
        patched = self.vmlinux.read_bytes()
        payload = tool(gzip, "-n", "-9", input=patched).stdout
        head = bytearray(setup[: start - 8])
        head[0x24C:0x250] = len(payload).to_bytes(4, "little")
        self.bzimage = work / "bzImage"
        self.bzimage.write_bytes(
            bytes(head) + len(payload).to_bytes(4, "little") + len(patched).to_bytes(4, "little")
        )
        with self.bzimage.open("ab") as out:
            out.write(payload)
        self.order = [
            line.strip()
            for line in (self.modules / "modules.order").read_text().splitlines()
            if line.strip()
        ]

    def uki(self, target: Path) -> Path:
        """A UKI as ukify lays it out, made with objcopy from systemd-boot-efi's stub."""
        require_tool("objcopy", "binutils")
        require(UKI_STUB.is_file(), f"{UKI_STUB} is missing (apt-get install systemd-boot-efi)")
        work = target.parent
        (work / "osrel").write_text("ID=debian\n")
        tool(
            "objcopy", "--add-section", f".osrel={work / 'osrel'}", "--change-section-vma",
            ".osrel=0x20000", "--add-section", f".linux={self.bzimage}", "--change-section-vma",
            ".linux=0x2000000", "--set-section-flags", ".linux=data,readonly",
            "--set-section-flags", ".osrel=data,readonly", UKI_STUB, target,
        )  # fmt: skip
        return target


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    return Staged(tmp_path_factory.mktemp("staged"))


def _tree(staged: Staged, image_root: Path, modules_at: str = "lib/modules") -> Path:
    (image_root / modules_at).mkdir(parents=True)
    shutil.copytree(staged.modules, image_root / modules_at / KVER)
    return image_root


@pytest.fixture
def image(staged: Staged, tmp_path: Path) -> Path:
    """The Debian layout: boot/vmlinuz-KVER, boot/config-KVER, lib/modules/KVER."""
    root = _tree(staged, tmp_path / "img")
    (root / "boot").mkdir()
    shutil.copy(staged.bzimage, root / f"boot/vmlinuz-{KVER}")
    (root / f"boot/config-{KVER}").write_text(CONFIG)
    return root


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "",
            p.lstat().st_mtime_ns,
        )
        for p in [root, *root.rglob("*")]
        if not p.is_symlink()
    }


def _listed(report: dict[str, object], root: Path) -> list[str]:
    return [
        str(Path(str(m["path"])).relative_to(root / "lib/modules" / KVER))  # type: ignore[index]
        for m in report["modules"]  # type: ignore[attr-defined]
    ]


def _stem(relative: str) -> str:
    return relative.split(".ko")[0] + ".ko"


def test_staged_debian_layout(staged: Staged, image: Path) -> None:
    before = _snapshot(image)
    run = vmpatch("verify", "--system", "--root", image, "--json")
    assert run.returncode == 1, run.stderr  # the unlisted module is refused
    report = run.json()
    check("verify", report)
    system = report["system"]
    assert system["kver"] == KVER
    assert system["image"] == str(image / f"boot/vmlinuz-{KVER}")
    assert system["config"] == str(image / f"boot/config-{KVER}")
    assert system["modules"] == str(image / "lib/modules" / KVER)
    assert (report["levels"], report["root"]) == (staged.levels, staged.root)
    assert [_stem(p) for p in _listed(report, image)] == staged.order
    assert {m["verdict"] for m in report["modules"]} == {"ACCEPT"}
    assert report["counts"] == {"accept": 5, "reject": 0, "unchecked": 0, "error": 0}
    # The one module file modules.order does not name, with its trailer kind.
    extra = image / "lib/modules" / KVER / "updates/toy_extra.ko.xz"
    plain = tool(require_tool("xz", "xz-utils"), "-dc", extra).stdout
    assert not plain.endswith(MARKER)  # independent evidence: it carries no trailer
    [unlisted] = report["unlisted"]
    assert unlisted["path"] == str(extra)
    assert (unlisted["trailer"]["kind"], unlisted["verdict"]) == ("none", "REJECT")
    # No sysfs in an image and no MODULE_SIG_FORCE: enforcement is assumed, and said.
    enforcement = report["enforcement"]
    assert (enforcement["mode"], enforcement["assumed"]) == ("enforcing", True)
    assert (enforcement["sig_enforce"], enforcement["lockdown"]) == (None, None)
    assert unlisted["result"] == "EKEYREJECTED"
    assert any("sig_enforce parameter was not read" in a for a in report["assumptions"])
    assert _snapshot(image) == before  # nothing written


def test_staged_human_output_lists_unlisted_apart(image: Path) -> None:
    run = vmpatch("verify", "--system", "--root", ".", cwd=image)  # short paths: no folding
    assert run.returncode == 1, run.stderr
    out = run.stdout
    assert f"kernel {KVER}: boot/vmlinuz-{KVER}" in out
    assert "(out-of-tree, DKMS)" in out
    table = out[out.index("(out-of-tree, DKMS)") :]
    row = next(line for line in table.splitlines() if "updates/toy_extra.ko.xz" in line)
    assert "none" in row and "REJECT" in row
    assert "enforcement enforcing (assumed)" in out
    summary = vmpatch("verify", "--system", "--root", image, "--summary")
    assert summary.returncode == 1
    assert summary.stdout.splitlines() == [
        "5 modules: 5 accepted, 0 rejected, 0 unchecked",
        "1 not in modules.order: 0 accepted, 1 rejected, 0 unchecked",
    ]


@pytest.mark.parametrize(
    ("sig_enforce", "lockdown", "mode", "result"),
    [
        ("N", "[none] integrity confidentiality", "none", "0"),
        ("N", "none [integrity] confidentiality", "lockdown", "EPERM"),
        ("N", "none integrity [confidentiality]", "lockdown", "EPERM"),
        ("Y", "[none] integrity confidentiality", "enforcing", "EKEYREJECTED"),
    ],
)
def test_runtime_state_decides_the_result(
    image: Path, sig_enforce: str, lockdown: str, mode: str, result: str
) -> None:
    """sysfs as kernel/params.c and security/lockdown/lockdown.c print it, bind-mounted there."""
    param = image / "sys/module/module/parameters/sig_enforce"
    param.parent.mkdir(parents=True)
    param.write_text(sig_enforce + "\n")
    level = image / "sys/kernel/security/lockdown"
    level.parent.mkdir(parents=True)
    level.write_text(lockdown + "\n")
    run = vmpatch("verify", "--system", "--root", image, "--json")
    report = run.json()
    check("verify", report)
    enforcement = report["enforcement"]
    assert (enforcement["mode"], enforcement["assumed"]) == (mode, False)
    assert enforcement["sig_enforce"] is (sig_enforce == "Y")
    [unlisted] = report["unlisted"]
    assert (unlisted["verdict"], unlisted["errno"], unlisted["result"]) == (
        "REJECT",
        "ENODATA",
        result,
    )
    assert not any("enforcement (" in a for a in report["assumptions"])


def test_uki_and_usr_lib_modules(staged: Staged, tmp_path: Path) -> None:
    """systemd's layout: a UKI on the ESP, modules in usr/lib/modules, lib -> /usr/lib."""
    root = _tree(staged, tmp_path / "img", "usr/lib/modules")
    (root / "lib").symlink_to("/usr/lib")  # absolute: must resolve inside the root
    esp = root / "efi/EFI/Linux"
    esp.mkdir(parents=True)
    uki = staged.uki(esp / f"0123456789abcdef-{KVER}+3-0.efi")
    run = vmpatch("verify", "--system", "--root", root, "--json")
    report = run.json()
    check("verify", report)
    assert report["system"]["image"] == str(uki)
    assert report["system"]["config"] is None
    assert report["system"]["modules"] == str(root / "usr/lib/modules" / KVER)
    assert report["root"] == staged.root
    assert report["counts"]["accept"] == 5
    assert any("no kernel config" in a for a in report["assumptions"])


def test_vmlinuz_in_the_module_directory(staged: Staged, tmp_path: Path) -> None:
    root = _tree(staged, tmp_path / "img", "usr/lib/modules")
    shutil.copy(staged.bzimage, root / "usr/lib/modules" / KVER / "vmlinuz")
    report = vmpatch("verify", "--system", "--root", root, "--json").json()
    assert report["system"]["image"] == str(root / "usr/lib/modules" / KVER / "vmlinuz")
    assert report["counts"]["accept"] == 5


def test_two_kernels_need_a_name(image: Path) -> None:
    other = "6.12.9-other"
    shutil.copytree(image / "lib/modules" / KVER, image / "lib/modules" / other)
    run = vmpatch("verify", "--system", "--root", image)
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {image}: 2 kernels installed: ")
    assert KVER in run.stderr and other in run.stderr
    assert len(run.stderr.splitlines()) == 1
    named = vmpatch("verify", "--system", "--root", image, KVER, "--json")
    assert named.json()["system"]["kver"] == KVER
    missing = vmpatch("verify", "--system", "--root", image, other)
    assert missing.returncode == 2
    assert f"no kernel image for {other}" in missing.stderr


def test_running_system_defaults_to_uname(tmp_path: Path) -> None:
    """Without --root the release is uname -r's; this machine's modules may be absent."""
    release = tool_text("uname", "-r").strip()
    run = vmpatch("verify", "--system", "--json")
    if run.returncode == 0 or run.stdout:
        assert run.json()["system"]["kver"] == release
    else:
        assert release in run.stderr, run.stderr


def test_system_refuses_kernel_and_modules(image: Path) -> None:
    run = vmpatch("verify", "--system", "--root", image, "--kernel", image / "boot/x")
    assert run.returncode == 2
    assert "--system finds the kernel and modules" in run.stderr
    run = vmpatch(
        "verify", "--root", image, "--kernel", BZIMAGE, INSTALLED / "kernel/lib/zz_first.ko"
    )
    assert run.returncode == 2
    assert "--root is for --system" in run.stderr


def test_kernel_and_install_tree_lists_unlisted(testdata: Path) -> None:
    """Without --system: --kernel IMAGE --modules lib/modules/KVER reads the installed order."""
    run = vmpatch("verify", "--kernel", BZIMAGE, "--modules", INSTALLED, "--json")
    report = run.json()
    order = (INSTALLED / "modules.order").read_text().split()
    assert [_stem(str(Path(m["path"]).relative_to(INSTALLED))) for m in report["modules"]] == order
    assert [Path(m["path"]).relative_to(INSTALLED) for m in report["unlisted"]] == [
        Path("updates/toy_extra.ko.xz")
    ]
    # A build tree has no unlisted modules: every .ko it builds is in modules.order.
    built = vmpatch(
        "verify", "--kernel", BZIMAGE, "--modules", testdata / "kbuild-x86_64", "--json"
    ).json()
    assert built["unlisted"] == []


def test_links_resolve_inside_the_root(image: Path) -> None:
    """An absolute link in an image names a file of the image, never of the host."""
    boot = image / "boot"
    (boot / f"vmlinuz-{KVER}").rename(boot / "real-image")
    (boot / f"vmlinuz-{KVER}").symlink_to("/boot/real-image")
    (boot / f"config-{KVER}").unlink()
    (boot / f"config-{KVER}").symlink_to("../../../../../../../../etc/os-release")
    report = vmpatch("verify", "--system", "--root", image, "--json").json()
    assert report["system"]["image"] == str(boot / "real-image")
    assert report["system"]["config"] is None  # ".." stops at the root: not the host's file
    assert report["counts"]["accept"] == 5
