"""Signing in with azure-identity against the simulator's HTTPS identity endpoint, end to end."""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trustme
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import ClientSecretCredential, CredentialUnavailableError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from batcher.actions import ACTIONS
from batcher.auth import (
    CredentialToken,
    StaticToken,
    explain_sign_in_error,
    ssl_context,
    token_source,
)
from batcher.config import AuthSettings, SimulatorSettings
from batcher.errors import AuthError, ConfigError
from batcher.graph import GraphClient, http_client
from batcher.simulator import SIMULATED_TENANT, GraphSimulator, RunningSimulator
from tests.conftest import SAMPLES, CliResult, cli_env, run_cli, write_config

TENANT = "11111111-2222-4333-8444-555555555555"
APP = "6a1c7c6e-0b4e-4f4e-9a57-3c2d7f0e9b11"
SECRET = "Qx8~kV2.simulated-client-secret_0123456789"
CERT_PASSWORD = "pfx-password-7f3a9c"
AZURE_CLI_CLIENT = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"  # azure-identity's device-code default
CONFIRM = ACTIONS["confirm"]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ENVIRONMENT = (
    "AZURE_AUTHORITY_HOST",
    "AZURE_REGIONAL_AUTHORITY_NAME",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "BATCHER_CLIENT_SECRET",
    "BATCHER_CERTIFICATE_PASSWORD",
)


class FakeClock:
    """A clock the test moves by hand (seconds since the epoch, like time.time)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Tls:
    ca: trustme.CA
    ca_bundle: Path
    server_pem: Path
    dir: Path


@dataclass
class Tenant:
    """One simulated tenant: sign-in and Graph over HTTPS, with the CA that signs its cert."""

    sim: GraphSimulator
    server: RunningSimulator
    clock: FakeClock
    tls: Tls
    prompts: list[str] = field(default_factory=list)  # what the device code showed the admin

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self, **changes: Any) -> AuthSettings:
        values: dict[str, Any] = {
            "method": "client_secret",
            "tenant_id": TENANT,
            "client_id": APP,
            "authority_host": self.url,
            "ca_bundle": str(self.tls.ca_bundle),
            **changes,
        }
        return AuthSettings(**values)

    def source(
        self, *, cloud: str = "global", clock: FakeClock | None = None, **changes: Any
    ) -> CredentialToken:
        tokens = token_source(
            self.settings(**changes),
            simulator=False,
            cloud=cloud,
            sign_in_retries=0,
            clock=clock or self.clock,
            prompt=self.prompts.append,
        )
        assert isinstance(tokens, CredentialToken)
        return tokens

    def graph_accepts(self, token: str) -> bool:
        context = ssl_context(self.settings().ca_bundle)  # Graph trusts what sign-in trusts
        assert context is not None
        response = httpx.post(
            f"{self.url}/v1.0{CONFIRM.path}",
            json={"userIds": [str(uuid.uuid4())]},
            headers={"Authorization": f"Bearer {token}"},
            verify=context,
        )
        return response.status_code == 204


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Nothing here may reach Microsoft, or any host off this machine; fail if anything tries."""
    tried: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.endswith(".invalid"):  # never resolves (RFC 6761): answered here, not asked
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if name not in LOOPBACK:
            tried.append(name)
            raise OSError(f"test refuses to resolve {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BATCHER_CLIENT_SECRET", SECRET)
    yield tried
    assert tried == [], f"tried to reach {tried}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    where = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(where / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(where / "server.pem")
    )
    return Tls(ca, where / "ca.pem", where / "server.pem", where)


@pytest.fixture(scope="module")
def https_servers(tls: Tls) -> Iterator[list[RunningSimulator]]:
    """HTTPS loopback servers for the module; each test serves fresh tenants on them."""
    pool: list[RunningSimulator] = []
    yield pool
    for server in pool:
        server.__exit__(None, None, None)


