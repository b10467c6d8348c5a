"""The HTML report: one self-contained page (styles, the chart's SVG and a small filter script
inline; nothing fetched) for the incident record and the auditors. A pure function of data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

import polars as pl

from batcher.report.chart import timeline_svg

USER_COLUMNS = (
    ("user_id", "user"),
    ("input_value", "input value"),
    ("action", "action"),
    ("state", "state"),
    ("attempts", "attempts"),
    ("last_http_status", "HTTP"),
    ("error_code", "error"),
    ("error_message", "message"),
    ("request_id", "request-id"),
    ("client_request_id", "client-request-id"),
    ("finished_at", "answered at"),
    ("before", "before the run"),
)
RUN_FIELDS = ("run_id", "command", "os_user", "host", "started_at", "finished_at", "command_line")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}td.n{text-align:right}
.chart svg{max-width:100%;height:auto}#filter{font-size:1em;padding:.3em;width:28em}
.muted{color:#777}
"""
# Rows whose text holds every word typed (case ignored); the count of rows shown. A link may
# carry the filter: report.html#filter=WORDS.
_FILTER = """
(function(){var box=document.getElementById('filter'),rows=document.querySelectorAll(
'#users tbody tr'),shown=document.getElementById('shown');function apply(){var words=
box.value.toLowerCase().split(/\\s+/).filter(Boolean),n=0;rows.forEach(function(r){var t=
r.textContent.toLowerCase(),ok=words.every(function(w){return t.indexOf(w)>=0});r.hidden=!ok;
if(ok)n++});shown.textContent=n+' of '+rows.length+' rows'}box.addEventListener('input',
apply);var h=location.hash.match(/^#filter=(.*)$/);if(h)box.value=decodeURIComponent(h[1]);
apply()})();
"""


@dataclass(frozen=True)
class FollowUp:
    """A run that followed: the undo (its counts per action) or the verify (per status)."""

    title: str
    path: str
    when: str | None
    counts: Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class EvidencePage:
    ledger: str
    generated_at: str
    facts: Mapping[str, str]  # tenant, cloud, actions, incident window...
    runs: Sequence[Mapping[str, object]]
    counts: Mapping[str, Mapping[str, int]]  # action -> done, failed, ... -> steps
    timeline: pl.DataFrame  # chart.timeline_frame
    users: pl.DataFrame  # USER_COLUMNS
    followups: Sequence[FollowUp]


def render_html(page: EvidencePage) -> str:
    title = f"batcher report: {page.ledger}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">written {escape(page.generated_at)} from the ledger; nothing on '
        "this page is fetched from anywhere</p>",
        "<h2>Who ran what, when, from which sources, against which tenant</h2>",
        _pairs(page.facts),
        _runs(page.runs),
        "<h2>Per action</h2>",
        _counts("counts", page.counts),
        "<h2>Requests over the run, per budget</h2>",
        f'<div class="chart" id="timeline">{timeline_svg(page.timeline)}</div>',
        f"<p>{page.timeline.get_column('requests').sum() if page.timeline.height else 0:,} "
        "requests: accepted, throttled (429) and failed (any other answer, or none)</p>",
        "<h2>Per user</h2>",
        '<p><input id="filter" type="search" placeholder="filter: user, state, error, '
        'request-id..."> <span id="shown"></span></p>',
        _users(page.users),
        "<h2>Undo and verify that followed</h2>",
        *(_followup(f) for f in page.followups),
        *([] if page.followups else ["<p>none: no undo or verify of this ledger yet</p>"]),
        f"<script>{_FILTER}</script></body></html>",
    ]
    return "\n".join(parts)


def _cell(value: object) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{escape(str(value))}</td>"


def _pairs(facts: Mapping[str, str]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th>{_cell(v)}</tr>" for k, v in facts.items())
    return f'<table id="facts">{rows}</table>'


def _runs(runs: Sequence[Mapping[str, object]]) -> str:
    head = "".join(f"<th>{escape(f)}</th>" for f in (*RUN_FIELDS, "inputs", "outcome"))
    body = []
    for run in runs:
        inputs = json.loads(str(run.get("inputs") or "[]"))
        sources = "; ".join(f"{i.get('path')} (sha256 {str(i.get('sha256'))[:12]})" for i in inputs)
        outcome = run.get("outcome")
        body.append(
            "<tr>"
            + "".join(_cell(run.get(f)) for f in RUN_FIELDS)
            + _cell(sources or None)
            + ("<td></td>" if outcome is None else _details(str(outcome)))
            + "</tr>"
        )
    return "<p>Runs:</p>" + _table("runs", head, "".join(body))


def _details(text: str) -> str:
    return f"<td><details><summary>as recorded</summary><code>{escape(text)}</code></details></td>"


def _counts(table_id: str, counts: Mapping[str, Mapping[str, int]]) -> str:
    labels: list[str] = []
    for per in counts.values():
        labels += [k for k in per if k not in labels]
    head = "<th>action</th>" + "".join(f"<th>{escape(k)}</th>" for k in labels)
    rows = "".join(
        f"<tr><th>{escape(a)}</th>" + "".join(_cell(per.get(k, 0)) for k in labels) + "</tr>"
        for a, per in counts.items()
    )
    return _table(table_id, head, rows)


def _users(users: pl.DataFrame) -> str:
    names = [n for n, _ in USER_COLUMNS if n in users.columns]
    head = "".join(f"<th>{escape(label)}</th>" for n, label in USER_COLUMNS if n in names)
    rows = _rows(users.select(names).iter_rows())
    return _table("users", head, rows)


def _table(table_id: str, head: str, body: str) -> str:
    table = f'<table id="{escape(table_id)}">'
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rows(rows: Iterable[tuple[object, ...]]) -> str:
    return "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)


def _followup(follow: FollowUp) -> str:
    when = f", {escape(follow.when)}" if follow.when else ""
    table_id = "followup-" + follow.title.split()[0]
    return f"<h3>{escape(follow.title)}</h3><p>{escape(follow.path)}{when}</p>" + _counts(
        table_id, follow.counts
    )
