"""Bearer tokens for Graph: where they come from and when they are refreshed."""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from batcher.clouds import CLOUDS
from batcher.config import AuthSettings
from batcher.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

SIMULATOR_TOKEN = "simulator-token"
REFRESH_MARGIN_SECONDS = 300.0  # sign in again when less than this is left of a token's life
SIGN_IN_RETRIES = 3  # azure-core retries of one sign-in request (connection errors, 5xx)

# azure-identity logs every failed get_token at WARNING. With no handler configured, Python
# would print those records to stderr next to the one-line AuthError; an application that
# configures logging still receives them through the root logger.
logging.getLogger("azure").addHandler(logging.NullHandler())
logging.getLogger("msal").addHandler(logging.NullHandler())


class TokenSource(Protocol):
    """Gives the current bearer token; ``invalidate`` after a 401 forces a new one.

    ``refused_after_refresh`` is true once Graph refused a token that was itself fetched after
    a 401 (at once for a static token, which cannot be refreshed): sign-in cannot fix it.
    """

    refused_after_refresh: bool

    async def token(self) -> str: ...

    def invalidate(self) -> None: ...

    def close(self) -> None: ...


class StaticToken:
    """A token handed over as is (from an environment variable); it cannot be refreshed."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.refused_after_refresh = False

    async def token(self) -> str:
        return self.value

    def invalidate(self) -> None:
        """Nothing to refresh: Graph refused the only token there is."""
        self.refused_after_refresh = True

    def close(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


class Credential(Protocol):
    """What batcher uses of an azure-identity credential (all of them are synchronous)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Held:
    value: str
    refresh_at: float  # by the source's clock
    after_refusal: bool  # signed in because Graph refused the token before this one

    def __repr__(self) -> str:
        return f"_Held(<redacted>, refresh_at={self.refresh_at})"


class CredentialToken:
    """Tokens from an azure-identity credential.

    One sign-in at a time (an anyio lock: concurrent workers wait for it, they do not start
    their own); a new token when less than ``refresh_margin`` seconds are left, or after Graph
    refused the current one (``invalidate``). The credential's own cache would hand the refused
    token back, so after a 401 (and, for non-interactive methods, before expiry) a fresh
    credential is built. Device code keeps its credential for refreshes before expiry (MSAL
    redeems the refresh token silently) and prompts again only after a 401.

    ``refused_after_refresh`` turns true when Graph refuses a token that was itself fetched
    because Graph refused the one before: signing in again does not help, stop the run.
    """

    def __init__(
        self,
        method: str,
        make_credential: Callable[[], Credential],
        scope: str,
        *,
        authority: str,
        interactive: bool = False,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
        secrets: Iterable[str] = (),
    ) -> None:
        self.method = method
        self.scope = scope
        self.authority = authority
        self._make = make_credential
        self._credential = make_credential()
        self._interactive = interactive
        self._margin = refresh_margin
        self._clock = clock
        self._secrets = [s for s in secrets if s]
        self._current: _Held | None = None
        self._signed_in = False
        self._refused = False
        self.refused_after_refresh = False
        self._lock = anyio.Lock()
        # Which token this task was handed last: invalidate() drops the current token only if
        # that is the one Graph refused, so a burst of 401s for one old token (several workers
        # had it in flight) costs one sign-in, not one each.
        self._handed_out: ContextVar[str | None] = ContextVar(
            f"batcher_token_{id(self)}", default=None
        )

    async def token(self) -> str:
        held = self._current
        if held is None or self._clock() >= held.refresh_at:
            async with self._lock:
                held = self._current
                if held is None or self._clock() >= held.refresh_at:
                    held = await self._sign_in()
                    self._current = held
        self._handed_out.set(held.value)
        return held.value

    def invalidate(self) -> None:
        """Graph answered 401: the next ``token()`` signs in afresh."""
        held = self._current
        refused = self._handed_out.get()
        if held is not None and refused in (None, held.value):
            self.refused_after_refresh = self.refused_after_refresh or held.after_refusal
            self._current = None
            self._refused = True

    def close(self) -> None:
        """Close the credential's HTTP session."""
        self._credential.close()

    async def _sign_in(self) -> _Held:
        if self._signed_in and (self._refused or not self._interactive):
            # A fresh credential has an empty cache, so it really asks Entra ID again.
            old, self._credential = self._credential, self._make()
            old.close()
        after_refusal, self._refused = self._refused, False
        credential = self._credential
        started = self._clock()
        try:
            access = await anyio.to_thread.run_sync(
                functools.partial(credential.get_token, self.scope), abandon_on_cancel=True
            )
        except Exception as exc:  # whatever the credential raises is a failed sign-in
            raise AuthError(self._explain(exc)) from None
        self._signed_in = True
        self._secrets.append(access.token)
        lifetime = max(0.0, access.expires_on - time.time())
        margin = min(self._margin, lifetime / 2)  # a short-lived token is still used a while
        return _Held(access.token, started + lifetime - margin, after_refusal)

    def _explain(self, exc: BaseException) -> str:
        message = explain_sign_in_error(exc, method=self.method, authority=self.authority)
        return redact(message, self._secrets)

    def __repr__(self) -> str:
        return (
            f"CredentialToken(method={self.method!r}, authority={self.authority!r}, "
            f"scope={self.scope!r}, token=<redacted>)"
        )