@pytest.fixture
def tenant_factory(tls: Tls, https_servers: list[RunningSimulator]) -> Iterator[Any]:
    used = 0

    def start(**settings: Any) -> Tenant:
        nonlocal used
        # azure-identity stamps a token's expires_on with the host's clock (it cannot be
        # injected): the fake clock starts where the host's reads, and moves only by hand.
        clock = FakeClock(time.time())
        values = {"client_secret": SECRET, "latency_max_seconds": 0.0, **settings}
        values.setdefault("latency_min_seconds", 0.0)
        values.setdefault("rate_per_second", 1000.0)
        values.setdefault("burst", 100)
        sim = GraphSimulator(SimulatorSettings(**values), clock=clock)
        if used == len(https_servers):
            https_servers.append(
                RunningSimulator(
                    sim, ssl_certfile=tls.server_pem, ssl_keyfile=tls.server_pem
                ).__enter__()
            )
        server = https_servers[used]
        server.simulator = sim
        used += 1
        return Tenant(sim, server, clock, tls)

    yield start


@pytest.fixture
def tenant(tenant_factory: Any) -> Tenant:
    made: Tenant = tenant_factory()
    return made


def token_now(tokens: CredentialToken) -> str:
    return anyio.run(tokens.token)


# -- client secret, end to end over TLS ----------------------------------------------------------
def test_a_client_secret_signs_in_over_tls_and_graph_takes_the_token(tenant: Tenant) -> None:
    tokens = tenant.source()
    try:
        token = token_now(tokens)
    finally:
        tokens.close()
    [issued] = tenant.sim.issued
    assert issued.token == token
    assert (issued.how, issued.tenant, issued.client_id) == ("secret", TENANT, APP)
    assert issued.scope == "https://graph.microsoft.com/.default"
    assert tenant.graph_accepts(token)


@pytest.mark.parametrize(
    ("cloud", "login", "scope"),
    [
        ("global", "login.microsoftonline.com", "https://graph.microsoft.com/.default"),
        ("usgov", "login.microsoftonline.us", "https://graph.microsoft.us/.default"),
        ("usgovdod", "login.microsoftonline.us", "https://dod-graph.microsoft.us/.default"),
    ],
)
def test_each_cloud_signs_in_at_its_authority_for_its_graph(
    tenant: Tenant, cloud: str, login: str, scope: str
) -> None:
    national = token_source(
        tenant.settings(authority_host=""), simulator=False, cloud=cloud, sign_in_retries=0
    )
    assert isinstance(national, CredentialToken)
    assert (national.authority, national.scope) == (f"https://{login}", scope)
    national.close()  # never used: that host is Microsoft's

    rehearsal = tenant.source(cloud=cloud)  # authority_host points at the simulator
    try:
        token_now(rehearsal)
    finally:
        rehearsal.close()
    assert [i.scope for i in tenant.sim.issued] == [scope]


def test_concurrent_workers_trigger_one_sign_in(tenant: Tenant) -> None:
    tokens = tenant.source()
    got: list[str] = []

    async def worker() -> None:
        got.append(await tokens.token())

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)

    try:
        anyio.run(main)
    finally:
        tokens.close()
    assert len(tenant.sim.issued) == 1
    assert got == [tenant.sim.issued[0].token] * 8


def test_a_token_is_replaced_five_minutes_before_it_expires(tenant: Tenant) -> None:
    tokens = tenant.source()  # the simulator and the source share the fake clock
    try:
        first = token_now(tokens)
        assert tokens.expires_on is not None
        tenant.clock.advance(tokens.expires_on - tenant.clock() - 301)  # 301 s left
        assert token_now(tokens) == first
        assert len(tenant.sim.issued) == 1
        tenant.clock.advance(2)  # 299 s left: time to sign in again
        second = token_now(tokens)
    finally:
        tokens.close()
    assert second != first
    assert [i.how for i in tenant.sim.issued] == ["secret", "secret"]
    assert tenant.clock() < tenant.sim.issued[0].expires_at  # replaced before it expired
    assert tenant.graph_accepts(first)
    assert tenant.graph_accepts(second)


