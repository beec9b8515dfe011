# SPDX-License-Identifier: GPL-2.0-or-later
"""Read and write compressed modules (``.ko``, ``.ko.gz``, ``.ko.xz``, ``.ko.zst``).

The kernel verifies a module's proof over the *decompressed* bytes
(docs/format.md section 6), so every check vmpatch makes on an installed module
must first undo ``CONFIG_MODULE_COMPRESS_*``. Installed trees are untrusted
input, hence three rules here:

* the codec is taken from the file suffix *and* confirmed by the magic bytes;
  a disagreement is an error, never a guess;
* the decompressed size is bounded for every codec (a small ``.ko.zst`` can
  expand to gigabytes), and decompression stops as soon as the bound is
  exceeded instead of allocating the whole output first;
* the bytes are decoded as the kernel's own module decompressor decodes them
  (:mod:`vmpatch.ko.kdecompress`): what it refuses is refused, and what it
  ignores after the first gzip member / xz stream / zstd frame is ignored.

This module is imported by the per-module install hook, so it imports only
the standard library at module level, and of that only what a plain ``.ko``
needs: each codec's library (gzip, lzma, ``zstandard``) is imported on first
use, so a ``.ko.xz`` never loads gzip and a ``.ko`` none of them.
"""

from __future__ import annotations

import enum
import os

from vmpatch.errors import InputError, SystemFailure
from vmpatch.frozen import frozen
from vmpatch.fs.atomic import open_input

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED",
    "GZIP_LEVEL",
    "MODULE_SUFFIXES",
    "XZ_DICT_SIZE",
    "XZ_PRESET",
    "ZSTD_LEVEL",
    "Codec",
    "ModuleContent",
    "codec_for_path",
    "compress",
    "decompress",
    "map_plain",
    "read_module",
    "read_raw",
]

DEFAULT_MAX_DECOMPRESSED = 256 * 1024 * 1024
"""Default bound on a module's decompressed size (the largest real modules are ~100 MiB)."""

GZIP_LEVEL = 6
"""GNU gzip's default level; kbuild runs ``$(KGZIP) -n`` without a level."""

XZ_PRESET = 6
"""xz's default preset, which kbuild leaves alone apart from the dictionary size."""

XZ_DICT_SIZE = 1024 * 1024
"""kbuild's ``--lzma2=dict=1MiB``: the kernel's xz decoder preallocates no more."""

ZSTD_LEVEL = 3
"""The zstd CLI's default level; kbuild runs ``zstd -T0`` without a level."""


class Codec(enum.Enum):
    """A module compression format: its file suffix and leading magic bytes."""

    NONE = ("", b"")
    GZIP = (".gz", b"\x1f\x8b")
    XZ = (".xz", b"\xfd7zXZ\x00")
    ZSTD = (".zst", b"\x28\xb5\x2f\xfd")

    @property
    def suffix(self) -> str:
        """The suffix kbuild appends to ``.ko`` (empty for an uncompressed module)."""
        return self.value[0]

    @property
    def magic(self) -> bytes:
        """The bytes every stream of this format starts with (empty for NONE)."""
        return self.value[1]

    @property
    def label(self) -> str:
        """A short lower-case name for messages: ``gzip``, ``xz``, ``zstd``, ``none``."""
        return self.name.lower()


#: The names a built or installed module file may have: ``.ko`` plain first, then
#: ``.ko`` + each codec's suffix (scripts/Makefile.modinst, cmd_gzip/cmd_xz/cmd_zstd).
MODULE_SUFFIXES = tuple(".ko" + codec.suffix for codec in Codec)


@frozen
class ModuleContent:
    """A module file as the kernel sees it.

    ``data`` is what ``finit_module`` verifies: the decompressed bytes (or the
    file itself when ``codec`` is :attr:`Codec.NONE`).
    """

    path: str | os.PathLike[str]  # as the caller named it (a str keeps pathlib off the hook)
    codec: Codec
    data: bytes


#: Each compressed codec by its suffix and by its magic bytes. An enum member's
#: properties cost a descriptor call each in Python 3.11: looping over the codecs
#: and their ``suffix`` and ``magic`` was about 5 us of every module ``verify``
#: judges (cProfile over Debian's 4230), a plain lookup is one.
_BY_SUFFIX = {codec.suffix: codec for codec in Codec if codec is not Codec.NONE}
_BY_MAGIC = tuple((codec.magic, codec) for codec in Codec if codec is not Codec.NONE)


