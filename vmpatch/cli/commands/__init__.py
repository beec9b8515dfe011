# SPDX-License-Identifier: GPL-2.0-or-later
"""The commands, one module per concern, registered on the app when imported.

Only the module of the command being run is imported: typer turns every
registered function into a click command on each start (``inspect.signature``
and type hints per parameter), which measured 84 ms of the 380 ms that
``vmpatch patch`` took with all 26 commands registered (cProfile,
``typer.main.get_params_from_function``). Help and unknown names register
everything, in the order ``--help`` lists them: the image first (inspect,
patch), then the tree (tree, verify, reroot, diff), then the module
toolkit; ``--version`` alone registers nothing.

The command modules leave out ``from __future__ import annotations``: typer
reads every parameter's type with ``typing.get_type_hints`` on each start,
and annotations kept as text are compiled and evaluated there one by one.
Evaluated once as the module runs, ``vmpatch tree``'s took 6.3 ms to import
and build against 10.8 ms as text (8 runs each). Names imported only for type
checkers are written in quotes. ``verify`` has its own module for the same
reason: building it with ``tree`` was another 5 ms of every ``tree`` run.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

__all__ = ["COMMAND_MODULES", "register"]

#: Each top-level command name and the module under vmpatch.cli.commands that defines it.
COMMAND_MODULES = {
    "inspect": "vmlinux",
    "patch": "vmlinux",
    "tree": "tree",
    "verify": "verify",
    "reroot": "reroot",
    "diff": "diff",
    "ko": "ko",
}


def register(args: Sequence[str] = ()) -> None:
    """Register the command ``args`` run (its first non-option word), or all of them.

    The global options (``--debug``, ``--version``, ``-h``) take no value, so
    the first word not starting with ``-`` is the command's name.
    """
    name = next((arg for arg in args if not arg.startswith("-")), None)
    if name in COMMAND_MODULES:
        _load(COMMAND_MODULES[name])
        return
    if name is None and "--version" in args and not {"-h", "--help"} & set(args):
        return  # the eager --version callback exits before any command is looked at
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        _load(module)


def _load(module: str) -> None:
    loaded = importlib.import_module(f"vmpatch.cli.commands.{module}")
    if module == "ko":
        from vmpatch.cli.app import app

        if not any(group.typer_instance is loaded.ko_app for group in app.registered_groups):
            app.add_typer(loaded.ko_app, name="ko")
