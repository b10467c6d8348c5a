"""Shared fixtures: the Graph simulator on a real loopback port (for the real CLI in a
subprocess); in-process rigs live in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, RunningSimulator
from tests.helpers import (  # noqa: F401  (re-exported for the test modules)
    BATCHER,
    FAST,
    FIXTURES,
    REPO,
    SAMPLES,
    TEST_TOKEN,
    CliResult,
    cli_env,
    run_cli,
    write_config,
)


@pytest.fixture
def simulator_factory() -> Iterator[Any]:
    """Start simulators with given settings; each is stopped at the end of the test."""
    running: list[RunningSimulator] = []

    def start(settings: SimulatorSettings = FAST) -> RunningSimulator:
        server = RunningSimulator(GraphSimulator(settings, tokens={TEST_TOKEN}))
        server.__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


@pytest.fixture
def simulator(simulator_factory: Any) -> RunningSimulator:
    server: RunningSimulator = simulator_factory()
    return server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
