# SPDX-License-Identifier: GPL-2.0-or-later
"""``@frozen``: immutable value classes for the install hook's import path.

Why not :mod:`dataclasses`: it imports :mod:`inspect` (and with it ``ast``,
``dis``, ``tokenize``), which measured 20-28 ms of a ``vmpatch-ko-append``
call whose whole run took 83 ms against 47 ms for ``python -c pass``
(``python -X importtime``, this 2-core machine, issue 12); kbuild runs the
hook about 5000 times per kernel. The records the hook touches (errors,
trailers, the root record, module contents, append results) use this
decorator instead, and so do the records on the start-up path of ``vmpatch
patch`` and ``vmpatch tree`` (ELF facts, the root's location, plans and
results): each ``@dataclass(frozen=True)`` costs 1-2 ms to create (it
compiles six methods), 24 ms for the eleven of ``patch``, whose whole run is
held to a tenth of objcopy's (issue 12). The rest keeps ``@dataclass``.

It does the subset of ``@dataclass(frozen=True)`` those records use, with
the same behaviour: fields are the class's own annotations (in order, a
class attribute of that name is the default, ``ClassVar`` ones are not
fields), ``__init__`` takes them positionally or by name and calls
``__post_init__`` when the class has one, ``__eq__`` compares instances of
the same class field by field, ``__hash__`` hashes the fields, ``__repr__``
reads ``Name(field=value, ...)``, and assigning or deleting an attribute
raises :class:`FrozenInstanceError`. Not supported: ``field()``, inheritance
between records, ordering, ``dataclasses.replace``. :func:`record_fields`
lists the fields; :mod:`vmpatch.cli.jsonout` reads it as it reads
``dataclasses.fields``. For type checkers the decorator is
``dataclass_transform``-ed, so mypy checks constructor calls as for a dataclass.

Standard library only, and only what the interpreter has loaded at start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform

    _T = TypeVar("_T")

__all__ = ["FrozenInstanceError", "frozen", "record_fields"]

#: Where the decorator stores the field names, in order.
_FIELDS = "__record_fields__"


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen record (as ``dataclasses.FrozenInstanceError``)."""


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return isinstance(text, str) and text.split("[")[0].split(".")[-1] == "ClassVar"


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _make_frozen(cls: type) -> type:
    # The class's own annotations, as written (strings under ``from __future__
    # import annotations``); inspect.get_annotations is what this module avoids.
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    names = tuple(name for name, kind in annotations.items() if not _is_classvar(kind))
    defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
    params = []
    for name in names:
        if name in defaults:
            params.append(f"{name}=_defaults[{name!r}]")
        elif params and "=" in params[-1]:
            raise TypeError(f"non-default field {name!r} follows a default one in {cls.__name__}")
        else:
            params.append(name)
    # Stores into the instance dict: half the time of object.__setattr__ per field
    # (0.63 against 1.16 us for four), which counts at 4230 entries of modules.order.
    body = ["    _frozen_dict_ = self.__dict__"] if names else []
    body += [f"    _frozen_dict_[{name!r}] = {name}" for name in names]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass")
    scope: dict[str, Any] = {"_defaults": defaults}
    exec(source, scope)  # one small function, as dataclasses generates its __init__
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"

    def values(self: object) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in names)

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return values(self) == values(other)

    def __hash__(self: object) -> int:
        return hash(values(self))

    def __repr__(self: object) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({shown})"

    for method in (__eq__, __hash__, __repr__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
    members: dict[str, object] = {
        "__init__": init,
        "__eq__": __eq__,
        "__hash__": __hash__,
        "__repr__": __repr__,
        "__setattr__": _frozen_setattr,
        "__delattr__": _frozen_delattr,
        "__match_args__": names,
        _FIELDS: names,
    }
    for name, member in members.items():
        setattr(cls, name, member)
    return cls


if TYPE_CHECKING:

    @dataclass_transform(frozen_default=True)
    def frozen(cls: type[_T]) -> type[_T]:
        """Make ``cls`` an immutable value class (see the module docstring)."""
        ...

else:
    frozen = _make_frozen


def record_fields(value: object) -> tuple[str, ...] | None:
    """The field names of a ``@frozen`` instance, in order; None for anything else."""
    if isinstance(value, type):
        return None
    names = getattr(type(value), _FIELDS, None)
    return names if isinstance(names, tuple) else None
