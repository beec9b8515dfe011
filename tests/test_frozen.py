# SPDX-License-Identifier: GPL-2.0-or-later
"""``@frozen`` behaves as ``@dataclass(frozen=True)`` for what the hook's records use.

The evidence is the standard library itself: each check builds the same
class with both decorators and compares what they do.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import ClassVar

import pytest

from vmpatch.frozen import FrozenInstanceError, frozen, record_fields


class _Shape:
    """The body both decorators get: required and defaulted fields, a ClassVar, a check."""

    kind: str
    size: int
    label: str | None = None
    flag: bool = False
    table: ClassVar[int] = 3

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("negative size")


def _both() -> tuple[type, type]:
    def make(decorate: object) -> type:
        body = {k: v for k, v in vars(_Shape).items() if k not in ("__dict__", "__weakref__")}
        cls = type("Shape", (), body)
        cls.__qualname__ = "Shape"
        return decorate(cls)  # type: ignore[operator,no-any-return]

    return make(frozen), make(dataclasses.dataclass(frozen=True))


#: Picklable module-level record for the pickle round trip.
@frozen
class Pickled:
    name: str
    count: int = 1


def test_fields_defaults_and_classvars_match_dataclasses() -> None:
    ours, theirs = _both()
    assert record_fields(ours("a", 1)) == tuple(f.name for f in dataclasses.fields(theirs))
    assert record_fields(ours) is None and record_fields(3) is None
    for args, kwargs in (((), {"kind": "a", "size": 1}), (("a", 2, "x", True), {})):
        mine, ref = ours(*args, **kwargs), theirs(*args, **kwargs)
        assert repr(mine) == repr(ref)
        assert hash(mine) == hash(ref)
        assert mine.__match_args__ == ref.__match_args__


def test_equality_is_by_class_and_fields() -> None:
    ours, theirs = _both()
    assert ours("a", 1) == ours("a", 1, None, False)
    assert ours("a", 1) != ours("a", 2)
    assert ours("a", 1) != theirs("a", 1)  # another class with the same fields
    assert ours("a", 1) != ("a", 1, None, False)


def test_frozen_post_init_and_argument_errors_match_dataclasses() -> None:
    ours, theirs = _both()
    for cls in (ours, theirs):
        item = cls("a", 1)
        with pytest.raises(AttributeError):
            item.size = 2
        with pytest.raises(AttributeError):
            del item.kind
        with pytest.raises(ValueError, match="negative size"):
            cls("a", -1)
        with pytest.raises(TypeError):
            cls("a")
        with pytest.raises(TypeError):
            cls("a", 1, nope=2)
    with pytest.raises(FrozenInstanceError):
        ours("a", 1).size = 2


def test_a_required_field_after_a_default_is_refused() -> None:
    class Bad:
        first: int = 0
        second: int

    with pytest.raises(TypeError, match="non-default field 'second'"):
        frozen(Bad)


def test_copies_and_pickles_keep_the_value() -> None:
    item = Pickled("x", 2)
    assert pickle.loads(pickle.dumps(item)) == item
    assert copy.deepcopy(item) == item and copy.copy(item) == item