def test_a_short_lived_token_is_kept_for_half_its_life(tenant_factory: Any) -> None:
    tenant = tenant_factory(token_lifetime_seconds=120)
    tokens = tenant.source()
    try:
        signed_in = tenant.clock()
        first = token_now(tokens)
        assert tokens.expires_on is not None
        half = (tokens.expires_on - signed_in) / 2  # about 60 s of a 120 s life
        tenant.clock.advance(half - 1)
        assert token_now(tokens) == first
        tenant.clock.advance(2)
        assert token_now(tokens) != first
    finally:
        tokens.close()
    assert len(tenant.sim.issued) == 2


def test_a_401_for_an_expired_token_signs_in_again(tenant: Tenant) -> None:
    # The source's own clock says the token is fresh; Graph (the simulator's clock) says it
    # expired: skew, or a token revoked early. Only the 401 can tell.
    tokens = tenant.source(clock=FakeClock(tenant.clock()))
    context = ssl.create_default_context(cafile=str(tenant.tls.ca_bundle))

    async def main() -> tuple[int, int]:
        async with http_client(tokens, timeout=10, verify=context) as http:
            client = GraphClient(http, tenant.url, "v1.0")
            first = await client.post_ids(CONFIRM, [str(uuid.uuid4())], "crid-1")
            tenant.clock.advance(3600)
            # Graph refuses the expired token; the bearer flow signs in again and resends.
            again = await client.post_ids(CONFIRM, [str(uuid.uuid4())], "crid-2")
            return first.status, again.status

    try:
        assert anyio.run(main) == (204, 204)
    finally:
        tokens.close()
    assert len(tenant.sim.issued) == 2
    assert tenant.sim.record.statuses[401] == 1


def test_a_late_401_for_an_old_token_does_not_throw_away_the_new_one(tenant: Tenant) -> None:
    # Two workers sent requests with the same token; both get 401. The first worker's 401
    # brings a new token; the second 401 arrives after that and must not cost another sign-in.
    tokens = tenant.source()
    seen: dict[str, tuple[str, str]] = {}

    async def worker(name: str, turn: anyio.Event, done: anyio.Event) -> None:
        old = await tokens.token()
        await turn.wait()
        tokens.invalidate()  # what the graph client does after a 401
        seen[name] = (old, await tokens.token())
        done.set()

    async def main() -> None:
        first_turn, first_done, second_done = anyio.Event(), anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, "first", first_turn, first_done)
            tg.start_soon(worker, "second", first_done, second_done)
            first_turn.set()

    try:
        anyio.run(main)
    finally:
        tokens.close()
    old, new = (i.token for i in tenant.sim.issued)
    assert seen == {"first": (old, new), "second": (old, new)}
    assert not tokens.refused_after_refresh  # both 401s were for the old token


def test_a_401_for_the_token_fetched_after_a_401_says_stop(tenant: Tenant) -> None:
    tokens = tenant.source()
    try:
        token_now(tokens)
        tenant.clock.advance(3400)  # renewed before expiry: that is not a refusal
        token_now(tokens)
        tokens.invalidate()  # Graph refused the renewed token: sign in again, once
        assert not tokens.refused_after_refresh
        token_now(tokens)
        tokens.invalidate()  # ... and refused the new one too
    finally:
        tokens.close()
    assert tokens.refused_after_refresh
    assert len(tenant.sim.issued) == 3
    static = StaticToken("static-token")
    static.invalidate()  # a static token cannot be renewed: its first 401 is final
    assert static.refused_after_refresh


def test_invalidate_before_any_sign_in_is_harmless(tenant: Tenant) -> None:
    tokens = tenant.source()
    tokens.invalidate()
    try:
        token_now(tokens)
    finally:
        tokens.close()
    assert len(tenant.sim.issued) == 1


