"""Baseline for issue 5: the official ``msgraph-sdk`` sending the same batches one at a time.

The client is the SDK's own: ``GraphServiceClient`` on a ``GraphRequestAdapter`` whose httpx
client comes from ``GraphClientFactory.create_with_default_middleware`` with the options the SDK
itself passes, so the default middleware (and its default ``RetryHandler``) is untouched. Only
two things differ from a production client: the base URL is the simulator's loopback address,
and the bearer token is a fixed string handed out by a small access-token provider whose allowed
hosts are that loopback host (no Entra sign-in happens).

Graph's 429 for confirmCompromised carries no Retry-After, so the SDK falls back to its own
exponential backoff (kiota_http/middleware/retry_handler.py): about 3.25-4.25 s, then
3.5-4.5 s, then 4-5 s, and gives up after 3 retries, raising ``ODataError`` (an ``APIError``).

Needs the ``bench`` extra (``make bench`` installs it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from batcher.config import SimulatorSettings, is_loopback
from batcher.simulator import GraphSimulator, RunningSimulator

TOKEN = "bench-token"
RATE = 1.0
BATCHES = 10
BATCH_SIZE = 60
LATENCY = (0.05, 1.5)


def send_with_msgraph_sdk(base_url: str, token: str, batches: list[list[str]]) -> dict[str, float]:
    """Confirm each batch compromised through ``msgraph-sdk``, one request at a time.

    ``base_url`` is the Graph root including the version, e.g. ``http://127.0.0.1:PORT/v1.0``
    (a bare ``http://127.0.0.1:PORT`` gets ``/v1.0`` added). It must be a loopback address:
    this is a benchmark against the simulator, never against a real tenant.

    A batch whose request still fails after the SDK's own retries is counted in
    ``failed_batches`` and the run goes on. ``seconds`` is the wall time of the sends.
    """
    return asyncio.run(_send(_graph_root(base_url), token, batches))


def _graph_root(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    if not is_loopback(parts.hostname):
        raise ValueError(f"the msgraph-sdk baseline only talks to loopback, not {parts.hostname}")
    root = base_url.rstrip("/")
    return root if parts.path.strip("/") else f"{root}/v1.0"


async def _send(root: str, token: str, batches: list[list[str]]) -> dict[str, float]:
    # Imported here so that `python -m benchmarks` can tell the extra is missing (see main).
    import httpx
    from kiota_abstractions.api_error import APIError
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph import graph_request_adapter as sdk_adapter
    from msgraph.generated.identity_protection.risky_users.confirm_compromised.confirm_compromised_post_request_body import (  # noqa: E501
        ConfirmCompromisedPostRequestBody,
    )
    from msgraph_core import GraphClientFactory

    # The very call GraphRequestAdapter makes when it is given no client: default middleware,
    # default RetryHandler. Built here only so this function can close it afterwards.
    http_client = GraphClientFactory.create_with_default_middleware(options=sdk_adapter.options)
    http_client.base_url = httpx.URL(root)  # replaces the Graph host the factory sets
    adapter = GraphRequestAdapter(_auth_provider(token, urlsplit(root).hostname or ""), http_client)
    adapter.base_url = root  # without the trailing slash httpx adds to http_client.base_url
    client = GraphServiceClient(request_adapter=adapter)

    failed = 0
    try:
        start = time.perf_counter()
        for batch in batches:
            body = ConfirmCompromisedPostRequestBody(user_ids=batch)
            try:
                await client.identity_protection.risky_users.confirm_compromised.post(body)
            except (APIError, httpx.TransportError):
                failed += 1  # the SDK gave up on this batch (after its retries, for a 429)
        seconds = time.perf_counter() - start
    finally:
        await http_client.aclose()
    return {"seconds": seconds, "batches": len(batches), "failed_batches": failed}


def _auth_provider(token: str, host: str) -> Any:
    """A bearer-token provider that hands ``token`` to ``host`` and to no other host."""
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )

    class StaticTokenProvider(AccessTokenProvider):
        def __init__(self) -> None:
            self.validator = AllowedHostsValidator([host])

        async def get_authorization_token(
            self, uri: str, additional_authentication_context: dict[str, Any] | None = None
        ) -> str:
            return token if self.validator.is_url_host_valid(uri) else ""

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return self.validator

    return BaseBearerTokenAuthenticationProvider(StaticTokenProvider())


def run_once(rate: float, batches: int, latency: tuple[float, float]) -> dict[str, float]:
    """Send ``batches`` batches of 60 through the SDK to a fresh simulator; add its 429 count."""
    settings = SimulatorSettings(
        rate_per_second=rate,
        burst=1,
        latency_min_seconds=latency[0],
        latency_max_seconds=latency[1],
    )
    ids = [[str(uuid.uuid4()) for _ in range(BATCH_SIZE)] for _ in range(batches)]
    simulator = GraphSimulator(settings, tokens={TOKEN})
    with RunningSimulator(simulator) as server:
        result = send_with_msgraph_sdk(f"{server.url}/v1.0", TOKEN, ids)
    record = simulator.record
    return {
        **result,
        "rate": rate,
        "ideal_s": batches / rate,
        "throttled": record.statuses[429],
        "requests": record.requests,
        "confirmed": len(record.accepted["confirmCompromised"]),
    }


def main() -> None:
    try:
        import msgraph  # noqa: F401
    except ModuleNotFoundError:
        print("msgraph-sdk is not installed: `make bench` installs the bench extra", flush=True)
        return
    result = run_once(RATE, BATCHES, LATENCY)
    print(
        "| client | R (req/s) | batches | ideal s | seconds | failed batches | "
        "429s answered | requests | IDs confirmed |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| msgraph-sdk (default retry) | {result['rate']:g} | {result['batches']:g} | "
        f"{result['ideal_s']:.1f} | {result['seconds']:.1f} | {result['failed_batches']:g} | "
        f"{result['throttled']:g} | {result['requests']:g} | {result['confirmed']:g} |"
    )


if __name__ == "__main__":
    main()