def token_source(
    settings: AuthSettings,
    *,
    simulator: bool,
    cloud: str = "global",
    sign_in_retries: int = SIGN_IN_RETRIES,
    clock: Callable[[], float] = time.time,
) -> TokenSource:
    """Build the token source the settings ask for; ConfigError says what to set."""
    if simulator:
        return StaticToken(SIMULATOR_TOKEN)
    if settings.method == "token":
        return _static_token(settings)
    if cloud not in CLOUDS:
        raise ConfigError(f"[graph] cloud: unknown cloud {cloud!r}; use one of {', '.join(CLOUDS)}")
    graph_cloud = CLOUDS[cloud]
    authority = settings.authority_host or graph_cloud.authority
    make, secrets = _credential_factory(settings, authority, sign_in_retries)
    try:
        return CredentialToken(
            settings.method,
            make,
            graph_cloud.scope,
            authority=authority,
            interactive=settings.method == "device_code",
            clock=clock,
            secrets=secrets,
        )
    except (ValueError, TypeError) as exc:  # the credential refused its arguments
        reason = redact(_one_line(str(exc)), secrets)
        raise ConfigError(f"[auth] method = {settings.method!r}: {reason}") from None


def _static_token(settings: AuthSettings) -> StaticToken:
    value = os.environ.get(settings.token_env, "").strip()
    if not value:
        raise ConfigError(
            f"[auth] method = 'token' needs a bearer token in ${settings.token_env}; e.g. "
            f"export {settings.token_env}=$(az account get-access-token "
            "--resource https://graph.microsoft.com --query accessToken -o tsv)"
        )
    return StaticToken(value.removeprefix("Bearer ").strip())


def _credential_factory(
    settings: AuthSettings, authority: str, retries: int
) -> tuple[Callable[[], Credential], list[str]]:
    """A function building a fresh azure-identity credential, and the secrets it holds."""
    # Imported here: azure-identity takes a while to import and most commands never sign in.
    import azure.identity as identity

    tls: dict[str, Any] = {}
    if settings.ca_bundle:
        tls["connection_verify"] = _ca_bundle(settings.ca_bundle)
    entra: dict[str, Any] = {
        **tls,
        "retry_total": retries,
        "authority": authority,
        # A custom authority (rehearsal server, tests) is not Microsoft's: do not ask
        # login.microsoft.com to validate it. The national clouds are well known to MSAL.
        "disable_instance_discovery": bool(settings.authority_host),
    }
    method = settings.method
    if method == "client_secret":
        secret = _client_secret(settings)
        return (
            lambda: identity.ClientSecretCredential(
                settings.tenant_id, settings.client_id, secret, **entra
            )
        ), [secret]
    if method == "certificate":
        data = _read_certificate(settings.certificate_path)
        password = os.environ.get(settings.certificate_password_env) or None

        def certificate() -> Credential:
            return identity.CertificateCredential(
                settings.tenant_id,
                settings.client_id,
                certificate_data=data,
                password=password,
                **entra,
            )

        _check_certificate(settings, certificate, data, password)
        return certificate, [password or ""]
    if method == "managed_identity":
        # Its own retry policy stays: IMDS can answer 410 for a minute while a VM starts.
        client_id = settings.client_id or None
        return (lambda: identity.ManagedIdentityCredential(client_id=client_id, **tls)), []
    if method == "azure_cli":
        tenant_id = settings.tenant_id or ""
        return (lambda: identity.AzureCliCredential(tenant_id=tenant_id)), []
    if method == "device_code":
        client: dict[str, Any] = {"client_id": settings.client_id} if settings.client_id else {}
        return (
            lambda: identity.DeviceCodeCredential(
                tenant_id=settings.tenant_id, prompt_callback=_prompt, **client, **entra
            )
        ), []
    raise ConfigError(f"[auth] method: unknown method {method!r}")  # pragma: no cover


