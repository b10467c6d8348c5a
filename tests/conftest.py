"""Shared fixtures: the Graph simulator on a real loopback port (for the real CLI in a
subprocess); in-process rigs live in tests/helpers.py."""

from __future__ import annotations

import gc
import sys
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The e2e tests (seconds each) go first, so that the workers end on the in-process ones
    (milliseconds each) together, not one of them on a long e2e test: measured 62-65 s
    against 65-70 s on 2 cores. On Windows only, deselect (never skip) the tests marked
    ``posix``: they need a pty, resource limits, POSIX signals or fcntl locks (as with
    ``-m "not posix"``)."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: e2e first
    if sys.platform != "win32":
        return
    posix = [item for item in items if item.get_closest_marker("posix")]
    if posix:
        config.hook.pytest_deselected(items=posix)
        items[:] = [item for item in items if not item.get_closest_marker("posix")]


def pytest_collection_finish(session: pytest.Session) -> None:
    """The modules and tests collected live for the whole session: kept out of the garbage
    collector's walks (as the CLI does its modules), which the tests' many objects trigger."""
    gc.freeze()


@pytest.fixture(scope="session")
def servers() -> Iterator[list[RunningSimulator]]:
    """Loopback servers kept for the whole session (stopping one costs about 0.2 s): each
    test gets fresh simulators on them."""
    pool: list[RunningSimulator] = []
    yield pool
    for server in pool:
        server.__exit__(None, None, None)


@pytest.fixture
def simulator_factory(servers: list[RunningSimulator]) -> Iterator[Any]:
    """Serve fresh simulators with given settings, each on its own loopback port."""
    used = 0

    def start(settings: SimulatorSettings = FAST) -> RunningSimulator:
        nonlocal used
        simulator = GraphSimulator(settings, tokens={TEST_TOKEN})
        if used == len(servers):
            servers.append(RunningSimulator(simulator).__enter__())
        server = servers[used]
        server.simulator = simulator
        used += 1
        return server

    yield start


@pytest.fixture
def simulator(simulator_factory: Any) -> RunningSimulator:
    server: RunningSimulator = simulator_factory()
    return server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
