# SPDX-License-Identifier: GPL-2.0-or-later
"""``python -m vmpatch``: the same entry point as the ``vmpatch`` script."""

from vmpatch.cli import main

if __name__ == "__main__":
    main()
