"""The real `batcher` command in a subprocess: what only a real process shows."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from batcher.simulator import DirectoryUser, GraphSimulator, RunningSimulator
from tests.helpers import (
    BATCHER,
    FAST,
    REPO,
    SAMPLES,
    TEST_TOKEN,
    cli_env,
    ids,
    run_cli,
    write_config,
    write_ids,
)

pytestmark = pytest.mark.e2e
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def test_make_run_runs_the_sample_on_the_built_in_simulator_with_no_account(
    tmp_path: Path,
) -> None:
    env = cli_env(BATCHER_ACCESS_TOKEN="", XDG_DATA_HOME=str(tmp_path / "data"))
    result = run_cli(
        "run",
        SAMPLES / "entra_risky_users.csv",
        "--config",
        REPO / "config.example.toml",
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert result.code == 0, result.stderr
    summary = result.json()["result"]
    assert summary["actions"]["confirm"]["done"] == 131 and summary["target"] == "simulator"
    assert "SIMULATOR: sending to the built-in Graph simulator" in result.stderr
    assert result.stderr.count("SIMULATOR: ") == 2  # the label at the start, and in the summary
    looked = {
        k: summary["inputs"][k]
        for k in ("looked_up", "resolved", "not_found", "ambiguous", "guests")
    }
    assert looked == {"looked_up": 1, "resolved": 1, "not_found": 0, "ambiguous": 0, "guests": 0}
    assert result.stderr.rstrip().endswith("no real tenant was touched")  # said again at the end
    ledger = Path(summary["ledger"])
    assert ledger.is_absolute() and ledger.is_relative_to(tmp_path / "data")  # not the cwd
    assert f"ledger: {ledger}" in result.stderr


def test_json_puts_one_object_on_stdout_also_for_an_error(tmp_path: Path, simulator: Any) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    ok = run_cli("run", "--yes", SAMPLES / "analyst_list.csv", "-c", config, "--json", cwd=tmp_path)
    inputs = ok.json()["result"]["inputs"]
    assert ok.code == 0 and ok.stdout.count("\n") == 1 and inputs["valid"] == 45
    keys = ("looked_up", "resolved", "not_found", "ambiguous", "guests")
    assert [inputs[k] for k in keys] == [0] * 5  # object IDs only: nothing looked up
    missing = run_cli("run", "--yes", tmp_path / "nope.csv", "-c", config, "--json", cwd=tmp_path)
    assert missing.code == 2
    said = missing.stderr.strip().splitlines()[-1]
    assert missing.json() == {
        "command": "run",
        "ok": False,
        "exit_code": 2,
        "result": None,
        "error": {"code": "usage", "message": said.removeprefix("batcher: error: ")},
    }
    assert "Traceback" not in missing.stderr


def test_a_dry_run_needs_no_credentials_and_names_its_ledger(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[graph]\ntarget = "graph"\n[auth]\ntenant_id = "11111111-2222-4333-8444-555555555555"\n'
        f'[ledger]\ndir = "{tmp_path / "ledgers"}"\n',
        encoding="utf-8",
    )
    env = cli_env(BATCHER_ACCESS_TOKEN="")
    result = run_cli(
        "run",
        SAMPLES / "analyst_list.csv",
        "-c",
        config,
        "--contain",
        "--dry-run",
        cwd=tmp_path,
        env=env,
    )
    assert result.code == 0, result.stderr
    assert re.search(
        r"ledger: .*ledgers/analyst_list-contain-11111111-\w+\.sqlite \(does not exist yet\)",
        result.stderr,
    )
    assert "dry run: nothing was sent" in result.stderr
    assert not list(tmp_path.rglob("*.sqlite"))  # no ledger


def test_containment_through_the_command_line(tmp_path: Path) -> None:
    users = [
        DirectoryUser(id=uid, userPrincipalName=f"u{n}@contoso.com")
        for n, uid in enumerate(ids(30))
    ]
    with RunningSimulator(GraphSimulator(FAST, tokens={TEST_TOKEN}, users=users)) as sim:
        config = write_config(tmp_path / "config.toml", sim.url)
        write_ids(tmp_path / "ids.csv", [u.id for u in users])
        result = run_cli(
            "run", "--yes", "ids.csv", "-c", config, "--contain", "--json", cwd=tmp_path
        )
        record = sim.simulator.record
    assert result.code == 0, result.stderr
    actions = result.json()["result"]["actions"]
    assert {a: c["done"] for a, c in actions.items()} == {
        "disable": 30,
        "revoke-sessions": 30,
        "confirm": 30,
    }
    assert all(record.operations(u.id) == ["disable", "revoke"] for u in users)


@pytest.mark.posix  # a real SIGINT to the process
def test_an_unreachable_graph_is_said_at_once_and_ctrl_c_does_not_wait(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:1")
    write_ids(tmp_path / "ids.csv", ids(20))
    started = time.monotonic()
    proc = subprocess.Popen(
        [BATCHER, "run", "--yes", "ids.csv", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if "cannot reach" in line:
            break
    said = time.monotonic() - started
    assert "cannot reach 127.0.0.1: the connection was refused" in seen, seen
    assert said < 10, said
    proc.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130, seen + rest
    assert time.monotonic() - stopped < 5  # nothing in flight: no waiting for it
    assert "none is in flight" in rest


def test_the_printed_command_works_when_batcher_is_not_on_path(
    tmp_path: Path, simulator_factory: Any
) -> None:
    values = ids(12)
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": [values[3]]}))
    config = write_config(tmp_path / "config.toml", sim.url)
    write_ids(tmp_path / "ids.csv", values)
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(BATCHER).parent != Path(p)
    )
    env = cli_env(PATH=path)
    failed = run_cli("run", "--yes", "ids.csv", "-c", config, cwd=tmp_path, env=env)
    assert failed.code == 1, failed.stderr
    printed = re.search(r"once the cause is fixed: (.+)$", failed.stderr, re.M)
    assert printed and printed.group(1).startswith(str(Path(BATCHER).resolve().parent)), (
        failed.stderr
    )
    fixed = simulator_factory()
    write_config(tmp_path / "config.toml", fixed.url)
    again = subprocess.run(
        printed.group(1),
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert "no terminal to ask on" in again.stderr  # the command ran: it asks before sending


def test_graph_lost_in_the_middle_of_a_run_is_said_and_stops_it(tmp_path: Path) -> None:
    """The simulator goes away after the first answers: the next connections are refused, the
    run says so at once and stops after [send] unreachable_after_seconds, exit 5, resumable."""
    values = ids(300)
    write_ids(tmp_path / "ids.csv", values)
    server = RunningSimulator(GraphSimulator(FAST, tokens={TEST_TOKEN})).__enter__()
    config = write_config(
        tmp_path / "config.toml",
        server.url,
        send={"batch_size": 10, "rate_per_second": 20.0, "unreachable_after_seconds": 1.0},
    )
    proc = subprocess.Popen(
        [
            BATCHER,
            "run",
            "--yes",
            "--max-users",
            "100000",
            "ids.csv",
            "--config",
            str(config),
            "--json",
        ],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.simulator.record.wait_for_accepted("confirmCompromised", 50, timeout=60)
    server.__exit__(None, None, None)  # Graph is gone
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 5, err
    assert "warning: cannot reach 127.0.0.1: the connection was refused" in err
    assert "stopping unless it answers within 1s" in err
    confirm = json.loads(out)["result"]["actions"]["confirm"]
    assert confirm["done"] >= 50 and confirm["not_sent"] > 0
    assert confirm["unknown"] <= 4 * 10  # at most what was in flight when it went away


class _Forwarder(http.server.BaseHTTPRequestHandler):
    """A plain forward proxy: takes the absolute URL a client sends a proxy, fetches it, answers
    with what came back, and notes each URL."""

    seen: ClassVar[list[str]] = []

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        with httpx.Client(trust_env=False) as client:
            answer = client.request(self.command, self.path, headers=headers, content=body)
        self.seen.append(self.path)
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PATCH = _forward

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads `seen`
        pass


def test_graph_is_reached_through_the_proxy_the_environment_names(
    tmp_path: Path, simulator: Any
) -> None:
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forwarder)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _Forwarder.seen.clear()
    try:
        config = write_config(tmp_path / "config.toml", simulator.url)
        write_ids(tmp_path / "ids.csv", ids(30))
        env = {k: v for k, v in cli_env().items() if k.lower() not in PROXY_VARIABLES}
        env["HTTP_PROXY"] = f"http://127.0.0.1:{proxy.server_address[1]}"
        result = run_cli("run", "--yes", "ids.csv", "-c", config, "--json", cwd=tmp_path, env=env)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.code == 0, result.stderr
    assert result.json()["result"]["actions"]["confirm"]["done"] == 30
    risky = f"{simulator.url}/v1.0/identityProtection/riskyUsers"
    assert _Forwarder.seen == [  # who was already confirmed, then the confirm
        f"{risky}?$filter=riskState%20eq%20'confirmedCompromised'&$top=500",
        f"{risky}/confirmCompromised",
    ]
    assert simulator.simulator.record.requests == 2  # and it reached Graph through the proxy


def test_make_run_takes_a_file_name_with_spaces_and_brackets(tmp_path: Path) -> None:
    """A re-downloaded export is `risky users (1).csv`: the Makefile quotes what it passes on."""
    named = tmp_path / "risky users (1).csv"
    named.write_bytes((SAMPLES / "entra_risky_users.csv").read_bytes())
    make = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed-stamp",  # the environment running these tests is the one to use
            f"BIN={Path(BATCHER).parent}",
            "run",
            f"INPUT={named}",
            "ARGS=--dry-run",
        ],
        cwd=REPO,
        env=cli_env(XDG_DATA_HOME=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert make.returncode == 0, make.stderr
    assert f"{named}: 147 rows" in make.stderr
    assert "dry run: nothing was sent" in make.stderr
