# SPDX-License-Identifier: GPL-2.0-or-later
"""INSTALL_MOD_STRIP over a tree: make ``%.ko.stripped``, record, check consistency.

With MODULE_HASHES the bytes hashed must be the bytes installed, so kbuild
(patch 14 of the series) strips a copy of each module into ``%.ko.stripped``
at build time, hashes those, records INSTALL_MOD_STRIP as
CONFIG_MODULE_INSTALL_STRIP, and refuses an install with another value
(docs/format.md section 5). This module does the same for any tree: it makes the
stripped copies with kbuild's command (via :mod:`vmpatch.ko.strip`), writes
vmpatch's own record where kbuild left none, and checks an install-time
value (and strip program) against whichever record exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmpatch.errors import InputError, MismatchError, UsageError

__all__ = [
    "StripCheck",
    "StripReport",
    "StrippedModule",
    "check_strip_consistency",
    "make_stripped",
    "make_stripped_tree",
]


@dataclass(frozen=True)
class StrippedModule:
    """One ``%.ko.stripped`` made from its ``%.ko``."""

    json_rename = (("source", "path"),)  # vmpatch.cli.jsonout: a module file is "path"

    source: Path
    stripped: Path


@dataclass(frozen=True)
class StripReport:
    """What ``vmpatch ko strip`` made, and with which INSTALL_MOD_STRIP and program."""

    install_mod_strip: str
    program: str
    record: Path | None
    modules: tuple[StrippedModule, ...]


def _shown(value: str | None) -> str:
    return repr(value or "")


def check_strip_consistency(
    build_dir: str | os.PathLike[str],
    install_mod_strip: str | None,
    program: str | None = None,
) -> None:
    """Refuse an INSTALL_MOD_STRIP (or strip program) that differs from the build's.

    The proofs were computed over modules stripped at build time; installing
    with a different value (or another strip tool, which gives other bytes)
    makes every proof wrong (docs/format.md section 5). kbuild's record is
    CONFIG_MODULE_INSTALL_STRIP in ``include/config/auto.conf``; vmpatch's own
    ``vmpatch-strip.json`` (written by ``vmpatch ko strip --tree``) also names
    the program and its version, which are compared when ``program`` is given.
    Raises :class:`MismatchError` naming both values; :class:`InputError`
    when the tree records neither.
    """
    from vmpatch.ko.strip import probe_program, strip_options
    from vmpatch.records.striprecord import RECORD_NAME, auto_conf_install_strip, read_record

    build_dir = Path(build_dir)
    now = install_mod_strip or ""
    kbuild_value = auto_conf_install_strip(build_dir, missing_ok=True)
    record = read_record(build_dir)
    if kbuild_value is None and record is None:
        raise InputError(
            build_dir,
            "no build-time INSTALL_MOD_STRIP to compare with (neither "
            f"CONFIG_MODULE_INSTALL_STRIP in include/config/auto.conf nor {RECORD_NAME})",
        )
    for then in (kbuild_value, record.install_mod_strip if record is not None else None):
        if then is not None and then != now:
            raise MismatchError(
                build_dir,
                f"INSTALL_MOD_STRIP is {_shown(now)} at install time but {_shown(then)} "
                "at build time",
            )
    if record is not None and record.install_mod_strip is None and now:
        raise MismatchError(
            build_dir, f"INSTALL_MOD_STRIP is {_shown(now)} at install time but '' at build time"
        )
    if record is None or program is None or strip_options(now or None) is None:
        return
    if program != record.program:
        raise MismatchError(
            build_dir,
            f"strip program is {program!r} at install time but {record.program!r} at build time",
        )
    if record.version is not None:
        probed = probe_program(now, program)
        if probed.version != record.version:
            raise MismatchError(
                build_dir,
                f"{program} is {probed.version!r} at install time but {record.version!r} "
                "at build time",
            )


@dataclass(frozen=True)
class StripCheck:
    """A deferred :func:`check_strip_consistency`, run before any file changes."""

    build_dir: Path
    install_mod_strip: str | None
    program: str | None = None

    def __call__(self) -> None:
        check_strip_consistency(self.build_dir, self.install_mod_strip, self.program)


def make_stripped(
    modules: Sequence[str | os.PathLike[str]],
    install_mod_strip: str | None,
    program: str,
    *,
    echo: Callable[[str], None] | None = None,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> list[StrippedModule]:
    """Make ``%.ko.stripped`` beside each ``%.ko`` with kbuild's strip command.

    Each ``%.ko`` is locked (:func:`vmpatch.fs.lock.locked`) while its
    stripped copy is made, so two strips of one module never interleave.
    """
    from vmpatch.fs.lock import locked

    with locked(list(modules), wait=wait, waiting=waiting, missing_ok=True):
        return _make_stripped(modules, install_mod_strip, program, echo)


def _make_stripped(
    modules: Sequence[str | os.PathLike[str]],
    install_mod_strip: str | None,
    program: str,
    echo: Callable[[str], None] | None,
) -> list[StrippedModule]:
    from vmpatch.ko.strip import strip_modules, strip_options

    pairs = []
    for module in modules:
        src = Path(module)
        if src.suffix != ".ko":
            raise UsageError(src, "not a .ko file (strip the uncompressed module as built)")
        pairs.append((src, src.with_name(src.name + ".stripped")))
    strip_modules(pairs, strip_options(install_mod_strip), program, echo=echo)
    return [StrippedModule(src, dst) for src, dst in pairs]


def make_stripped_tree(
    build_dir: str | os.PathLike[str],
    install_mod_strip: str | None,
    program: str,
    *,
    echo: Callable[[str], None] | None = None,
    wait: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> tuple[list[StrippedModule], Path | None]:
    """Strip every module of modules.order; return them and the record written, if any.

    When the tree carries kbuild's own record (CONFIG_MODULE_INSTALL_STRIP)
    it must agree with ``install_mod_strip``; otherwise vmpatch writes its
    record ``vmpatch-strip.json`` (value, program, version) so a later append
    can check consistency. The build directory is locked for the whole run.
    """
    from vmpatch.fs.lock import locked

    with locked([build_dir], wait=wait, waiting=waiting, missing_ok=True):
        return _make_stripped_tree(Path(build_dir), install_mod_strip, program, echo)


def _make_stripped_tree(
    build_dir: Path,
    install_mod_strip: str | None,
    program: str,
    echo: Callable[[str], None] | None,
) -> tuple[list[StrippedModule], Path | None]:
    from vmpatch.ko.strip import probe_program
    from vmpatch.records.striprecord import auto_conf_install_strip, write_record
    from vmpatch.workflow.tree import plan_tree

    kbuild_value = auto_conf_install_strip(build_dir, missing_ok=True)
    if kbuild_value is not None and kbuild_value != (install_mod_strip or ""):
        raise MismatchError(
            build_dir,
            f"INSTALL_MOD_STRIP is {_shown(install_mod_strip)} now but {_shown(kbuild_value)} "
            "in include/config/auto.conf",
        )
    plan = plan_tree(build_dir, suffix=".ko", refuse_trailers=False)
    record = probe_program(install_mod_strip or None, program) if kbuild_value is None else None
    made = _make_stripped([m.module for m in plan.modules], install_mod_strip, program, echo=echo)
    written = write_record(build_dir, record) if record is not None else None
    return made, written
