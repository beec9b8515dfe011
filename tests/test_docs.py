# SPDX-License-Identifier: GPL-2.0-or-later
"""The documents the code leans on say what the code claims they say.

Code, tests and docs cite the format spec as "docs/format.md section N"; a
citation of a section that does not exist (renumbered, never written) sends
a reader nowhere. README.md and ARCHITECTURE.md must link the spec, and every
package a test names for a missing tool must be one ``scripts/setup-tests``
installs, or README's "the second command installs what the tests need" is
wrong on a fresh machine.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORMAT = ROOT / "docs" / "format.md"

#: A citation, also when a line break (and a comment marker) splits it.
CITATION = re.compile(r"docs/format\.md[\s#*]*section\s+(\d+)", re.IGNORECASE)
#: A numbered top-level section of docs/format.md: "## 3. Title".
HEADING = re.compile(r"^## (\d+)\. (.+)$", re.MULTILINE)

#: Not the project's own text: VCS data, environments, build output, test data.
_SKIP_DIRS = {
    ".git",
    ".venv",
    "__pycache__",
    "testdata",
    ".mypy_cache",
    ".ruff_cache",
    "build",
    "dist",
}
_TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".1", ".sh", ""}


def _text_files() -> list[tuple[Path, str]]:
    """Every text file of the project that may cite the spec, with its text."""
    found = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(top) / name
            if path.suffix not in _TEXT_SUFFIXES:
                continue
            try:
                found.append((path, path.read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                continue
    return found


def _sections() -> dict[int, str]:
    return {int(n): title for n, title in HEADING.findall(FORMAT.read_text(encoding="utf-8"))}


def _citations() -> list[tuple[str, int]]:
    cites = []
    for path, text in _text_files():
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            cites.append((f"{path.relative_to(ROOT)}:{line}", int(match.group(1))))
    return cites


def test_sections_are_numbered_one_to_six_in_order() -> None:
    """The code cites sections 1-6 by number; they exist once each, in order."""
    numbers = [int(n) for n, _ in HEADING.findall(FORMAT.read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) >= 6


def test_sections_keep_their_topics() -> None:
    """A citation relies on the topic as much as the number: renumbering must fail here."""
    titles = _sections()
    expected = {
        1: ".module_hashes",
        2: "tree",
        3: "proof",
        4: "kernel checks",
        5: "INSTALL_MOD_STRIP",
        6: "modules_install",
    }
    for number, word in expected.items():
        assert word in titles[number], (number, titles[number])


def test_the_repository_cites_the_spec() -> None:
    """The scan below must see the citations the code is known to make, or it checks nothing."""
    cited = {n for _, n in _citations()}
    assert {1, 2, 3, 4, 5, 6} <= cited


@pytest.mark.parametrize(("where", "number"), _citations())
def test_every_citation_names_an_existing_section(where: str, number: int) -> None:
    assert number in _sections(), f"{where} cites docs/format.md section {number}, which is missing"


def test_no_reference_points_to_the_workspace_format_file() -> None:
    """Every reference to the format spec points at docs/format.md, not a copy outside the tree."""
    stray = []
    for path, text in _text_files():
        for match in re.finditer(r"(?<![\w/])FORMAT\.md", text):
            stray.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}")
    assert not stray


def _github_anchor(title: str) -> str:
    """The fragment GitHub (and most Markdown renderers) give a heading."""
    slug = title.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def test_table_of_contents_links_resolve() -> None:
    text = FORMAT.read_text(encoding="utf-8")
    anchors = {_github_anchor(f"{n}. {title}") for n, title in HEADING.findall(text)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "docs/format.md has no table of contents"
    assert set(links) <= anchors, set(links) - anchors


@pytest.mark.parametrize("document", ["README.md", "ARCHITECTURE.md"])
def test_readme_and_architecture_link_the_spec(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    assert "](docs/format.md)" in text


def test_spec_names_the_format_version_vmpatch_prints() -> None:
    """The header says which format vmpatch implements: the one --version prints."""
    from vmpatch import FORMAT_VERSION

    head = FORMAT.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert FORMAT_VERSION in head
    assert "version 5" in head.lower() or "v5" in head


def _setup_tests_packages() -> set[str]:
    """The Debian packages listed in scripts/setup-tests' ``packages=( ... )`` array."""
    text = (ROOT / "scripts" / "setup-tests").read_text(encoding="utf-8")
    match = re.search(r"^packages=\((.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert match, "scripts/setup-tests has no packages=( ... ) list"
    return set(shlex.split(match.group(1), comments=True))


def _packages_named_by_tests() -> set[tuple[str, str]]:
    """(test file, package) for every ``require_tool(..., "package")`` with a literal package."""
    named = set()
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "require_tool"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                named.add((path.name, node.args[1].value))
            if (  # a module-level tool -> package table: PACKAGES = {"xz": "xz-utils"}
                isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "PACKAGES" for t in node.targets)
                and isinstance(node.value, ast.Dict)
            ):
                for value in node.value.values:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        named.add((path.name, value.value))
    return named


def test_setup_tests_installs_every_package_a_test_names() -> None:
    """README promises that setup-tests installs what the tests need (issue: a fresh bookworm)."""
    installed = _setup_tests_packages()
    named = _packages_named_by_tests()
    assert named, "no require_tool(..., package) found: the scan is broken"
    missing = sorted(f"{where}: {pkg}" for where, pkg in named if pkg not in installed)
    assert not missing


def test_setup_tests_installs_the_c_library_for_linked_programs() -> None:
    """A test links a C program; a minimal Debian has gcc's deps but not crt1.o without this."""
    assert "libc6-dev" in _setup_tests_packages()
