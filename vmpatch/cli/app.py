# SPDX-License-Identifier: GPL-2.0-or-later
"""The typer application, global options, and the exit-code choke point."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand

from vmpatch.errors import (
    EXIT_BUG,
    EXIT_INPUT,
    EXIT_OUTPUT_CLOSED,
    describe,
    terminate_on_sigterm,
)

__all__ = ["EXIT_BUG", "EXIT_OUTPUT_CLOSED", "Command", "app", "main"]

app = typer.Typer(
    name="vmpatch",
    help="Patch and inspect vmlinux module-hash roots; build, append and verify module proofs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)

_state = {"debug": False}


class Command(TyperCommand):
    """Every vmpatch command: plain usage lines, and failures left to :func:`main`.

    typer marks required arguments with braces (``{FILE...}``), which in a
    usage line conventionally mean "one of"; the metavars (FILE..., MODULE
    PROOF) and the brackets of optional ones already say what is needed.
    """

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_unbraced(piece) for piece in super().collect_usage_pieces(ctx)]

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse; a usage error knows its command, so its hint names that command's help."""
        try:
            return list(super().parse_args(ctx, args))
        except Exception as err:
            if hasattr(err, "ctx") and err.ctx is None:  # click's parser leaves some without
                err.ctx = ctx
            raise

    def invoke(self, ctx: Any) -> Any:
        """Run the command; its failures reach :func:`main` untouched by click.

        click would turn Ctrl-C into a silent ``Exit(130)`` and a broken pipe
        into exit 1 ("mismatch" in this contract) before :func:`main` saw
        them; carried past it, they get the same line and code as in the hook.
        """
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, OSError) as err:
            raise _Escaped(err) from err


class _Escaped(BaseException):
    """A command's failure, carried past click's own handling to :func:`main`."""

    def __init__(self, err: BaseException) -> None:
        super().__init__(err)
        self.err = err


def _unbraced(piece: str) -> str:
    if piece.startswith("{") and piece.endswith("}") and "{" not in piece[1:-1]:
        return piece[1:-1]
    return piece


def debugging() -> bool:
    """Whether ``--debug`` was given: errors a command reports and goes on from show tracebacks."""
    return _state["debug"]


def _version(value: bool) -> None:
    if value:
        from vmpatch.cli import version_line

        print(version_line())
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


def _register_commands(args: Sequence[str] = ()) -> None:
    """Register the command ``args`` run, or all of them (see vmpatch.cli.commands)."""
    from vmpatch.cli.commands import register

    register(args)


def _click_exceptions() -> ModuleType:
    """The click exception module typer parses with: vendored since typer 0.26."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:
        return importlib.import_module("click.exceptions")


#: The settings library errors name, as this interface spells them (errors.ToolError).
CLI_OPTIONS = {"STRIP": "--strip-program"}


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and map every failure to its exit code.

    Click's own usage errors stay click's (exit 2, with the failing command's
    help named in the hint); everything else goes through
    :func:`vmpatch.errors.describe`, the mapping the hook uses too.
    """
    click = _click_exceptions()
    terminate_on_sigterm()
    args = sys.argv[1:] if argv is None else argv
    _register_commands(args)
    _freeze_start_up()
    _state["debug"] = "--debug" in args
    try:
        result = app(args=args, prog_name="vmpatch", standalone_mode=False)
    except typer.Abort as err:  # click's word for Ctrl-C (or EOF) at a prompt
        _fail(KeyboardInterrupt(), cause=err)
    except click.ClickException as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `vmpatch`: the help, as click does
            print(err.format_message(), file=sys.stderr)
        else:
            from vmpatch.cli.output import error_line

            error_line(err.format_message(), f"see {_command_path(err)} --help")
        sys.exit(EXIT_INPUT)
    except _Escaped as escaped:
        _fail(escaped.err)
    except BaseException as err:  # every failure gets its line and code
        if isinstance(err, SystemExit):
            raise
        _fail(err)
    sys.exit(result if isinstance(result, int) else 0)


def _freeze_start_up() -> None:
    """Keep what start-up built (modules, classes, functions: they live until exit)
    out of every garbage collection from here on (``gc.freeze``).

    The interpreter's own collections at exit went over all of typer's and
    click's objects once the command was done: 25-45 ms between ``vmpatch
    tree`` printing its root and exiting (Debian's 4230 modules in tmpfs, 5
    runs under strace), 12 ms with them frozen; perf put the difference in
    gc_collect_main and its visits, and in copy-on-write faults on the pages
    it touched, shared with the forked workers until they exited. Frozen
    before any fork, they are never touched by a worker's collections either.
    """
    import gc

    gc.freeze()


def _command_path(err: Exception) -> str:
    """``vmpatch ko append``: the command whose usage was wrong, as its help is reached."""
    ctx = getattr(err, "ctx", None)
    path = getattr(ctx, "command_path", None)
    return path if isinstance(path, str) and path else "vmpatch"


def _fail(err: BaseException, *, cause: BaseException | None = None) -> NoReturn:
    failure = describe(err, options=CLI_OPTIONS)
    if not failure.silent:
        from vmpatch.cli.output import error_line

        if _state["debug"]:
            import traceback  # only here: it loads linecache and tokenize (15 ms of start-up)

            traceback.print_exception(cause or err, file=sys.stderr)
        error_line(failure.message, failure.hint)
    sys.exit(failure.exit_code)
