"""Observer events are typed: the library tells each by its Event name, and the CLI's edge
shows each or ignores it on purpose; a misspelt event is refused, never silently dropped."""

from __future__ import annotations

import ast
import json
from contextlib import closing
from pathlib import Path

import pytest

from batcher.cli.edge import ConsoleEvents
from batcher.eventlog import LOGGED, Event, EventLog

PACKAGE = Path(__file__).resolve().parent.parent / "batcher"


def _told() -> list[tuple[str, ast.expr]]:
    """(module:line, first argument) of every ``...observer(...)`` call in the package (but
    eventlog.py's fan-out, which passes each event on; ``_observer`` is a part's own copy)."""
    calls = []
    for path in sorted(set(PACKAGE.rglob("*.py")) - {PACKAGE / "eventlog.py"}):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("observer", "_observer"):
                calls.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", node.args[0]))
    return calls


def test_the_library_tells_every_event_by_its_typed_name() -> None:
    told = _told()
    bare = [where for where, arg in told if not _is_event(arg)]
    assert bare == []
    names = {arg.attr for _, arg in told if isinstance(arg, ast.Attribute)}
    assert names == {e.name for e in Event}  # and every declared event is told somewhere


def _is_event(arg: ast.expr) -> bool:
    return (
        isinstance(arg, ast.Attribute)
        and isinstance(arg.value, ast.Name)
        and arg.value.id == "Event"
        and arg.attr in Event.__members__
    )


def test_every_event_is_shown_on_the_console_or_deliberately_ignored() -> None:
    console = ConsoleEvents()
    assert set(console.shows) | ConsoleEvents.IGNORED == set(Event)
    assert not set(console.shows) & ConsoleEvents.IGNORED


def test_a_misspelt_event_is_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="lookingup"):
        ConsoleEvents()("lookingup", identities=3)  # type: ignore[arg-type]


def test_the_log_file_writes_an_event_by_its_name(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with closing(EventLog(path)) as log:
        log(Event.DECLINED, command="batcher run x.csv", to_send=3)
        log(Event.PROGRESS, tally=None)  # not kept in the file
    [line] = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert (record["event"], record["to_send"]) == ("declined", 3)
    assert Event.DECLINED in LOGGED and Event.PROGRESS not in LOGGED
