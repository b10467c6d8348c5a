"""End to end: the real `batcher` command in a subprocess against the simulator on a real port."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO, SAMPLES, cli_env, run_cli, write_config

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def expected_ids(path: Path, column: str) -> list[str]:
    """An independent oracle: the unique valid IDs of a sample, in first-seen order."""
    seen: dict[str, None] = {}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            value = (row.get(column) or "").strip(" \t\u00a0\"'{}()").lower()
            value = value.removeprefix("urn:uuid:")
            if re.fullmatch(r"[0-9a-f]{32}", value):
                value = "-".join([value[:8], value[8:12], value[12:16], value[16:20], value[20:]])
            if GUID.match(value) and value != "00000000-0000-0000-0000-000000000000":
                seen.setdefault(value)
    return list(seen)


# Each sample's exact counts, by construction of the file (see sample_inputs/README.md).
SAMPLE_COUNTS = {
    "entra_risky_users.csv": dict(
        column="User ID", rows=147, valid=130, duplicates=12, invalid=5, batches=3
    ),
    "analyst_list.csv": dict(
        column="ObjectId", rows=52, valid=45, duplicates=4, invalid=3, batches=1
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLE_COUNTS))
def test_sample_dry_run_counts_are_exact_and_send_nothing(
    tmp_path: Path, simulator, name: str
) -> None:
    want = SAMPLE_COUNTS[name]
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli(
        "run", "--yes", SAMPLES / name, "--config", config, "--dry-run", "--json", cwd=tmp_path
    )
    assert result.code == 0, result.stderr
    got = result.json()
    for key in ("rows", "valid", "duplicates", "invalid", "batches"):
        assert got[key] == want[key], key
    assert got["rows"] == got["valid"] + got["duplicates"] + got["invalid"]
    assert got["valid"] == len(expected_ids(SAMPLES / name, str(want["column"])))
    assert got["to_send"] == got["valid"]
    assert got["confirmed"] == 0
    assert simulator.simulator.record.requests == 0
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.sqlite"))


def test_run_sends_every_valid_id_once_and_a_rerun_sends_nothing(tmp_path: Path, simulator) -> None:
    sample = SAMPLES / "entra_risky_users.csv"
    config = write_config(tmp_path / "config.toml", simulator.url)
    first = run_cli("run", "--yes", sample, "--config", config, "--json", cwd=tmp_path)
    assert first.code == 0, first.stderr
    want = expected_ids(sample, "User ID")
    accepted = simulator.simulator.record.accepted["confirmCompromised"]
    assert sorted(accepted) == sorted(want)  # each exactly once
    summary = first.json()
    assert summary["confirmed"] == len(want)
    assert summary["failed"] == 0
    assert summary["requests"] == 3

    ledger = (
        Path(summary["ledger"])
        if Path(summary["ledger"]).is_absolute()
        else tmp_path / summary["ledger"]
    )
    with sqlite3.connect(ledger) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM ids GROUP BY state").fetchall())
    assert states == {"confirmed": len(want)}

    second = run_cli("run", "--yes", sample, "--config", config, "--json", cwd=tmp_path)
    assert second.code == 0, second.stderr
    assert second.json()["already_done"] == len(want)
    assert second.json()["to_send"] == 0
    assert len(simulator.simulator.record.accepted["confirmCompromised"]) == len(want)


def test_rows_added_to_the_input_are_the_only_ones_sent_on_rerun(tmp_path: Path, simulator) -> None:
    ids = tmp_path / "ids.csv"
    old = expected_ids(SAMPLES / "analyst_list.csv", "ObjectId")
    ids.write_text("id\n" + "\n".join(old[:30]) + "\n", encoding="utf-8")
    config = write_config(tmp_path / "config.toml", simulator.url)
    assert run_cli("run", "--yes", ids, "--config", config, cwd=tmp_path).code == 0
    ids.write_text("id\n" + "\n".join(old) + "\n", encoding="utf-8")
    again = run_cli("run", "--yes", ids, "--config", config, "--json", cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert again.json()["already_done"] == 30
    assert again.json()["confirmed"] == 15
    assert simulator.simulator.record.accepted["confirmCompromised"] == old[:30] + old[30:]


def test_default_config_runs_on_the_in_process_simulator(tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--yes",
        SAMPLES / "analyst_list.csv",
        "--config",
        REPO / "config.example.toml",
        "--json",
        cwd=tmp_path,
        env=cli_env(BATCHER_ACCESS_TOKEN=""),
    )
    assert result.code == 0, result.stderr
    assert "no real tenant is touched" in result.stderr
    assert result.json()["confirmed"] == 45
    assert result.json()["target"] == "simulator"


def test_json_flag_puts_only_json_on_stdout(tmp_path: Path, simulator) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli(
        "run", "--yes", SAMPLES / "analyst_list.csv", "--config", config, "--json", cwd=tmp_path
    )
    assert result.code == 0
    assert result.stdout.count("\n") == 1
    assert result.json()["valid"] == 45
    plain = run_cli("run", "--yes", SAMPLES / "analyst_list.csv", "--config", config, cwd=tmp_path)
    assert plain.code == 0
    assert plain.stdout == ""


def test_transient_faults_end_with_every_id_confirmed(tmp_path: Path, simulator_factory) -> None:
    sim = simulator_factory(
        FAST.model_copy(
            update={
                "faults": {"500": 0.1, "503": 0.05, "reset": 0.05, "lost": 0.05, "429": 0.05},
                "retry_after_seconds": 0.01,
                "seed": 7,
            }
        )
    )
    sample = SAMPLES / "entra_risky_users.csv"
    config = write_config(
        tmp_path / "config.toml", sim.url, send={"batch_size": 10, "rate_per_second": 100.0}
    )
    result = run_cli("run", "--yes", sample, "--config", config, "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    want = set(expected_ids(sample, "User ID"))
    assert set(sim.simulator.record.accepted["confirmCompromised"]) == want
    assert result.json()["confirmed"] == len(want)
    assert sum(sim.simulator.record.faults.values()) > 0  # the faults really happened


def test_bad_ids_are_isolated_and_the_rest_confirmed(tmp_path: Path, simulator_factory) -> None:
    sample = SAMPLES / "analyst_list.csv"
    want = expected_ids(sample, "ObjectId")
    bad = [want[5], want[40]]
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": bad}))
    config = write_config(tmp_path / "config.toml", sim.url)
    result = run_cli("run", "--yes", sample, "--config", config, "--json", cwd=tmp_path)
    assert result.code == 1, result.stderr
    assert result.json()["failed"] == 2
    assert result.json()["confirmed"] == 43
    assert set(sim.simulator.record.accepted["confirmCompromised"]) == set(want) - set(bad)
    ledger = tmp_path / result.json()["ledger"]
    with sqlite3.connect(ledger) as db:
        failed = db.execute(
            "SELECT user_id, last_status, error_code FROM ids WHERE state = 'failed'"
        ).fetchall()
    assert sorted(failed) == sorted((b, 400, "invalidRequest") for b in bad)


def test_refused_token_stops_the_run_with_exit_3_and_stays_resumable(
    tmp_path: Path, simulator
) -> None:
    sample = SAMPLES / "entra_risky_users.csv"
    config = write_config(tmp_path / "config.toml", simulator.url)
    refused = run_cli(
        "run",
        "--yes",
        sample,
        "--config",
        config,
        "--json",
        cwd=tmp_path,
        env=cli_env(BATCHER_ACCESS_TOKEN="not-the-right-token"),
    )
    assert refused.code == 3, refused.stderr
    assert "IdentityRiskyUser.ReadWrite.All" in refused.stderr or "token" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert 1 <= simulator.simulator.record.statuses[401] <= 4
    resumed = run_cli("run", "--yes", sample, "--config", config, "--json", cwd=tmp_path)
    assert resumed.code == 0, resumed.stderr
    assert resumed.json()["confirmed"] == 130


def test_missing_token_is_a_config_error(tmp_path: Path, simulator) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli(
        "run",
        "--yes",
        SAMPLES / "analyst_list.csv",
        "--config",
        config,
        cwd=tmp_path,
        env=cli_env(BATCHER_ACCESS_TOKEN=""),
    )
    assert result.code == 2
    assert "BATCHER_ACCESS_TOKEN" in result.stderr
    assert simulator.simulator.record.requests == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing.csv"], "missing.csv: no such file"),
        (["."], "is a directory"),
        (["empty.csv"], "empty.csv: the file is empty"),
        (["ids.csv", "--column", "Nope"], "no column named 'Nope'"),
        (["words.csv"], "found no column of user IDs"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_sends_nothing(
    tmp_path: Path, simulator, args: list[str], needle: str
) -> None:
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    (tmp_path / "ids.csv").write_text(
        "id\n8db8df93-edd5-4cd5-86b3-bc355166765c\n", encoding="utf-8"
    )
    (tmp_path / "words.csv").write_text("name,team\nava,red\nbo,blue\n", encoding="utf-8")
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli("run", "--yes", *args, "--config", config, cwd=tmp_path)
    assert result.code == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) == 1
    assert simulator.simulator.record.requests == 0


def test_bad_config_exits_2_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[send]\nrate_per_secnd = 2\n", encoding="utf-8")
    result = run_cli("run", "--yes", SAMPLES / "analyst_list.csv", "--config", config, cwd=tmp_path)
    assert result.code == 2
    assert (
        "[send] rate_per_secnd: unknown setting; did you mean 'rate_per_second'?" in result.stderr
    )


def test_status_shows_counts_by_state(tmp_path: Path, simulator) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    run = run_cli(
        "run", "--yes", SAMPLES / "analyst_list.csv", "--config", config, "--json", cwd=tmp_path
    )
    status = run_cli("status", tmp_path / run.json()["ledger"], cwd=tmp_path)
    assert status.code == 0, status.stderr
    assert re.search(r"confirmed\s+45", status.stderr)


def test_ledger_for_another_tenant_is_refused(tmp_path: Path, simulator) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    ledger = tmp_path / "shared.sqlite"
    sample = SAMPLES / "analyst_list.csv"
    assert (
        run_cli("run", "--yes", sample, "--config", config, "--ledger", ledger, cwd=tmp_path).code
        == 0
    )
    other = write_config(
        tmp_path / "other.toml",
        simulator.url,
        auth={"tenant_id": "11111111-2222-4333-8444-555555555555"},
    )
    result = run_cli("run", "--yes", sample, "--config", other, "--ledger", ledger, cwd=tmp_path)
    assert result.code == 2
    assert "this ledger is for tenant" in result.stderr


def test_simulator_settings_reach_the_in_process_simulator(tmp_path: Path) -> None:
    sample = SAMPLES / "analyst_list.csv"
    bad = expected_ids(sample, "ObjectId")[7]
    config = tmp_path / "config.toml"
    config.write_text(
        "[simulator]\nrate_per_second = 50\nburst = 2\n"
        "latency_min_seconds = 0\nlatency_max_seconds = 0.01\n"
        f'bad_ids = ["{bad}"]\n[send]\nrate_per_second = 40\n',
        encoding="utf-8",
    )
    result = run_cli("run", "--yes", sample, "--config", config, "--json", cwd=tmp_path)
    assert result.code == 1, result.stderr
    assert result.json()["failed"] == 1
    assert result.json()["confirmed"] == 44


def test_a_30_percent_fault_mix_over_thousands_of_ids_ends_all_confirmed(
    tmp_path: Path, simulator_factory
) -> None:
    ids = [f"{i:08x}-1111-4222-8333-444455556666" for i in range(1, 3001)]
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    faults = {
        "429": 0.06,
        "500": 0.06,
        "502": 0.03,
        "503": 0.06,
        "504": 0.03,
        "reset": 0.03,
        "lost": 0.03,
    }
    sim = simulator_factory(
        FAST.model_copy(update={"faults": faults, "retry_after_seconds": 0.01, "seed": 30})
    )
    config = write_config(tmp_path / "config.toml", sim.url, send={"rate_per_second": 100.0})
    result = run_cli("run", "--yes", "ids.csv", "--config", config, "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.json()["confirmed"] == 3000
    record = sim.simulator.record
    assert set(record.accepted["confirmCompromised"]) == set(ids)
    injected = sum(record.faults.values()) + record.statuses[429]
    assert injected / record.requests > 0.2  # the mix really hit about 30% of requests


def test_a_403_stops_the_run_at_once_naming_the_permission_and_stays_resumable(
    tmp_path: Path, simulator_factory
) -> None:
    sample = SAMPLES / "entra_risky_users.csv"
    denied = simulator_factory(FAST.model_copy(update={"permission_denied": True}))
    config = write_config(tmp_path / "config.toml", denied.url)
    ledger = tmp_path / "l.sqlite"
    result = run_cli("run", "--yes", sample, "--config", config, "--ledger", ledger, cwd=tmp_path)
    assert result.code == 3, result.stderr
    assert "IdentityRiskyUser.ReadWrite.All" in result.stderr
    assert "Security Administrator" in result.stderr
    assert "to resume once fixed:" in result.stderr
    assert 1 <= denied.simulator.record.statuses[403] <= 4  # within a few requests
    granted = simulator_factory()
    config = write_config(tmp_path / "config.toml", granted.url)
    resumed = run_cli(
        "run", "--yes", sample, "--config", config, "--ledger", ledger, "--json", cwd=tmp_path
    )
    assert resumed.code == 0, resumed.stderr
    assert resumed.json()["confirmed"] == 130


def _jwt(tenant: str) -> str:
    import base64

    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'tid': tenant})}.x"


def test_a_token_for_another_tenant_is_refused_before_anything_is_sent(
    tmp_path: Path, simulator_factory
) -> None:
    from batcher.simulator import GraphSimulator, RunningSimulator

    other = _jwt("99999999-8888-4777-8666-555555555555")
    with RunningSimulator(GraphSimulator(FAST, tokens={other})) as sim:
        config = write_config(
            tmp_path / "config.toml",
            sim.url,
            auth={"tenant_id": "11111111-2222-4333-8444-555555555555"},
        )
        result = run_cli(
            "run",
            "--yes",
            SAMPLES / "analyst_list.csv",
            "--config",
            config,
            "--json",
            cwd=tmp_path,
            env=cli_env(BATCHER_ACCESS_TOKEN=other),
        )
        assert result.code == 3, result.stderr
        assert "signed in to tenant 99999999-8888-4777-8666-555555555555" in result.stderr
        assert sim.simulator.record.requests == 0


@pytest.mark.parametrize("method", ["azure_cli", "managed_identity"])
def test_methods_that_cannot_name_the_tenant_offline_need_tenant_id(
    tmp_path: Path, method: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[graph]\ntarget = "graph"\n[auth]\nmethod = "{method}"\n', encoding="utf-8")
    result = run_cli(
        "run",
        SAMPLES / "analyst_list.csv",
        "--config",
        config,
        "--dry-run",
        "--json",
        cwd=tmp_path,
    )
    assert result.code == 2
    assert f"method = '{method}' needs tenant_id" in result.stderr
    assert result.json() == {
        "error": result.stderr.strip().removeprefix("batcher: "),
        "exit_code": 2,
    }


def test_small_operator_mistakes_are_one_line(tmp_path: Path, simulator) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    folder = tmp_path / "ledgers"
    folder.mkdir()
    as_dir = run_cli(
        "run",
        "--yes",
        SAMPLES / "analyst_list.csv",
        "--config",
        config,
        "--ledger",
        folder,
        cwd=tmp_path,
    )
    assert as_dir.code == 2 and "is a directory; --ledger takes a file path" in as_dir.stderr
    port = run_cli("simulate", "--port", "99999", cwd=tmp_path)
    assert port.code == 2 and "Traceback" not in port.stderr
    secret_looking = tmp_path / "bad.toml"
    secret_looking.write_text('[auth]\ntenant_id = "Abc8Q~s3cretValue.xyz_"\n', encoding="utf-8")
    bad = run_cli("run", SAMPLES / "analyst_list.csv", "--config", secret_looking, cwd=tmp_path)
    assert bad.code == 2 and "[auth] tenant_id" in bad.stderr
    assert "s3cretValue" not in bad.stderr
