# SPDX-License-Identifier: GPL-2.0-or-later
"""vmpatch.ko.modinfo against gcc-built objects, readelf and openssl-made signatures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clirun import tool, tool_text
from conftest import require_tool
from elfwriter import FORMS, SHF_ALLOC, Form, Section, build_elf
from hypothesis import given, settings
from hypothesis import strategies as st

from vmpatch.errors import InputError
from vmpatch.ko.modinfo import describe_pkcs7, read_modinfo

FIELDS = [
    "license=GPL",
    "author=Jane Doe <jane@example.org>",
    "description=test module with = in it",
    "alias=pci:v00008086d00001234sv*sd*bc*sc*i*",
    "alias=usb:v1234p5678d*",
    "depends=",
    "name=vmpatch_test",
    "vermagic=6.15.0 SMP preempt mod_unload ",
]


def _source() -> str:
    lines = []
    for i, field in enumerate(FIELDS):
        text = field.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(
            f'static const char mi{i}[] __attribute__((used, section(".modinfo"), aligned(1)))'
            f' = "{text}";'
        )
    lines.append("int init_module(void) { return 0; }")
    return "\n".join(lines) + "\n"


def _build(
    tmp_path: Path,
    extra: list[str] | None = None,
    source: str | None = None,
    gcc: str | None = None,
) -> Path:
    gcc = gcc or require_tool("gcc", "gcc")
    c_file = tmp_path / "mod.c"
    c_file.write_text(_source() if source is None else source)
    ko = tmp_path / "mod.ko"
    tool(gcc, "-c", "-g", "-O2", *(extra or []), "-o", ko, c_file)
    return ko


def _readelf_modinfo(path: Path) -> list[str]:
    """The strings ``readelf -p .modinfo`` shows, in order."""
    readelf = require_tool("readelf", "binutils")
    out = tool_text(readelf, "-p", ".modinfo", path)
    return [m.group(1) for m in re.finditer(r"^\s*\[\s*[0-9a-f]+\]\s\s(.*)$", out, re.M)]


def test_fields_match_readelf(tmp_path: Path) -> None:
    ko = _build(tmp_path)
    info = read_modinfo(ko.read_bytes(), ko)
    shown = _readelf_modinfo(ko)
    assert sorted(shown) == sorted(FIELDS)
    # gcc emits the strings in its own order: readelf's order is the file order.
    expected: dict[str, list[str]] = {}
    for line in shown:
        key, _, value = line.partition("=")
        expected.setdefault(key, []).append(value)
    assert info == expected
    assert sorted(info["alias"]) == sorted(f.partition("=")[2] for f in FIELDS[3:5])
    assert info["depends"] == [""]


def test_32bit_object(tmp_path: Path) -> None:
    """ELFCLASS32 objects parse too (i386 modules).

    Built with the i686 cross compiler, not ``gcc -m32``: Debian's
    gcc-multilib conflicts with several cross toolchains the suite needs.
    """
    gcc = require_tool("i686-linux-gnu-gcc", "gcc-i686-linux-gnu")
    ko = _build(tmp_path, gcc=gcc)
    assert ko.read_bytes()[4] == 1  # ELFCLASS32
    assert read_modinfo(ko.read_bytes(), ko)["license"] == [
        f.partition("=")[2] for f in _readelf_modinfo(ko) if f.startswith("license=")
    ]


def test_no_modinfo_section_is_empty(tmp_path: Path) -> None:
    ko = _build(tmp_path, source="int f(void) { return 1; }\n")
    assert read_modinfo(ko.read_bytes(), ko) == {}


def test_trailer_does_not_disturb_parsing(tmp_path: Path) -> None:
    ko = _build(tmp_path)
    data = ko.read_bytes() + b"\0" * 48 + b"~Module signature appended~\n"
    assert read_modinfo(data, ko)["license"] == ["GPL"]


def test_not_elf_and_not_rel(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an ELF file") as err:
        read_modinfo(b"hello world", tmp_path / "x.ko")
    assert "x.ko" in str(err.value)
    gcc = require_tool("gcc", "gcc")
    c_file = tmp_path / "main.c"
    c_file.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "a.out"
    tool(gcc, "-o", exe, c_file)
    with pytest.raises(InputError, match="ET_REL"):
        read_modinfo(exe.read_bytes(), exe)


def test_truncated_module(tmp_path: Path) -> None:
    ko = _build(tmp_path)
    data = ko.read_bytes()
    for cut in (20, 64, len(data) // 2):
        with pytest.raises(InputError) as err:
            read_modinfo(data[:cut], ko)
        assert str(ko) in str(err.value)


def _fuzz_base(modinfo: bytes = b"license=GPL\0name=x\0", form: Form = FORMS[1]) -> bytes:
    """A minimal valid ET_REL with only .modinfo (and .shstrtab), from the test ELF builder."""
    return build_elf([Section(".modinfo", data=modinfo, flags=SHF_ALLOC)], form=form).data


#: One fuzz base per ELF class and byte order, and the size of its ELF header.
_FUZZ_BASES = {form.id: (_fuzz_base(form=form), 52 if form.bits == 32 else 64) for form in FORMS}


@settings(max_examples=300, deadline=None)
@given(
    form=st.sampled_from(sorted(_FUZZ_BASES)),
    offset=st.integers(min_value=0, max_value=63),
    value=st.integers(0, 255),
)
def test_damaged_header_only_raises_input_error(form: str, offset: int, value: int) -> None:
    base, header_size = _FUZZ_BASES[form]
    data = bytearray(base)
    data[offset % header_size] = value
    try:
        read_modinfo(bytes(data), "fuzz.ko")
    except InputError as err:
        assert "fuzz.ko" in str(err)


@pytest.mark.parametrize("form", sorted(_FUZZ_BASES))
def test_hand_built_base_is_valid(form: str) -> None:
    base, _header_size = _FUZZ_BASES[form]
    assert read_modinfo(base, "base.ko") == {"license": ["GPL"], "name": ["x"]}


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.id)
def test_odd_strings(form: Form) -> None:
    """Padding NULs are skipped, a string without '=' keeps an empty value, bad UTF-8 shows."""
    data = _fuzz_base(b"\0\0flag\0author=J\xf6rg\0\0a=b=c\0", form)
    assert read_modinfo(data, "odd.ko") == {"flag": [""], "author": ["J\\xf6rg"], "a": ["b=c"]}


# --- PKCS#7 -------------------------------------------------------------------------------


def _openssl_sign(tmp_path: Path, module: Path) -> tuple[bytes, str, str]:
    """Sign like sign-file does; return (DER, serial hex, subject line) from openssl."""
    openssl = require_tool("openssl", "openssl")
    key, cert, sig = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "mod.sig"
    tool(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
         "/CN=vmpatch test key/", "-days", "1", "-keyout", key, "-out", cert)  # fmt: skip
    tool(openssl, "cms", "-sign", "-binary", "-noattr", "-nocerts", "-outform", "DER",
         "-md", "sha256", "-signer", cert, "-inkey", key, "-in", module,
         "-out", sig)  # fmt: skip
    shown = tool_text(openssl, "x509", "-noout", "-serial", "-subject", "-in", cert)
    serial = re.search(r"^serial=([0-9A-F]+)$", shown, re.M)
    subject = re.search(r"^subject=(.*)$", shown, re.M)
    assert serial and subject, shown
    return sig.read_bytes(), serial.group(1), subject.group(1)


def test_pkcs7_signer_matches_openssl(tmp_path: Path) -> None:
    module = tmp_path / "mod.ko"
    module.write_bytes(b"\x7fELF" + bytes(1000))
    der, serial, subject = _openssl_sign(tmp_path, module)
    info = describe_pkcs7(der, path=module)
    assert "vmpatch test key" in subject
    assert info.signer == "vmpatch test key"
    hex_serial = serial if len(serial) % 2 == 0 else "0" + serial
    expected = ":".join(hex_serial[i : i + 2] for i in range(0, len(hex_serial), 2))
    assert info.key_id == expected
    assert info.hash_algo == "sha256"
    assert info.signature_algo == "rsassa_pkcs1v15"


@pytest.mark.parametrize(
    "blob", [b"", b"\x30\x03\x02\x01", b"not der at all", b"\x30\x80" + bytes(10)]
)
def test_malformed_pkcs7_is_input_error(blob: bytes) -> None:
    with pytest.raises(InputError, match=r"mod\.ko"):
        describe_pkcs7(blob, path="mod.ko")


def test_truncated_real_signature_is_input_error(tmp_path: Path) -> None:
    module = tmp_path / "mod.ko"
    module.write_bytes(b"\x7fELF" + bytes(100))
    der, _serial, _subject = _openssl_sign(tmp_path, module)
    for cut in (10, len(der) // 2, len(der) - 1):
        with pytest.raises(InputError):
            describe_pkcs7(der[:cut], path=module)


def test_inspect_shows_no_dependencies_as_an_empty_list(tmp_path: Path) -> None:
    """``depends=`` (what modpost writes for a module without dependencies) is ``[]``,
    not a list holding one empty module name."""
    from clirun import vmpatch

    ko = _build(tmp_path)
    assert "depends=" in _readelf_modinfo(ko)  # the raw field is there, empty
    run = vmpatch("inspect", "--json", ko)
    assert run.returncode == 0, run.stderr
    (module,) = run.json()["files"]
    assert module["modinfo"]["depends"] == []
    assert module["modinfo"]["license"] == ["GPL"]
