# SPDX-License-Identifier: GPL-2.0-or-later
"""Filesystem primitives every writing command goes through: atomic replacement.

Standard library only (the install hook writes through it).
"""
