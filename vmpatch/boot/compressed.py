# SPDX-License-Identifier: GPL-2.0-or-later
"""A bare compressed stream (``Image.gz``, ``vmlinux.xz``): kbuild's ``$(call cmd,gzip)`` output.

Recognised by the codec's signature at offset 0 (``lib/decompress.c``
compressed_formats); what it holds is looked at next.
"""

from __future__ import annotations

from vmpatch.boot import codecs
from vmpatch.boot.image import Context, Payload

NAME = "compressed stream"


def recognise(data: bytes) -> bool:
    return codecs.codec_at(data) is not None


def unwrap(data: bytes, ctx: Context) -> Payload:
    codec = codecs.codec_at(data)
    assert codec is not None  # recognise() said so
    return Payload(codecs.decompress(ctx.path, codec, data, ctx.max_size), (codec,))
