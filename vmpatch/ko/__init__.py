# SPDX-License-Identifier: GPL-2.0-or-later
"""One module file: its compression, its proof and trailers, its strip, its modinfo.

Everything here works on a single ``.ko``/``.ko.gz``/``.ko.xz``/``.ko.zst``.
Import-time standard library only: the install hook appends through
``ko.proof``; pyelftools, asn1crypto and zstandard load inside the functions
that need them.
"""
