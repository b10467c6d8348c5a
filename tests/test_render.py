"""What a person reads: the gate after a look-up, the plan's grammar, undo's words, the status
table's meanings, the progress line's ETA (jobs run in-process, rendered as the CLI renders)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from rich.console import Console

from batcher.actions import CONTAIN
from batcher.cli.progress import RunProgress
from batcher.cli.render import render_plan, render_status, render_summary, render_verify
from batcher.control import WINDOW, Tally
from batcher.eventlog import Event
from batcher.job.ledgers import undo_ledger
from batcher.job.status import status
from batcher.job.summary import Summary
from batcher.ledger.states import MEANING
from tests.helpers import SAMPLES, Rig, ids, write_ids

WIDE = 250  # no wrapping: each line is read whole


def _text(render: object, value: object) -> str:
    out = io.StringIO()
    render(value, Console(file=out, width=WIDE))  # type: ignore[operator]
    return out.getvalue()


def _row(text: str, label: str) -> list[str]:
    """The cells of a table row, by its label."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in\n{text}")


def test_the_gate_shows_the_look_ups_exact_counts_before_anything_is_written(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    asked: list[tuple[Summary, int, int]] = []

    def gate(plan: Summary) -> bool:
        asked.append((plan, rig.record.directory_reads, len(rig.record.writes)))
        return True

    summary = rig.run(SAMPLES / "phishing_recipients.csv", actions=CONTAIN, confirm=gate)
    [(plan, looked_up_so_far, written_so_far)] = asked
    assert looked_up_so_far > 0 and written_so_far == 0  # looked up first, then asked
    text = _text(render_plan, plan)
    found = plan.inputs
    assert found == summary.inputs  # what the gate showed is what the run then acted on
    assert found.looked_up == found.valid == found.resolved + found.guests  # every value
    assert _row(text, "looked up in the directory") == [str(found.looked_up)]
    assert _row(text, "resolved") == [str(found.resolved)]
    assert _row(text, "guests") == [str(found.guests)]
    assert _row(text, "not found (see rejects file)") == [str(found.not_found)]
    assert _row(text, "ambiguous (see rejects file)") == [str(found.ambiguous)]
    to_send = {a.name: a.to_send for a in plan.actions}
    assert _row(text, "to send") == [str(n) for n in to_send.values()]  # in the plan's order
    assert f"disable: {to_send['disable']} users will be unable to sign in until enabled" in text
    revoke = next(line for line in text.splitlines() if line.startswith("revoke-sessions: "))
    assert revoke.endswith("cannot be undone") and str(to_send["revoke-sessions"]) in revoke
    assert {a.name: a.done for a in summary.actions} == to_send  # the gate's counts were exact


def test_one_step_is_1_step_in_1_request(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    plan = rig.run(write_ids(tmp_path / "one.csv", ids(1)), dry_run=True)
    text = _text(render_summary, plan)
    assert "1 step in at least 1 request, about" in text
    assert "1 requests" not in text and "1 steps" not in text
    assert "confirm: 1 user will be confirmed compromised" in text


def test_an_undo_and_its_verify_say_dismissed_never_confirmed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(write_ids(tmp_path / "ids.csv", ids(10)))
    undone = _text(render_summary, rig.undo(rig.ledger_for(), confirm=lambda plan: True))
    assert _row(undone, "steps") == ["dismiss"] and _row(undone, "done") == ["10"]
    assert "10 users will have their user risk dismissed" in undone
    checked = _text(render_verify, rig.verify(undo_ledger(rig.ledger_for())))
    assert _row(checked, "as expected") == ["10 dismissed"]
    assert "expects riskState dismissed" in checked
    assert "confirmed" not in undone + checked


def test_status_says_in_words_what_each_state_means(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(write_ids(tmp_path / "ids.csv", ids(10)))
    text = _text(render_status, status(rig.ledger_for()))
    for state, meaning in MEANING.items():
        if state.value in ("planned", "done", "failed", "unknown", "skipped"):
            assert _row(text, state.value)[-1] == meaning, state
    assert _row(text, "done")[0] == "10"


def test_the_eta_comes_from_what_graph_accepted_over_the_last_minute() -> None:
    progress = RunProgress(Console(file=io.StringIO(), width=WIDE))
    progress(Event.SENDING, total=1020)
    tally = Tally(started=time.monotonic() - 2 * WINDOW)
    tally.count("confirm", "done", int(WINDOW))  # one a second over the last minute
    line = progress.describe(tally)
    assert "confirm 60 done" in line and line.endswith("ETA 16m 00s")  # 960 left at 1/s
    slower = Tally(started=time.monotonic() - 2 * WINDOW)
    slower.count("confirm", "done", int(WINDOW) // 2)  # half as fast: twice as long
    assert progress.describe(slower).endswith("ETA 33m 00s")  # 990 left at 0.5/s
