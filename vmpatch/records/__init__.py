# SPDX-License-Identifier: GPL-2.0-or-later
"""The on-disk records: what the kernel and kbuild read and write, declared once.

Standard library only (``tests/test_layers.py`` holds every module here to
it): the per-module install hook imports these thousands of times a kernel.
Each module mirrors one format of docs/format.md and names the kernel file it
keeps in sync with.
"""
