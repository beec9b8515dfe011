# SPDX-License-Identifier: GPL-2.0-or-later
"""The typer application, global options, and the exit-code choke point."""

from __future__ import annotations

import sys
import traceback
from types import ModuleType
from typing import Annotated

import typer

from vmpatch import FORMAT_VERSION, __version__
from vmpatch.errors import EXIT_INPUT, EXIT_INTERRUPTED, VmpatchError

app = typer.Typer(
    name="vmpatch",
    help="Patch and inspect vmlinux module-hash roots; build, append and verify module proofs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)

_state = {"debug": False}

#: Internal bug (EX_SOFTWARE): not part of the user-facing contract.
EXIT_BUG = 70
#: stdout closed by its reader: what a shell reports for a SIGPIPE death (128 + 13).
EXIT_OUTPUT_CLOSED = 141


def debugging() -> bool:
    """Whether ``--debug`` was given: errors a command reports and goes on from show tracebacks."""
    return _state["debug"]


def _version(value: bool) -> None:
    if value:
        print(f"vmpatch {__version__} (format {FORMAT_VERSION})")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback with errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and the supported format, then exit.",
        ),
    ] = False,
) -> None:
    """Patch and inspect vmlinux module-hash roots; build, append and verify module proofs."""
    _state["debug"] = debug


def _register_commands() -> None:
    # Imported for their @app.command side effect; each module is one concern.
    from vmpatch.cli import commands  # noqa: F401


def _click_exceptions() -> ModuleType:
    """The click exception module typer parses with: vendored since typer 0.26."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:
        return importlib.import_module("click.exceptions")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and map every failure to its exit code."""
    from vmpatch.cli.output import OutputClosed

    click = _click_exceptions()
    _register_commands()
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    try:
        result = app(args=args, prog_name="vmpatch", standalone_mode=False)
    except VmpatchError as err:
        _report(err, err.hint)
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(EXIT_INTERRUPTED)
    except OutputClosed:
        sys.exit(EXIT_OUTPUT_CLOSED)
    except click.ClickException as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `vmpatch`: the help, as click does
            print(err.format_message(), file=sys.stderr)
        else:
            from vmpatch.cli.output import error_line

            error_line(err.format_message(), "see vmpatch --help")
        sys.exit(EXIT_INPUT)
    except Exception as err:  # a bug: one line unless --debug
        _report(err, "this is a bug in vmpatch; rerun with --debug and report the traceback")
        sys.exit(EXIT_BUG)
    sys.exit(result if isinstance(result, int) else 0)


def _report(err: BaseException, hint: str | None) -> None:
    from vmpatch.cli.output import error_line

    if _state["debug"]:
        traceback.print_exception(err, file=sys.stderr)
    message = str(err) if isinstance(err, VmpatchError) else f"{type(err).__name__}: {err}"
    error_line(message, hint)
