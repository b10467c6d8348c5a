"""The command line: a thin layer over the library; the only place errors become exit codes."""

from batcher.cli import commands as _commands  # noqa: F401  (registers the commands)
from batcher.cli import plans as _plans  # noqa: F401  (plan, show, apply)
from batcher.cli.edge import console
from batcher.cli.help import app

__all__ = ["app", "console", "main"]


def main() -> None:
    app()
