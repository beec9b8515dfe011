# SPDX-License-Identifier: GPL-2.0-or-later
"""Boot images (bzImage, arm64/riscv Image, EFI zboot, zImage, s390, UKI).

Each format will be one module with a ``recognise(head)`` function that tells
from magic bytes at fixed offsets whether a file is its kind, registered in
an ordered table here, like diffoscope's comparators: a new format is a new
module, never an edit of the others. Empty until the boot-image readers land.
"""
