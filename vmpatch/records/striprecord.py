# SPDX-License-Identifier: GPL-2.0-or-later
"""The strip records: how a tree's modules were stripped before they were hashed.

Two records exist. kbuild (patch 14 of the series) writes the build-time
INSTALL_MOD_STRIP as ``CONFIG_MODULE_INSTALL_STRIP`` into
``include/config/auto.conf``; vmpatch's ``vmpatch ko strip --tree`` writes
``vmpatch-strip.json``, which also names the strip program and its version
(docs/format.md section 5). Both are read here, standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmpatch.errors import InputError, SystemFailure
from vmpatch.frozen import frozen, record_fields
from vmpatch.fs.atomic import atomic_write

__all__ = [
    "RECORD_NAME",
    "StripRecord",
    "auto_conf_install_strip",
    "read_record",
    "write_record",
]

RECORD_NAME = "vmpatch-strip.json"
"""The file next to a tree that records how its modules were stripped."""

_CONFIG_KEY = "CONFIG_MODULE_INSTALL_STRIP="


@frozen
class StripRecord:
    """How a tree's modules were stripped: the input and the exact tool.

    ``install_mod_strip`` is the INSTALL_MOD_STRIP value (``None`` when
    unset); ``program`` is ``$(STRIP)`` as given; ``program_path`` is the
    resolved executable (symlinks followed) and ``version`` the first line of
    ``program --version``. Both are ``None`` when nothing was stripped.
    """

    install_mod_strip: str | None
    program: str
    program_path: str | None = None
    version: str | None = None


def read_record(directory: str | os.PathLike[str]) -> StripRecord | None:
    """Read ``vmpatch-strip.json`` from ``directory``; ``None`` when it is absent."""
    path = Path(directory) / RECORD_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from None
    import json  # here: `vmpatch tree` asks for a record most trees lack (2.5 ms)

    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
        record = StripRecord(**raw)
    except (ValueError, TypeError) as err:
        raise InputError(path, f"not a valid strip record: {err}") from None
    for name in ("install_mod_strip", "program_path", "version"):
        if not isinstance(getattr(record, name), (str, type(None))):
            raise InputError(path, f"not a valid strip record: {name} is not a string")
    if not isinstance(record.program, str):
        raise InputError(path, "not a valid strip record: program is not a string")
    return record


def write_record(directory: str | os.PathLike[str], record: StripRecord) -> Path:
    """Write ``record`` as ``vmpatch-strip.json`` in ``directory`` atomically; return its path."""
    path = Path(directory) / RECORD_NAME
    import json

    document = {name: getattr(record, name) for name in record_fields(record) or ()}
    text = json.dumps(document, sort_keys=True, indent=2) + "\n"
    atomic_write(path, text.encode("utf-8"))
    return path


def _unquote_kconfig(value: str) -> str | None:
    """Undo kconfig's string quoting (``"..."``, ``\\`` escaping ``"`` and ``\\``).

    ``None`` when ``value`` is not one well-formed quoted string.
    """
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        return None
    out: list[str] = []
    i, end = 1, len(value) - 1
    while i < end:
        ch = value[i]
        if ch == "\\":
            i += 1
            if i >= end:
                return None
            ch = value[i]
        elif ch == '"':
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def auto_conf_install_strip(
    build_dir: str | os.PathLike[str], *, missing_ok: bool = False
) -> str | None:
    """CONFIG_MODULE_INSTALL_STRIP as recorded in ``include/config/auto.conf``.

    A missing auto.conf (an unconfigured tree, or not a kbuild tree at all)
    is an :class:`InputError`, or ``None`` with ``missing_ok``: the one way
    every caller reads "kbuild's record, if there is one".
    ``None`` also when the line is absent: the kernel has no such record (a
    kernel without the series, or MODULES=n). Since Linux 5.18 (commit
    129ab0d2d9f3) kconfig writes string values *unquoted* in auto.conf so
    make can use them directly, and the series relies on that
    (``ifneq ($(CONFIG_MODULE_INSTALL_STRIP),)``); an empty value is then
    ``CONFIG_MODULE_INSTALL_STRIP=``. A value in kconfig's quoted form
    (``"..."`` with backslash escapes, as in ``.config`` and older auto.conf)
    is unquoted too; anything else is taken verbatim, as make takes it.
    """
    path = Path(build_dir) / "include" / "config" / "auto.conf"
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return None
        raise InputError(
            path, "missing: the build tree is not configured", hint="run make first"
        ) from None
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from None
    found: str | None = None
    for line in text.splitlines():
        if line.startswith(_CONFIG_KEY):
            found = line[len(_CONFIG_KEY) :]
    if found is None:
        return None
    unquoted = _unquote_kconfig(found)
    return found if unquoted is None else unquoted