# -- failures: one actionable line -------------------------------------------------------------
def test_a_wrong_client_secret_is_one_actionable_line(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "Zz9~wrong-secret-value_9876543210abcdef"
    monkeypatch.setenv("BATCHER_CLIENT_SECRET", wrong)
    tokens = tenant.source()
    with pytest.raises(AuthError) as refused:
        token_now(tokens)
    tokens.close()
    message = str(refused.value)
    assert message.startswith("Entra ID refused the sign-in (client_secret, AADSTS7000215)")
    assert "Value (not its Secret ID)" in message
    assert "correlation ID" in message
    assert "\n" not in message and "\r" not in message
    assert wrong not in message and SECRET not in message
    assert tenant.sim.issued == []


def tokens_error(tenant: Tenant, **changes: Any) -> AuthError:
    tokens = tenant.source(**changes)
    try:
        token_now(tokens)
    except AuthError as exc:
        return exc
    finally:
        tokens.close()
    raise AssertionError("the sign-in did not fail")


def test_an_untrusted_sign_in_certificate_points_at_ca_bundle(tenant: Tenant) -> None:
    error = tokens_error(tenant, ca_bundle="")  # the system's CAs only: the simulator's is unknown
    assert str(error) == (
        f"sign-in failed (client_secret): could not verify the TLS certificate of "
        f"{tenant.url.removeprefix('https://')}; if a proxy inspects TLS, set [auth] ca_bundle "
        "to its CA certificates (PEM)"
    )
    assert tenant.sim.issued == []


def unreachable(host: str, cause: str) -> str:
    return (
        f"sign-in failed (client_secret): could not reach {host} ({cause}); check the network, "
        "the proxy variables (HTTPS_PROXY, NO_PROXY) and [auth] authority_host"
    )


def test_a_refused_connection_to_the_authority_says_so(tenant: Tenant) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = tokens_error(tenant, authority_host=f"https://127.0.0.1:{port}")
    assert str(error) == unreachable(f"127.0.0.1:{port}", "connection refused")


def test_an_authority_whose_name_does_not_resolve_says_dns(tenant: Tenant) -> None:
    error = tokens_error(tenant, authority_host="https://login.batcher.invalid")
    assert str(error) == unreachable("login.batcher.invalid", "name not resolved (DNS)")


def test_an_authority_that_does_not_answer_says_timed_out(tenant: Tenant) -> None:
    # A listener whose accept queue is full and never drained: the kernel drops further SYNs,
    # so the sign-in's connect times out (after connection_timeout, a quarter of a second here).
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(2)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        authority = f"https://127.0.0.1:{port}"

        def credential() -> ClientSecretCredential:
            return ClientSecretCredential(
                TENANT,
                APP,
                SECRET,
                authority=authority,
                disable_instance_discovery=True,
                retry_total=0,
                connection_timeout=0.25,
            )

        tokens = CredentialToken(
            "client_secret", credential, "https://graph.microsoft.com/.default", authority=authority
        )
        try:
            with pytest.raises(AuthError) as refused:
                token_now(tokens)
        finally:
            tokens.close()
            for filler in fillers:
                filler.close()
    assert str(refused.value) == unreachable(f"127.0.0.1:{port}", "timed out")


@pytest.mark.parametrize(
    ("method", "error", "expected"),
    [
        (
            "client_secret",
            ClientAuthenticationError(
                "Authentication failed: AADSTS1002012: The provided value for scope is not "
                "valid. Client credential flows must have a scope value with /.default.\r\n"
                "Trace ID: 1\r\nCorrelation ID: 0b9e4c1a-3a6f-4a59-9e0e-6f1f1e0c2d3b"
            ),
            "Entra ID refused the sign-in (client_secret, AADSTS1002012): The provided value "
            "for scope is not valid. (see https://login.microsoftonline.com/error?code=1002012)"
            "; correlation ID 0b9e4c1a-3a6f-4a59-9e0e-6f1f1e0c2d3b",
        ),
        (
            "certificate",
            ClientAuthenticationError("Authentication failed: AADSTS700027: Client assertion"),
            "Entra ID refused the sign-in (certificate, AADSTS700027): the certificate is not "
            "registered on the app: upload its public part to the app registration's "
            "Certificates & secrets page",
        ),
        (
            "managed_identity",
            CredentialUnavailableError("ManagedIdentityCredential authentication unavailable"),
            "sign-in failed (managed_identity): no managed identity on this machine; run "
            "batcher on an Azure VM, App Service or container with a managed identity that "
            "holds IdentityRiskyUser.ReadWrite.All, or choose another [auth] method",
        ),
        (
            "azure_cli",
            CredentialUnavailableError("Please run 'az login' to set up an account"),
            "sign-in failed (azure_cli): the Azure CLI is not signed in; run az login --tenant "
            "<tenant> (for US Government first: az cloud set --name AzureUSGovernment)",
        ),
        (
            "device_code",
            ClientAuthenticationError("Timed out waiting for user to authenticate"),
            "sign-in failed (device_code): the device-code sign-in was not completed in time; "
            "run again and sign in",
        ),
        (
            "client_secret",
            ServiceRequestError("the connection broke"),
            "sign-in failed (client_secret): could not reach login.example; check the network, "
            "the proxy variables (HTTPS_PROXY, NO_PROXY) and [auth] authority_host",
        ),
    ],
    ids=[
        "unknown-code",
        "known-code",
        "no-managed-identity",
        "az-not-signed-in",
        "timeout",
        "unreachable-cause-unknown",
    ],
)
def test_sign_in_errors_become_one_line_that_says_what_to_do(
    method: str, error: Exception, expected: str
) -> None:
    assert explain_sign_in_error(error, method=method, authority="https://login.example") == (
        expected
    )


def test_azure_cli_missing_from_path_says_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no az here
    tokens = token_source(AuthSettings(method="azure_cli"), simulator=False, sign_in_retries=0)
    with pytest.raises(AuthError) as refused:
        anyio.run(tokens.token)
    assert str(refused.value) == (
        "sign-in failed (azure_cli): the Azure CLI (az) is not on PATH; install it and run "
        "az login --tenant <tenant>"
    )


# -- certificate -------------------------------------------------------------------------------
def client_certificate(tls: Tls, name: str) -> trustme.LeafCert:
    return tls.ca.issue_cert(f"{name}.batcher.test", key_type=trustme.KeyType.RSA)


def test_a_pem_certificate_signs_in_with_a_client_assertion(tenant: Tenant) -> None:
    pem = tenant.tls.dir / "client.pem"
    client_certificate(tenant.tls, "pem").private_key_and_cert_chain_pem.write_to_path(str(pem))
    tokens = tenant.source(method="certificate", certificate_path=str(pem))
    try:
        token = token_now(tokens)
    finally:
        tokens.close()
    [issued] = tenant.sim.issued
    assert (issued.how, issued.client_id, issued.token) == ("certificate", APP, token)
    assert tenant.graph_accepts(token)


def test_a_pfx_certificate_opens_with_the_password_from_the_environment(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaf = client_certificate(tenant.tls, "pfx")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    pfx = tenant.tls.dir / "client.pfx"
    pfx.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"batcher",
            key,  # type: ignore[arg-type]
            cert,
            None,
            serialization.BestAvailableEncryption(CERT_PASSWORD.encode()),
        )
    )
    monkeypatch.setenv("BATCHER_CERTIFICATE_PASSWORD", CERT_PASSWORD)
    tokens = tenant.source(method="certificate", certificate_path=str(pfx))
    try:
        token = token_now(tokens)
    finally:
        tokens.close()
    assert [i.how for i in tenant.sim.issued] == ["certificate"]
    assert tenant.graph_accepts(token)


