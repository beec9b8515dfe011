# SPDX-License-Identifier: GPL-2.0-or-later
"""Decoding a compressed stream without letting its output grow past a bound.

A few compressed bytes can expand a thousandfold (a zstd RLE block turns 4
bytes into 128 KiB), so no reader asks a decoder for everything at once:
:func:`bounded_decode` pulls the output piece by piece and stops as soon as it
passes the caller's bound, before allocating more.

Two readers decode streams, on purpose with different rules: the kernel's
module decompressor (:mod:`vmpatch.ko.kdecompress`) and the boot payloads'
decompressors (:mod:`vmpatch.boot.codecs`). What they accept and how they
fail stay in those modules; this loop, and the adapters that give the standard
library's decompressor objects one interface, are what they share.

Standard library only at import time; ``zstandard`` is imported on first use.
"""

from __future__ import annotations

#: typing loads only for type checkers (mypy reads this constant as true): the
#: install hook imports this module (vmpatch.frozen says what its imports cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "Decoder",
    "LimitExceeded",
    "OneCallStream",
    "ZlibStream",
    "ZstdStream",
    "bounded_decode",
]

OUTPUT_CHUNK = 1024 * 1024
"""Largest piece of output requested from a decompressor at once."""


class LimitExceeded(Exception):
    """The decoded bytes exceed the caller's bound (a limit of vmpatch, not a format rule)."""

    def __init__(self, max_size: int) -> None:
        super().__init__(f"decompressed size exceeds {max_size} bytes")
        self.max_size = max_size


class Decoder:
    """A streaming decoder driven by :func:`bounded_decode`.

    ``step(limit)`` returns up to about ``limit`` more bytes of output (empty
    when it can make no progress); ``eof`` says the stream's end was decoded;
    ``consumed`` is how many input bytes the stream took.
    """

    eof: bool

    def step(self, limit: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def consumed(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError


def bounded_decode(decoder: Decoder, max_size: int) -> tuple[bytes, bool]:
    """Run ``decoder`` until its stream ends or it stalls, never past ``max_size`` bytes.

    Returns the output and whether the end of the stream was reached. Raises
    :class:`LimitExceeded` as soon as the output passes ``max_size``, before
    allocating more. The one loop every codec goes through.
    """
    out: list[bytes] = []
    total = 0
    while not decoder.eof:
        piece = decoder.step(min(OUTPUT_CHUNK, max_size + 1 - total))
        total += len(piece)
        if total > max_size:
            raise LimitExceeded(max_size)
        if not piece and not decoder.eof:
            break
        out.append(piece)
    return b"".join(out), decoder.eof


class ZlibStream(Decoder):
    """A ``zlib.decompressobj(wbits)`` stream: raw deflate (negative wbits), zlib or gzip (31)."""

    def __init__(self, data: bytes | memoryview, wbits: int) -> None:
        import zlib

        self._dec = zlib.decompressobj(wbits=wbits)
        self._pending = bytes(data)
        self._size = len(data)
        self.eof = False

    def step(self, limit: int) -> bytes:
        piece = self._dec.decompress(self._pending, limit)
        self._pending = self._dec.unconsumed_tail
        self.eof = self._dec.eof
        return piece

    @property
    def consumed(self) -> int:
        # At the stream's end everything after it is in unused_data; CPython may
        # also leave it in unconsumed_tail then (after an output-limited call),
        # so the tail only counts before the end.
        if self.eof:
            return self._size - len(self._dec.unused_data)
        return self._size - len(self._pending)


class OneCallStream(Decoder):
    """An lzma or bz2 decompressor object, which takes all its input in the first call.

    Both stop at the end of their (first) stream and keep what follows as
    ``unused_data``.
    """

    def __init__(self, decompressor: Any, data: bytes | memoryview) -> None:
        self._dec = decompressor
        self._pending = bytes(data)
        self._size = len(data)
        self.eof = False

    def step(self, limit: int) -> bytes:
        piece: bytes = self._dec.decompress(self._pending, max_length=limit)
        self._pending = b""
        self.eof = self._dec.eof
        return piece

    @property
    def consumed(self) -> int:
        return self._size - len(self._dec.unused_data)


class ZstdStream(Decoder):
    """libzstd's streaming decoder (ZSTD_decompressStream) over one frame.

    ``ZstdDecompressionObj.decompress`` has no output limit, so the input is
    fed ``input_chunk`` bytes at a time and the output counted after each.
    """

    def __init__(self, data: bytes | memoryview, input_chunk: int) -> None:
        import zstandard  # lazy: keeps the install hook's import cheap

        self._dec = zstandard.ZstdDecompressor().decompressobj()
        self._data = bytes(data)
        self._offset = 0
        self._chunk = input_chunk
        self.eof = False

    def step(self, limit: int) -> bytes:
        out: list[bytes] = []
        got = 0
        while not self.eof and self._offset < len(self._data) and got < limit:
            piece = self._dec.decompress(self._data[self._offset : self._offset + self._chunk])
            self._offset += self._chunk
            self.eof = self._dec.eof
            got += len(piece)
            out.append(piece)
        return b"".join(out)

    @property
    def consumed(self) -> int:
        return min(self._offset, len(self._data)) - len(self._dec.unused_data if self.eof else b"")
