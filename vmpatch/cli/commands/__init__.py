# SPDX-License-Identifier: GPL-2.0-or-later
"""The commands, one module per concern, registered on the app when imported.

The import order is the order --help lists them: the image first (inspect,
patch), then the tree (tree, verify, reroot, diff), then the module toolkit.
"""

from vmpatch.cli.app import app
from vmpatch.cli.commands import vmlinux  # noqa: F401 - registers inspect, patch

# isort: split
from vmpatch.cli.commands import tree  # noqa: F401 - registers tree, verify

# isort: split
from vmpatch.cli.commands import reroot  # noqa: F401 - registers reroot

# isort: split
from vmpatch.cli.commands import diff  # noqa: F401 - registers diff

# isort: split
from vmpatch.cli.commands.ko import ko_app

app.add_typer(ko_app, name="ko")
