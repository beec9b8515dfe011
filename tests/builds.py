# SPDX-License-Identifier: GPL-2.0-or-later
"""Real second builds of the miniature kbuild tree, for tests of explain and diff.

A variant module is compiled by scripts/make-testdata's own Builder (the same
cross gcc, flags and ``ld -r`` as the committed modules) from a copy of
scripts/testdata-src/module/module.c with one line added: a second build that
differs in one module's source. Signatures are made as
scripts/make-testdata-installed makes them (``openssl cms`` with sign-file's
choices, the committed throwaway key).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import struct
import sys
from pathlib import Path
from types import ModuleType

from clirun import ROOT, tool, vmpatch
from conftest import TESTDATA

KBUILD = TESTDATA / "kbuild-x86_64"
INSTALLED = TESTDATA / "installed-x86_64" / "lib" / "modules" / "6.12.0-vmpatch"
SIGNING = ROOT / "scripts" / "testdata-src" / "signing"
MARKER = b"~Module signature appended~\n"


def make_testdata() -> ModuleType:
    """scripts/make-testdata, imported (it has no .py suffix)."""
    path = ROOT / "scripts" / "make-testdata"
    loader = importlib.machinery.SourceFileLoader("make_testdata", str(path))
    spec = importlib.util.spec_from_loader("make_testdata", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_testdata", module)  # dataclasses look their module up
    loader.exec_module(module)
    return module


def variant_module(work: Path, path: str, seed: int, description: str) -> Path:
    """``path``.ko built from module.c with one line added to its source."""
    mt = make_testdata()
    builder = mt.Builder(mt.ARCHES["x86_64"], work, False)
    source = (mt.SRC_DIR / "module" / "module.c").read_text()
    target = work / f"{path}.c"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source + "\nint toy_variant = 1; /* the rebuilt source differs here */\n")
    name = Path(path).name
    defines = (
        "-DMODULE",
        f"-DKBUILD_MODNAME={name}",
        f"-DTOY_NAME={name}",
        f"-DTOY_SEED={seed}",
        f'-DTOY_DESC="{description}"',
    )
    obj = builder.compile(f"{path}.c", *defines, opt=mt.MODULE_OPT)
    mod = builder.compile(
        builder.copy_source("module/module.mod.c", f"{path}.mod.c"), *defines, opt=mt.MODULE_OPT
    )
    builder.run(builder.tools["ld"], "-r", "--build-id=none", "-o", f"{path}.ko", obj, mod)
    return work / f"{path}.ko"


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def hashed_tree(target: Path) -> Path:
    """The committed kbuild tree re-rooted: its .merkle files written, its vmlinux patched."""
    copy_tree(KBUILD, target)
    run = vmpatch("reroot", target)
    assert run.returncode == 0, run.stderr
    return target


def installed_from(hashed: Path, target: Path) -> Path:
    """A copy of ``hashed`` whose modules carry their proofs, as modules_install leaves them."""
    copy_tree(hashed, target)
    run = vmpatch("ko", "append-tree", target)
    assert run.returncode == 0, run.stderr
    return target


def trailer(signature: bytes, id_type: int) -> bytes:
    """struct module_signature and the marker after ``signature`` (sign-file's layout)."""
    return signature + struct.pack(">BBBBB3xI", 0, 0, id_type, 0, 0, len(signature)) + MARKER


def pkcs7_signed(data: bytes, scratch: Path) -> bytes:
    """``data`` with a PKCS#7 signature appended, as scripts/sign-file appends it."""
    module = scratch / "to-sign.ko"
    module.write_bytes(data)
    argv = ["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-md", "sha256"]
    argv += ["-signer", SIGNING / "cert.pem", "-inkey", SIGNING / "key.pem"]
    argv += ["-outform", "DER", "-in", module]
    der = tool(*argv).stdout
    return data + trailer(der, 2)


def order_stems(tree: Path) -> list[str]:
    return [line.removesuffix(".o") for line in (tree / "modules.order").read_text().split()]
