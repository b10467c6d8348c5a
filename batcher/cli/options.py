"""The options and arguments the commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from batcher.actions import ACTIONS, CONTAIN, DEFAULT_ACTION

Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML config (default: ./config.toml when there is one, else the simulator).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout at the end.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Plan only: no request, no file.")]
LogFile = Annotated[
    Path | None,
    typer.Option("--log-file", metavar="FILE", help="Append JSON lines: requests, state changes."),
]
Column = Annotated[
    str | None,
    typer.Option(
        metavar="NAME", help="The ID column; a dotted path in JSON (properties.AadUserId)."
    ),
]
Sheet = Annotated[str | None, typer.Option(metavar="NAME", help="The workbook sheet to read.")]
MaxUsers = Annotated[
    int | None,
    typer.Option(
        "--max-users",
        min=0,
        metavar="N",
        help="Send only if the plan holds at most N users; --yes alone is refused above "
        "[safety] confirm_over (100) users.",
    ),
]
IncludeAdmins = Annotated[
    bool,
    typer.Option(
        "--include-admins",
        help="Act on holders of privileged directory roles too (held back otherwise).",
    ),
]
AllRules = Annotated[
    bool,
    typer.Option(
        "--all-rules",
        help="Disable every inbox rule but the system ones, harmless ones too.",
    ),
]
LedgerArg = Annotated[Path, typer.Argument(metavar="LEDGER", help="The ledger a run printed.")]


def yes_option(after: str) -> Any:
    return typer.Option("--yes", "-y", help=f"Skip the confirmation prompt ({after}).")


ActionNames = Annotated[
    list[str] | None,
    typer.Option(
        "--action",
        metavar="NAME",
        help=f"Repeatable: {', '.join(ACTIONS)} (default: {DEFAULT_ACTION}).",
    ),
]
Contain = Annotated[
    bool, typer.Option("--contain", help=f"Short for --action {' --action '.join(CONTAIN)}.")
]