@pytest.mark.parametrize(
    ("header", "code"),
    [({"alg": "RS256", "typ": "JWT"}, "AADSTS700027"), (None, "AADSTS50027")],
    ids=["no-x5t-or-kid", "not-a-jwt"],
)
def test_the_simulator_wants_a_jwt_assertion_naming_its_certificate(
    tenant: Tenant, header: dict[str, str] | None, code: str
) -> None:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"iss": APP, "sub": APP, "aud": "token-endpoint", "exp": 2_000_000_000}
    assertion = f"{part(header)}.{part(claims)}.signature" if header else "not-a-jwt"
    response = httpx.post(
        f"{tenant.url}/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": APP,
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
        verify=ssl.create_default_context(cafile=str(tenant.tls.ca_bundle)),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_description"].startswith(code)
    assert tenant.sim.issued == []


# -- device code ---------------------------------------------------------------------------------
def test_device_code_shows_the_code_through_its_prompt_and_signs_the_admin_in(
    tenant: Tenant, capfd: pytest.CaptureFixture[str]
) -> None:
    tokens = tenant.source(method="device_code", client_id="")
    try:
        token = token_now(tokens)
    finally:
        tokens.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the library prints nothing: the CLI shows the prompt
    [shown] = tenant.prompts
    assert f"open {tenant.url}/devicelogin and enter the code " in shown
    [issued] = tenant.sim.issued
    assert (issued.how, issued.client_id, issued.tenant) == (
        "device_code",
        AZURE_CLI_CLIENT,
        TENANT,
    )
    assert tenant.graph_accepts(token)


def test_device_code_refreshes_silently_then_prompts_again_after_a_401(
    tenant_factory: Any,
) -> None:
    # 240 s tokens: MSAL's cache treats anything under 5 minutes as due, so a refresh really
    # goes to the token endpoint with the refresh token.
    tenant = tenant_factory(token_lifetime_seconds=240)
    tokens = tenant.source(method="device_code", client_id=APP)
    try:
        first = token_now(tokens)
        tenant.clock.advance(121)  # past half the token's life
        second = token_now(tokens)
        prompts_after_refresh = len(tenant.prompts)
        tokens.invalidate()
        third = token_now(tokens)
    finally:
        tokens.close()
    assert len({first, second, third}) == 3
    assert [i.how for i in tenant.sim.issued] == ["device_code", "refresh_token", "device_code"]
    assert prompts_after_refresh == 1
    assert len(tenant.prompts) == 2  # signed in again after the 401, with a new code


# -- managed identity ----------------------------------------------------------------------------
def test_managed_identity_signs_in_at_the_app_service_endpoint(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{tenant.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", SECRET)
    tokens = tenant.source(method="managed_identity", client_id="mi-client", cloud="usgov")
    try:
        token = token_now(tokens)
    finally:
        tokens.close()
    [issued] = tenant.sim.issued
    assert (issued.how, issued.client_id, issued.tenant) == (
        "managed_identity",
        "mi-client",
        SIMULATED_TENANT,
    )
    assert issued.scope == "https://graph.microsoft.us/.default"
    assert tenant.graph_accepts(token)


def test_a_token_is_renewed_by_the_sources_own_clock_alone(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The managed identity endpoint stamps expires_on with the simulator's clock, which the
    # source shares; both read 30 days ahead of the host's. Were the host's clock read
    # anywhere, the token would look 30 days longer-lived and never be renewed.
    tenant.clock.advance(30 * 24 * 3600)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{tenant.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", SECRET)
    tokens = tenant.source(method="managed_identity", client_id="mi-client")
    try:
        first = token_now(tokens)
        assert tokens.expires_on == int(tenant.sim.issued[0].expires_at)
        tenant.clock.advance(tokens.expires_on - tenant.clock() - 301)
        assert token_now(tokens) == first
        tenant.clock.advance(2)
        assert token_now(tokens) != first
    finally:
        tokens.close()
    assert len(tenant.sim.issued) == 2


# -- nothing shows a secret or a token -----------------------------------------------------------
def test_no_repr_message_traceback_or_log_shows_the_secret_or_a_token(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every library's log, as verbose as it gets
    good = tenant.source()
    try:
        token = token_now(good)
    finally:
        good.close()
    wrong = "Zz9~another-wrong-secret_0123456789abc"
    monkeypatch.setenv("BATCHER_CLIENT_SECRET", wrong)
    bad = tenant.source()
    with pytest.raises(AuthError) as refused:
        token_now(bad)
    bad.close()
    texts = [
        repr(good),
        str(good),
        repr(bad),
        str(refused.value),
        repr(refused.value),
        "".join(traceback.format_exception(refused.value)),
        repr(StaticToken(token)),
        caplog.text,
    ]
    assert caplog.records  # azure-identity and MSAL did log
    for text in texts:
        for secret in (SECRET, wrong, token, *(i.token for i in tenant.sim.issued)):
            assert secret not in text
        assert "Bearer " not in text


# -- the command line, end to end ----------------------------------------------------------------
def cli_run(tenant: Tenant, graph: RunningSimulator, tmp_path: Path, secret: str) -> CliResult:
    config = write_config(
        tmp_path / "config.toml",
        graph.url,
        auth={
            "method": "client_secret",
            "tenant_id": TENANT,
            "client_id": APP,
            "authority_host": tenant.url,
            "ca_bundle": str(tenant.tls.ca_bundle),
        },
    )
    env = cli_env(BATCHER_CLIENT_SECRET=secret, BATCHER_ACCESS_TOKEN="")
    for name in ENVIRONMENT:
        if not name.startswith("BATCHER_"):
            env.pop(name, None)
    sample = SAMPLES / "analyst_list.csv"
    return run_cli("run", "--yes", sample, "--config", config, "--json", cwd=tmp_path, env=env)


@pytest.mark.e2e
def test_the_cli_signs_in_with_a_client_secret_and_sends_over_tls_trusting_ca_bundle(
    tenant: Tenant, tmp_path: Path
) -> None:
    # Sign-in and Graph both over HTTPS, with a certificate from a CA that only [auth] ca_bundle
    # names (no system store holds it): the one setting serves both.
    result = cli_run(tenant, tenant.server, tmp_path, SECRET)
    assert tenant.server.url.startswith("https://")
    assert result.code == 0, result.stderr
    # who was already confirmed, then confirmCompromised: both reached Graph over TLS
    assert tenant.sim.record.requests == 2
    assert result.json()["result"]["actions"]["confirm"]["done"] == 45
    assert [i.how for i in tenant.sim.issued] == ["secret"]
    for text in (result.stdout, result.stderr):
        assert SECRET not in text
        assert tenant.sim.issued[0].token not in text


@pytest.mark.e2e
def test_the_cli_stops_on_a_refused_sign_in_with_exit_3_and_stays_resumable(
    tenant: Tenant, tmp_path: Path
) -> None:
    wrong = "Zz9~cli-wrong-secret_0123456789abcdef"
    with RunningSimulator(tenant.sim) as graph:
        refused = cli_run(tenant, graph, tmp_path, wrong)
        sent_while_refused = tenant.sim.record.requests
        resumed = cli_run(tenant, graph, tmp_path, SECRET)
    assert refused.code == 3, refused.stderr
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "batcher: error: Entra ID refused the sign-in (client_secret, AADSTS7000215)"
    )
    assert wrong not in refused.stderr + refused.stdout
    assert sent_while_refused == 0
    assert resumed.code == 0, resumed.stderr
    assert resumed.json()["result"]["actions"]["confirm"]["done"] == 45


def test_device_code_without_anywhere_to_show_the_code_is_a_config_error(tenant: Tenant) -> None:
    settings = tenant.settings(method="device_code", client_id="")
    with pytest.raises(ConfigError, match="needs somewhere to show the code"):
        token_source(settings, simulator=False)