def _ca_bundle(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"[auth] ca_bundle {path}: cannot read it ({exc.strerror}); set it to a PEM file "
            "of the CA certificates that sign the sign-in endpoint"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(
            f"[auth] ca_bundle {path}: no PEM certificate in it; export the CA certificate(s) "
            "as PEM (-----BEGIN CERTIFICATE-----)"
        )
    return str(Path(path).resolve())


def _client_secret(settings: AuthSettings) -> str:
    if settings.client_secret_file:
        # The path is not echoed: a secret pasted here by mistake must not reach the terminal.
        try:
            secret = Path(settings.client_secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                f"[auth] client_secret_file: cannot read it ({reason}); set it to the path of a "
                "file holding only the client secret's value"
            ) from None
        if not secret:
            raise ConfigError(
                "[auth] client_secret_file: the file is empty; write the client secret's value "
                "(not its ID) into it"
            )
        return secret
    secret = os.environ.get(settings.client_secret_env, "").strip()
    if not secret:
        raise ConfigError(
            f"[auth] method = 'client_secret' needs the secret in ${settings.client_secret_env} "
            f"(export {settings.client_secret_env}=...; the secret's Value, not its ID) "
            "or in a file named by client_secret_file"
        )
    return secret


def _read_certificate(path: str) -> bytes:
    # The path is not echoed: PEM text pasted here by mistake must not reach the terminal.
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"[auth] certificate_path: cannot read it ({exc.strerror}); set it to a PEM "
            "(private key + certificate) or PFX file readable by this user"
        ) from None


def _check_certificate(
    settings: AuthSettings, make: Callable[[], Credential], data: bytes, password: str | None
) -> None:
    """Load the certificate now (as the credential does) to say clearly what is wrong."""
    env = settings.certificate_password_env
    try:
        make().close()
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise ConfigError(
            f"[auth] certificate_path: the private key is encrypted; export its password in "
            f"${env} (certificate_password_env)"
        ) from None
    except ValueError as exc:
        text = str(exc)
        if "RSA" in text:
            reason = "Entra ID needs an RSA key; create the certificate with an RSA key"
        elif password and ("decrypt" in text.lower() or "password" in text.lower()):
            reason = f"the password in ${env} does not open it"
        elif b"-----BEGIN" in data and b"PRIVATE KEY-----" not in data:
            reason = "the PEM file has no private key; put the key and the certificate in it"
        else:
            reason = "not a PEM (private key + certificate) or PFX file it can open" + (
                "" if password else f"; if it has a password, export it in ${env}"
            )
        raise ConfigError(f"[auth] certificate_path: {reason}") from None


def _prompt(verification_uri: str, user_code: str, expires_on: datetime) -> None:
    """Device code: tell the admin where to sign in, on stderr (stdout may carry JSON)."""
    print(
        f"batcher: sign in: open {verification_uri} and enter the code {user_code} "
        f"(before {expires_on:%H:%M} UTC); the run waits for the sign-in",
        file=sys.stderr,
        flush=True,
    )


# -- turning sign-in errors into one actionable line ---------------------------------------------
_AADSTS = re.compile(r"AADSTS(\d+)")
_CORRELATION = re.compile(r"Correlation ID:\s*([0-9a-fA-F-]{36})")

_HINTS = {
    "7000215": "the client secret is wrong: use the secret's Value (not its Secret ID) from the "
    "app registration's Certificates & secrets page",
    "7000222": "the client secret has expired: create a new one in the app registration",
    "700016": "no application with client_id in this tenant: check client_id and tenant_id, and "
    "that the app is registered (or consented) in this tenant and cloud",
    "90002": "tenant not found: check tenant_id and [graph] cloud (a US Government tenant "
    "signs in at login.microsoftonline.us)",
    "900023": "tenant_id is not a valid tenant: use the Directory (tenant) ID GUID",
    "90072": "the account is not in this tenant: sign in with an account of tenant_id",
    "50020": "the account is not in this tenant: sign in with an account of tenant_id",
    "700027": "the certificate is not registered on the app: upload its public part to the app "
    "registration's Certificates & secrets page",
    "700024": "the client assertion is outside its valid time: check this machine's clock",
    "50027": "the client assertion is malformed: check certificate_path",
    "500011": "Graph of this cloud is not known to the tenant: check [graph] cloud",
    "65001": "the app lacks admin consent: grant admin consent for IdentityRiskyUser.ReadWrite.All",
    "53003": "a Conditional Access policy blocked the sign-in: ask the tenant's admins to "
    "exempt this identity or run from an allowed location/device",
    "50076": "multi-factor authentication is required: use device_code and complete MFA",
    "50079": "multi-factor authentication is required: use device_code and complete MFA",
    "70019": "the device code expired before the sign-in finished: run again and sign in "
    "within 15 minutes",
    "70020": "the device code expired before the sign-in finished: run again and sign in "
    "within 15 minutes",
    "700082": "the sign-in has expired: run again and sign in",
    "70043": "the sign-in has expired (Conditional Access sign-in frequency): run again and "
    "sign in",
    "7000112": "the application is disabled: enable it in Enterprise applications",
    "7000218": "this client needs a secret or certificate: use method client_secret or "
    "certificate, or allow public client flows on the app registration",
}


