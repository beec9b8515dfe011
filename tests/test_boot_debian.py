# SPDX-License-Identifier: GPL-2.0-or-later
"""Opt-in (VMPATCH_DEBIAN_IMAGES=1): `inspect` recognises Debian's real kernel images.

For each arch, Debian's 6.12 image package is fetched with ``apt-get
download`` (never installed) through a private APT configuration
(``APT_CONFIG``: its own sources, lists and cache under
``$VMPATCH_DEBIAN_CACHE`` or ``~/.cache/vmpatch-debian``), unpacked with
``dpkg-deb -x``, and its ``/boot/vmlinuz-*`` (``vmlinux-*`` on ppc64el) read.
amd64 and arm64 come from bookworm(-security); armhf, ppc64el, s390x and
riscv64 6.12 only from trixie. Debian's kernels do not have the series, so
the expected answer is "no hash-based module authentication" where the image
holds an ELF, else "cannot tell" (the System.map beside it is Debian's
placeholder, which must be recognised as such).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from clirun import Run, tool, tool_text, vmpatch
from conftest import require_tool

pytestmark = pytest.mark.skipif(
    os.environ.get("VMPATCH_DEBIAN_IMAGES") != "1",
    reason="downloads Debian kernel packages; set VMPATCH_DEBIAN_IMAGES=1",
)

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
SUITES = {suite: (DEBIAN, suite, SECURITY, f"{suite}-security") for suite in ("bookworm", "trixie")}

#: arch -> (suite, package flavour, expected chain start, expected arch, byte order, hashes)
ARCHES = {
    "amd64": ("bookworm", "amd64", "bzImage > ", "x86_64", "little", "absent"),
    "arm64": ("bookworm", "arm64", "", "aarch64", "little", "unknown"),
    "armhf": ("trixie", "armmp", "zImage > ", "arm", "little", "unknown"),
    "ppc64el": ("trixie", "powerpc64le", "ELF", "ppc64le", "little", "absent"),
    "s390x": ("trixie", "s390x", "s390 image > ", "s390x", "big", "unknown"),
    "riscv64": ("trixie", "riscv64", "", "riscv64", "little", "unknown"),
}


def only(run: Run) -> dict[str, Any]:
    """The one file entry of an ``inspect --json`` document (docs/json.md: always a list)."""
    document = run.json()
    assert document["command"] == "inspect", document
    (entry,) = document["files"]
    return dict(entry)


def _cache() -> Path:
    root = os.environ.get("VMPATCH_DEBIAN_CACHE") or Path.home() / ".cache" / "vmpatch-debian"
    return Path(root)


def _apt(suite: str, arch: str) -> dict[str, str]:
    """A private APT_CONFIG for ``suite`` and ``arch``: none of the system's apt state.

    Returns the variables to add to the environment of apt-get and apt-cache.
    """
    base = _cache() / f"{suite}-{arch}"
    for sub in ("lists/partial", "archives/partial", "etc/preferences.d", "etc/apt.conf.d"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    main, main_suite, security, security_suite = SUITES[suite]
    (base / "etc/sources.list").write_text(
        f"deb [arch={arch} signed-by={KEYRING}] {main} {main_suite} main\n"
        f"deb [arch={arch} signed-by={KEYRING}] {security} {security_suite} main\n"
    )
    (base / "apt.conf").write_text(
        f'APT::Architecture "{arch}";\nAPT::Architectures {{ "{arch}"; }};\n'
        f'Dir::State::Lists "{base}/lists";\nDir::State::status "/dev/null";\n'
        f'Dir::Cache "{base}";\nDir::Cache::archives "{base}/archives";\n'
        f'Dir::Etc::SourceList "{base}/etc/sources.list";\nDir::Etc::SourceParts "-";\n'
        f'Dir::Etc::Preferences "{base}/etc/preferences";\n'
        f'Dir::Etc::PreferencesParts "{base}/etc/preferences.d";\n'
        f'Dir::Etc::Parts "{base}/etc/apt.conf.d";\n'
    )
    return {"APT_CONFIG": str(base / "apt.conf")}


def _fetch(arch: str) -> Path:
    """Debian's newest 6.12 image package for ``arch``, downloaded (cached) and unpacked."""
    suite, flavour, *_ = ARCHES[arch]
    env = _apt(suite, arch)
    base = _cache() / f"{suite}-{arch}"
    unpacked = base / "unpacked"
    if unpacked.is_dir() and any((unpacked / "boot").glob("vmlinu*")):
        return unpacked
    apt_get = require_tool("apt-get", "apt")
    tool(apt_get, "-qq", "update", env=env)
    names = tool_text("apt-cache", "pkgnames", "linux-image-6.12", env=env).split()
    pattern = re.compile(rf"linux-image-6\.12\.\d+\+deb\d+-{flavour}(-unsigned)?$")
    wanted = sorted(
        (n for n in names if pattern.match(n)),
        key=lambda n: [int(x) for x in re.findall(r"\d+", n)[:4]],
    )
    assert wanted, f"no 6.12 image package for {arch} in {suite}"
    # Newest first; a mirror may lack the newest security upload of a port, so fall back.
    for name in reversed(wanted):
        fetched = tool(apt_get, "-qq", "download", f"{name}:{arch}", cwd=base, env=env, check=False)
        if fetched.returncode == 0:
            break
    else:
        pytest.fail(f"apt-get download failed for every one of {wanted}")
    deb = max(base.glob("linux-image-6.12*.deb"), key=lambda p: p.stat().st_mtime)
    unpacked.mkdir(exist_ok=True)
    tool("dpkg-deb", "-x", deb, unpacked)
    return unpacked


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_inspect_recognises_debian_image(arch: str) -> None:
    _, _, chain_start, machine, order, hashes = ARCHES[arch]
    root = _fetch(arch)
    images = sorted((root / "boot").glob("vmlinu[xz]-*"))
    assert images, f"no /boot/vmlinu[xz]-* in the {arch} package"
    run = vmpatch("inspect", "--json", images[0])
    assert run.returncode == 0, run.stderr
    facts = only(run)
    chain = " > ".join(facts["chain"])
    assert chain.startswith(chain_start), chain
    assert facts["arch"] == machine
    assert facts["byteorder"] == order
    assert facts["version"].startswith("Linux version 6.12."), facts["version"]
    assert facts["module_hashes"] == hashes, facts["evidence"]
