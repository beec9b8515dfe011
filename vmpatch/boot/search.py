# SPDX-License-Identifier: GPL-2.0-or-later
"""Finding a compressed stream that no header points at (arm zImage, s390).

Both keep the payload as kbuild's ``piggy_data``: the compressed stream then
the decompressed size as a le32 (``size_append`` in ``scripts/Makefile.lib``;
for gzip the stream's own ISIZE trailer is that word). A candidate is every
codec signature in the searched range; the stream is the one whose
decompressed length equals the le32 that follows it, so a signature that
happens to occur in the decompressor's code cannot be taken for the payload.
"""

from __future__ import annotations

from vmpatch.boot import codecs
from vmpatch.boot.image import Context
from vmpatch.errors import InputError, UnsupportedLayout

__all__ = ["StreamFound", "find_sized_stream"]


class StreamFound:
    """The payload found: its codec, where it starts, and its decompressed bytes."""

    def __init__(self, codec: str, start: int, data: bytes) -> None:
        self.codec = codec
        self.start = start
        self.data = data


def _candidates(data: bytes, lo: int, hi: int) -> list[tuple[int, str]]:
    found = []
    for name, magic in codecs.MAGICS.items():
        at = data.find(magic, lo, hi)
        while at >= 0:
            found.append((at, name))
            at = data.find(magic, at + 1, hi)
    return sorted(found)


def find_sized_stream(
    data: bytes, ctx: Context, *, lo: int, hi: int, size_at: int | None = None
) -> StreamFound:
    """The stream in ``data[lo:hi]`` followed by its own decompressed size.

    With ``size_at`` (zImage) the stream must end exactly there and the le32
    there is the size; without it (s390) the le32 right after the stream is.
    """
    unsupported: UnsupportedLayout | None = None
    for start, codec in _candidates(data, lo, hi):
        end_bound = hi if size_at is None else size_at
        try:
            out, end = codecs.decode_stream(
                ctx.path, codec, data[start : end_bound + 4], ctx.max_size
            )
        except UnsupportedLayout as err:
            unsupported = unsupported or err
            continue
        except InputError:
            continue
        end += start
        if codec == "gzip" and size_at is None:
            size_word = end - 4  # gzip's ISIZE is the appended size
        else:
            size_word = end if size_at is None else size_at
            if size_at is not None and end != size_at:
                continue
        if int.from_bytes(data[size_word : size_word + 4], "little") == len(out) & 0xFFFFFFFF:
            return StreamFound(codec, start, out)
    if unsupported is not None:
        raise unsupported
    raise InputError(
        ctx.path, "no compressed stream followed by its decompressed size: not a kernel payload"
    )