def codec_for_path(path: str | os.PathLike[str]) -> Codec:
    """The codec the file name promises, from its last suffix alone."""
    name = os.path.basename(os.fspath(path).rstrip("/"))
    dot = name.rfind(".")
    suffix = name[dot:] if 0 < dot < len(name) - 1 else ""  # pathlib's PurePath.suffix
    return _BY_SUFFIX.get(suffix, Codec.NONE)


def _codec_for_magic(data: bytes) -> Codec:
    for magic, codec in _BY_MAGIC:
        if data.startswith(magic):
            return codec
    return Codec.NONE


def _check_magic(path: str | os.PathLike[str], codec: Codec, data: bytes) -> None:
    """Refuse a file whose content does not match its suffix, in either direction."""
    found = _codec_for_magic(data)
    if found is codec:
        return
    if codec is Codec.NONE:
        raise InputError(
            path,
            f"starts with {found.label} magic bytes but has no {found.suffix} suffix",
            hint=f"rename it to end in {found.suffix} or decompress it",
        )
    raise InputError(
        path,
        f"suffix {codec.suffix} promises {codec.label} data, but the file does not start "
        f"with the {codec.label} magic bytes ({codec.magic.hex()})",
    )


def _too_big(path: str | os.PathLike[str], max_size: int) -> InputError:
    return InputError(
        path,
        f"decompressed size exceeds {max_size} bytes (limit, raise with --max-decompressed)",
    )


def decompress(
    data: bytes,
    codec: Codec,
    *,
    path: str | os.PathLike[str] = "<memory>",
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
) -> bytes:
    """The bytes a kernel that decompresses ``codec`` itself verifies, bounded by ``max_size``.

    Decoding follows the kernel's own decompressor
    (:func:`vmpatch.ko.kdecompress.kernel_decompress`): only the first
    stream, member or frame counts and what follows it is ignored, as the
    kernel ignores it. ``path`` only names the data in error messages. The
    magic bytes must match ``codec``. Raises :class:`InputError` where that
    kernel refuses the file (for instance an xz CRC64 check) and for
    oversized data.
    """
    where = path
    _check_magic(where, codec, data)
    if codec is Codec.NONE:
        if len(data) > max_size:
            raise _too_big(where, max_size)
        return data
    from vmpatch.ko import kdecompress  # loads the codec libraries it needs on use

    try:
        return kdecompress.kernel_decompress(data, codec.label, max_size=max_size).data
    except kdecompress.LimitExceeded:
        raise _too_big(where, max_size) from None
    except kdecompress.KernelRefusal as refusal:
        raise InputError(
            where,
            f"the kernel's {codec.label} module decompressor refuses it "
            f"({refusal.errno}): {refusal.reason}",
        ) from None
    except kdecompress.Unmodelled as err:
        raise InputError(where, str(err)) from None


def read_raw(
    path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_DECOMPRESSED
) -> tuple[Codec, bytes]:
    """A module file's codec (from its suffix) and its bytes as stored, undecoded.

    An unreadable file is an :class:`InputError` when it is missing or not a
    regular file and a :class:`SystemFailure` for other I/O errors.
    """
    where = path
    codec = codec_for_path(where)
    try:
        with open_input(where) as fh:
            if codec is Codec.NONE and os.fstat(fh.fileno()).st_size > max_size:
                raise _too_big(where, max_size)
            raw = fh.read()
    except OSError as err:  # missing or a directory: InputError; other I/O: SystemFailure
        raise SystemFailure.from_oserror(where, err, "read module") from None
    return codec, raw


