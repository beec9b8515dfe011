# SPDX-License-Identifier: GPL-2.0-or-later
"""The one way a result becomes JSON (docs/json.md is the vocabulary).

Every command's result is a dataclass (or a list of them inside one); this
module walks it (a ``@frozen`` record of the install hook's path,
:mod:`vmpatch.frozen`, is walked the same way: the hook cannot afford to
import :mod:`dataclasses`, so ``ko append`` results are such records), so
no result type has its own ``to_dict``. A result type can shape its
document with class attributes, read here and nowhere else:

* ``json_rename``: ``(field, key)`` pairs for a field whose JSON key differs
  (a module file is ``path`` in every document);
* ``json_skip``: fields that are not written (raw bytes, text for tables);
* ``json_hex``: int fields written as ``"0x..."`` strings, for 64-bit
  addresses and file offsets that jq and JavaScript would round as numbers;
* ``json_extra``: ``(key, attribute)`` pairs of properties written too.

Enums write their value when str-valued (``"ACCEPT"``, ``"merkle"``) and
their name otherwise (``"SHT_PROGBITS"``, ``"ET_EXEC"``). A root is always
``{"levels": N, "root": "<64 hex digits>"}`` or null. The CLI imports this
module on use; the lean install hook never does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from enum import Enum
from pathlib import PurePath
from typing import Any

from vmpatch import FORMAT_VERSION
from vmpatch.frozen import record_fields
from vmpatch.records.root import ModuleHashesRoot

__all__ = ["SCHEMAS", "document", "hex_or_none", "to_json"]

#: The shape version of each command's document: bumped when a key is added,
#: removed or changes type (1 was the unversioned shape before docs/json.md).
SCHEMAS: dict[str, int] = {
    "inspect": 2,
    "patch": 2,
    "tree": 2,
    "verify": 3,
    "reroot": 2,
    "diff": 1,
    "ko append": 2,
    "ko append-tree": 2,
    "ko strip-proof": 2,
    "ko strip": 2,
}


def hex_or_none(value: int | None) -> str | None:
    """``0xffffffff81000000`` (lowercase, no padding), or None."""
    return None if value is None else f"{value:#x}"


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, bool, None)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        return value.value if isinstance(value.value, str) else value.name
    if isinstance(value, (str, int, float)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, ModuleHashesRoot):
        return {"levels": value.levels, "root": value.digest.hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _document(value, [field.name for field in dataclasses.fields(value)])
    if (names := record_fields(value)) is not None:  # vmpatch.frozen: a dataclass's stand-in
        return _document(value, names)
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [to_json(item) for item in value]  # a list, a tuple, or a lazy sequence
    raise TypeError(f"no JSON form for {type(value).__name__}")


def _document(value: Any, names: Sequence[str]) -> dict[str, Any]:
    cls = type(value)
    rename = dict(getattr(cls, "json_rename", ()))
    skip: tuple[str, ...] = getattr(cls, "json_skip", ())
    hexed: tuple[str, ...] = getattr(cls, "json_hex", ())
    doc: dict[str, Any] = {}
    for name in names:
        if name in skip:
            continue
        item = getattr(value, name)
        key = rename.get(name, name)
        doc[key] = hex_or_none(item) if name in hexed else to_json(item)
    for key, attribute in getattr(cls, "json_extra", ()):
        doc[key] = to_json(getattr(value, attribute))
    return doc


def document(command: str, result: Any) -> dict[str, Any]:
    """The whole ``--json`` document of ``command``: always one object."""
    body = to_json(result)
    if not isinstance(body, dict):
        raise TypeError(f"{command}: a document is an object, not {type(body).__name__}")
    return {
        "format_version": FORMAT_VERSION,
        "schema": SCHEMAS[command],
        "command": command,
        **body,
    }
