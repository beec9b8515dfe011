# SPDX-License-Identifier: GPL-2.0-or-later
"""A progress bar on stderr for long work, and nothing at all otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vmpatch.cli.output import stderr

__all__ = ["progress_bar"]

#: Below this many items the work is too short for a bar to help.
_WORTH_A_BAR = 200


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """Yield a ``done(n)`` callback driving a bar, or None when no bar is wanted.

    A bar is drawn only when stderr is a terminal and the work is long; in CI
    logs and pipes nothing is printed.
    """
    # The cheap checks first: in logs and pipes rich is not even imported.
    if total < _WORTH_A_BAR or not sys.stderr.isatty() or not stderr().is_terminal:
        yield None
        return
    console = stderr()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        auto_refresh=False,  # no refresh thread: hashing may fork worker processes
    ) as bar:
        task = bar.add_task(description, total=total)

        def done(count: int) -> None:
            bar.update(task, completed=count)
            bar.refresh()

        yield done