class MappedPlain:
    """A plain module's bytes through a read-only mapping of the file: no copy.

    ``data`` is what :func:`read_raw` and :func:`decompress` give for a
    ``.ko`` (the same checks, the same errors), as a memoryview of the
    mapping, or as bytes read the usual way for a file that cannot be mapped
    (an empty file, a procfs or sysfs file, one that shrank before it could
    be mapped). Only for single-threaded
    processes such as :mod:`vmpatch.fs.forkmap`'s workers: a file that
    shrinks while mapped raises SIGBUS, which kills the process, and in a
    threaded process every fault and munmap contends on one address space
    (see :mod:`vmpatch.merkle`). Use as a context manager; drop every view
    of ``data`` before it closes.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_size: int) -> None:
        import mmap
        import stat

        where = path
        mapping: mmap.mmap | None = None
        self._mapping = None
        self.data: memoryview | bytes = b""
        # open_input's open (O_NONBLOCK: a FIFO must not hang), without its file
        # object: a regular file is mapped from the descriptor; anything else is
        # left to read_raw's own path and errors.
        try:
            fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                info = os.fstat(fd)
                if stat.S_ISREG(info.st_mode) and info.st_size:
                    if info.st_size > max_size:
                        raise _too_big(where, max_size)
                    try:
                        mapping = mmap.mmap(fd, info.st_size, prot=mmap.PROT_READ)
                    except (OSError, ValueError):
                        # A file system that cannot map (sysfs), or a file that shrank
                        # since fstat (mmap checks the size again): read instead.
                        mapping = None
            finally:
                os.close(fd)
        except OSError as err:
            raise SystemFailure.from_oserror(where, err, "read module") from None
        if mapping is None:  # empty, procfs, sysfs, not a regular file: read it
            self.data = read_raw(where, max_size=max_size)[1]
            head = self.data[:8]
        else:
            self._mapping = mapping
            self.data = memoryview(mapping)
            head = mapping[:8]  # bytes straight from the mapping, no view to release
        try:
            _check_magic(where, Codec.NONE, head)
            if len(self.data) > max_size:  # read() of a file that grew past the bound
                raise _too_big(where, max_size)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Unmap the file (a view still held elsewhere keeps it mapped until dropped)."""
        data, mapping = self.data, self._mapping
        self.data, self._mapping = b"", None
        if mapping is None:
            return
        try:
            if isinstance(data, memoryview):
                data.release()
            mapping.close()
        except BufferError:
            pass

    def __enter__(self) -> MappedPlain:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def map_plain(
    path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_DECOMPRESSED
) -> MappedPlain:
    """A plain ``.ko``'s bytes mapped read-only (:class:`MappedPlain`: single-threaded only)."""
    return MappedPlain(path, max_size=max_size)


def read_module(
    path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_DECOMPRESSED
) -> ModuleContent:
    """Read a module file and return the bytes the kernel would verify.

    The codec comes from the suffix and is checked against the magic bytes;
    the bytes are those a kernel that decompresses that codec itself would
    verify (:func:`decompress`). Errors as :func:`read_raw`'s.
    """
    where = path
    codec, raw = read_raw(where, max_size=max_size)
    return ModuleContent(where, codec, decompress(raw, codec, path=where, max_size=max_size))


def compress(data: bytes, codec: Codec) -> bytes:
    """Compress ``data`` the way kbuild's ``modules_install`` does, deterministically.

    * gzip: level 6 (GNU gzip's default), no file name, mtime 0, like
      ``gzip -n``; the header's OS byte is 255 ("unknown", CPython's choice).
    * xz: preset 6 with LZMA2 ``dict_size`` 1 MiB and CRC32 check, like
      ``xz --check=crc32 --lzma2=dict=1MiB``.
    * zstd: level 3, single-threaded, content size in the frame header and a
      checksum, like the zstd CLI's defaults (kbuild's ``-T0`` changes only
      the speed for inputs this small).
    * none: ``data`` unchanged.

    The output is a pure function of ``data``, ``codec`` and the versions of
    zlib, liblzma and libzstd in use: no timestamps, names or thread timing
    leak in. It is *not* promised to be byte-identical to the CLI tools; the
    kernel verifies the decompressed bytes, which are identical.
    """
    if codec is Codec.NONE:
        return data
    if codec is Codec.GZIP:
        import gzip  # lazy, as each codec here: a plain module's append loads none

        return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    if codec is Codec.XZ:
        import lzma

        filters = [{"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET, "dict_size": XZ_DICT_SIZE}]
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
    import zstandard  # lazy: keeps the install hook's import cheap

    cctx = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, write_checksum=True, write_content_size=True, threads=0
    )
    return cctx.compress(data)
