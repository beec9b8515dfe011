# SPDX-License-Identifier: GPL-2.0-or-later
"""pyelftools' exceptions in vmpatch's terms: the one translator for its callers.

pyelftools reports malformed input through its own ``ELFError`` family, and
through whatever its parsers meet on the way: construct's ``ConstructError``
and ``StreamError``, ``struct.error``, ``ValueError``, ``EOFError``, and
``IndexError``/``KeyError`` from tables indexed by corrupt fields,
``OverflowError`` from seeks to offsets no file has. Every parse
through pyelftools (:mod:`vmpatch.ko.modinfo`'s, of modules; kernel images
are decoded by :mod:`vmpatch.elf.reader` itself) runs inside :func:`elf_errors`, so
a hostile file always ends as one :class:`~vmpatch.errors.InputError`
naming it, and the list of what counts as "malformed" lives here only.

pyelftools is imported when the context is entered, never at import time,
so lean layers may import this module inside their functions.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from vmpatch.errors import InputError, VmpatchError

__all__ = ["elf_errors"]

#: Exceptions pyelftools' parsers raise on malformed input besides its own.
_PARSER_ERRORS: tuple[type[Exception], ...] = (
    struct.error,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    OverflowError,  # a seek to an offset field beyond ssize_t (found by scripts/fuzz elf)
)


@contextmanager
def elf_errors(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Turn pyelftools' exceptions raised inside into ``InputError(path, "malformed ELF: ...")``.

    vmpatch's own errors pass through unchanged, and so does anything that
    is not a parser's complaint (an OSError stays an OSError for its caller
    to word as a system failure).
    """
    from elftools.common.exceptions import ELFError

    try:
        yield
    except VmpatchError:
        raise
    except ELFError as err:
        raise InputError(path, f"malformed ELF: {err}") from err
    except _PARSER_ERRORS as err:
        raise InputError(path, f"truncated or malformed ELF: {err}") from err
    except Exception as err:  # construct's errors, without importing construct's module tree
        if type(err).__module__.startswith(("construct", "elftools")):
            raise InputError(path, f"truncated or malformed ELF: {err}") from err
        raise
