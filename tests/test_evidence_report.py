"""`batcher report LEDGER --out report.html`: one self-contained page, opened in headless
Chromium with every network request sent to a recording proxy, checked as a person sees it."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batcher.actions import CONTAIN
from tests.helpers import Rig, ids, run_cli, write_ids

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _chromium() -> str:
    found = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    assert found, (
        "headless Chromium is needed for this test: apt-get install chromium (.ci/run installs it)"
    )
    return found


@pytest.fixture
def proxy() -> Iterator[list[bytes]]:
    """A loopback listener that records the first bytes of every connection made to it: any
    request the page makes goes there (Chromium's --proxy-server), and none should."""
    seen: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    seen.append(conn.recv(200))
                except OSError:
                    seen.append(b"(connected)")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    seen.append(str(server.getsockname()[1]).encode())  # [0]: the port
    yield seen
    stop.set()
    thread.join()
    server.close()


CHROMIUMS_OWN = re.compile(
    rb"^\S+ (?:https?://)?[a-z0-9.-]*\.(?:google\.com|googleapis\.com|gvt1\.com)[:/]"
)


def _chromiums_own(request: bytes) -> bool:
    """A request Chromium makes for itself, whatever page it shows (not the page's)."""
    return bool(CHROMIUMS_OWN.match(request))


def _open(page: str, proxy_port: str, tmp_path: Path, *extra: str) -> str:
    args = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-default-apps",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        "--proxy-bypass-list=<-loopback>",
        *extra,
        page,
    ]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.e2e
def test_the_html_report_shows_the_chart_counts_and_a_users_row_in_chromium_offline(
    tmp_path: Path, simulator: Any, proxy: list[bytes]
) -> None:
    users = ids(6)
    write_ids(tmp_path / "ids.csv", users)
    # the setup, in-process (the real job, simulator and SQLite): a contained run, its undo
    # and a verify since, for the report's counts, timeline and follow-ups; the report is the
    # command under test and runs at the real CLI
    rig = Rig(tmp_path, simulator=simulator.simulator)
    ledger = tmp_path / "l.sqlite"
    ran = rig.run(tmp_path / "ids.csv", CONTAIN, ledger)
    assert ran.stopped is None and not ran.interrupted, ran
    undone = rig.undo(ledger)
    assert undone.stopped is None and not undone.interrupted, undone
    rig.verify(ledger)  # undone since: not as expected
    made = run_cli("report", "l.sqlite", "--out", "report.html", "--json", cwd=tmp_path)
    assert made.code == 0, made.stderr
    assert made.json()["result"]["counts"]["confirm"] == {"done": 6}
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    # nothing for the page to load: no src/href/url() outside the page, no <link>
    loads = re.findall(r"""(?:src|href)\s*=\s*["']([^"'#][^"']*)""", html) + re.findall(
        r"url\(([^)#][^)]*)\)", html
    )
    assert loads == [] and "<link" not in html and "@import" not in html

    port = proxy[0].decode()
    known = users[2]
    page = (tmp_path / "report.html").as_uri()
    dom = _open(f"{page}#filter={known}", port, tmp_path, "--dump-dom")
    shot = tmp_path / "report.png"
    _open(page, port, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    # nothing but Chromium's own services (clock, component updates, sign-in) went out
    assert [r for r in proxy[1:] if not _chromiums_own(r)] == []
    assert shot.stat().st_size > 20_000  # a drawn page, not a blank one

    chart = dom[dom.index('id="timeline"') :]
    chart = chart[: chart.index("</svg>")]
    assert chart.count("<path") >= 6  # bars, axes and legend drawn
    assert "budget: directory_writes" in chart and "budget: identity_protection" in chart
    counts = dom[dom.index('id="counts"') : dom.index("</table>", dom.index('id="counts"'))]
    row = re.search(r"<th>confirm</th>(.*?)</tr>", counts)
    assert row is not None
    cells = re.findall(r'<td class="n">([^<]*)</td>', row.group(1))
    assert cells == ["6", "0", "0", "0", "0", "0"]  # done failed unknown skipped protected held
    assert "3 of 18 rows" in dom  # the filter (from the link) ran: the known user's rows
    rows = re.findall(r"<tr( hidden(?:=\"\")?)?>(.*?)</tr>", dom[dom.index('id="users"') :])
    mine = [r for hidden, r in rows if f"<td>{known}</td>" in r and not hidden]
    assert len(mine) == 3 and sum(1 for hidden, _ in rows if hidden) == 15
    disable = next(r for r in mine if "<td>disable</td>" in r)
    assert "<td>done</td>" in disable and "accountEnabled: true" in disable
    assert re.search(r"<td>[0-9a-f-]{36}</td>", disable)  # Graph's request-id
    follow = dom[dom.index("Undo and verify that followed") :]
    assert 'id="followup-undo"' in follow and 'id="followup-verify"' in follow
