# SPDX-License-Identifier: GPL-2.0-or-later
"""The commands, one module per concern, registered on the app when imported."""

from vmpatch.cli.app import app
from vmpatch.cli.commands import tree, vmlinux  # noqa: F401 - registers commands
from vmpatch.cli.commands.ko import ko_app

app.add_typer(ko_app, name="ko")
