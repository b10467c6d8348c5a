"""The typer app, and help without type tags: `--config FILE`, `INPUT...`, flags bare."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import typer
from typer.core import TyperCommand

from batcher import __version__


class Formatter(Protocol):
    """What the help uses of typer's (vendored click's) help formatter: public methods only."""

    def section(self, name: str) -> AbstractContextManager[None]: ...

    def write_dl(self, rows: list[tuple[str, str]]) -> None: ...


class Command(TyperCommand):
    """Help as people read it: arguments by name, options by their metavar, no `<type>`.
    (``ctx`` is typer's vendored click Context, whose type typer does not export.)"""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = ["[OPTIONS]"]
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name or ""
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces

    def format_options(self, ctx: Any, formatter: Formatter) -> None:
        args: list[tuple[str, str]] = []
        opts: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = (param.metavar or param.name or "") + ("..." if param.nargs != 1 else "")
                args.append((name, getattr(param, "help", None) or ""))
            else:
                record = param.get_help_record(ctx)
                if record is not None:
                    opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Act on many Microsoft Entra users at once through Microsoft Graph, paced and resumable.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"batcher {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """batcher reads exports of Entra users and acts on them through Microsoft Graph."""