def explain_sign_in_error(exc: BaseException, *, method: str, authority: str) -> str:
    """One line saying why a sign-in failed and what to check; never the secret or token."""
    from azure.core.exceptions import ServiceRequestError

    host = authority.removeprefix("https://")
    chain = _exception_chain(exc)
    text = " ".join(_one_line(str(e)) for e in chain)
    if any(_is_tls_failure(e) for e in chain) or "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"sign-in failed ({method}): could not verify the TLS certificate of {host}; if a "
            "proxy inspects TLS, set [auth] ca_bundle to its CA certificates (PEM)"
        )
    code = _AADSTS.search(text)
    if code is not None:
        correlation = _CORRELATION.search(str(exc))
        hint = _HINTS.get(code.group(1)) or (
            f"{_entra_sentence(text, code.group(0))} "
            f"(see https://login.microsoftonline.com/error?code={code.group(1)})"
        )
        where = f"; correlation ID {correlation.group(1)}" if correlation else ""
        return f"Entra ID refused the sign-in ({method}, {code.group(0)}): {hint}{where}"
    if any(isinstance(e, ServiceRequestError) for e in chain):
        return (
            f"sign-in failed ({method}): could not reach {host}; check the network, the proxy "
            "(HTTPS_PROXY) and [auth] authority_host"
        )
    unavailable = _unavailable_hint(method, text)
    if unavailable is not None:
        return f"sign-in failed ({method}): {unavailable}"
    reason = _one_line(str(exc))[:300] or type(exc).__name__
    return f"sign-in failed ({method}): {reason}"


def _unavailable_hint(method: str, text: str) -> str | None:
    lowered = text.lower()
    if method == "azure_cli":
        if "not found" in lowered or "not installed" in lowered:
            return (
                "the Azure CLI (az) is not on PATH; install it and run az login --tenant <tenant>"
            )
        if "az login" in lowered:
            return (
                "the Azure CLI is not signed in; run az login --tenant <tenant> (for US "
                "Government first: az cloud set --name AzureUSGovernment)"
            )
    if method == "managed_identity" and ("unavailable" in lowered or "no managed" in lowered):
        return (
            "no managed identity on this machine; run batcher on an Azure VM, App Service or "
            "container with a managed identity that holds IdentityRiskyUser.ReadWrite.All, "
            "or choose another [auth] method"
        )
    if method == "device_code" and "timed out" in lowered:
        return "the device-code sign-in was not completed in time; run again and sign in"
    return None


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(chain) < 20:
        item = todo.pop(0)
        if item is None or any(item is seen for seen in chain):
            continue
        chain.append(item)
        inner = getattr(item, "inner_exception", None)
        todo += [
            item.__cause__,
            item.__context__,
            inner if isinstance(inner, BaseException) else None,
        ]
        todo += [a for a in getattr(item, "args", ()) if isinstance(a, BaseException)]
    return chain


def _is_tls_failure(exc: BaseException) -> bool:
    import ssl

    return isinstance(exc, ssl.SSLError) or type(exc).__name__ == "SSLError"


def _entra_sentence(text: str, code: str) -> str:
    """Entra ID's own first sentence after the AADSTS code."""
    after = text.split(code, 1)[1].lstrip(": ")
    sentence = re.split(r"(?<=\.)\s|Trace ID:", after, maxsplit=1)[0]
    return sentence.strip()[:200] or "see the error page"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by <redacted>."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def tenant_of(token: str) -> str | None:
    """The ``tid`` claim of a JWT access token, read without verifying (for labelling only)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    tid = payload.get("tid") if isinstance(payload, dict) else None
    return tid if isinstance(tid, str) else None
