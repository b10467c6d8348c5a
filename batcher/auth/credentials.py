"""The token source the [auth] settings ask for: an azure-identity credential or a static token."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from batcher.auth.explain import one_line, redact
from batcher.auth.sources import Credential, CredentialToken, StaticToken, TokenSource
from batcher.auth.tls import ca_bundle_path
from batcher.clouds import CLOUDS
from batcher.config import AuthSettings
from batcher.errors import ConfigError

SIMULATOR_TOKEN = "simulator-token"  # what token_source hands out, and the simulator accepts
# [simulator] delegated_token: a signed-in operator's token (a JWT with oid and scp), which
# the simulator accepts too
SIMULATED_OPERATOR = "00000000-0000-4000-8000-00000000a0e1"
SIMULATOR_DELEGATED_TOKEN = (
    ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (
            {"alg": "none", "typ": "JWT"},
            {"oid": SIMULATED_OPERATOR, "scp": "User.Read.All", "idtyp": "user"},
        )
    )
    + ".sim"
)
SIGN_IN_RETRIES = 3  # azure-core retries of one sign-in request (connection errors, 5xx)

# azure-identity logs every failed get_token at WARNING. With no handler configured, Python
# would print those records to stderr next to the one-line AuthError; an application that
# configures logging still receives them through the root logger.
logging.getLogger("azure").addHandler(logging.NullHandler())
logging.getLogger("msal").addHandler(logging.NullHandler())


def token_source(
    settings: AuthSettings,
    *,
    simulator: bool,
    cloud: str = "global",
    sign_in_retries: int = SIGN_IN_RETRIES,
    clock: Callable[[], float] = time.time,
    prompt: Callable[[str], None] | None = None,
    delegated: bool = False,
) -> TokenSource:
    """Build the token source the settings ask for; ConfigError says what to set.

    ``prompt`` shows the device code to the admin (the library never prints): device_code
    needs it."""
    if simulator:
        return StaticToken(SIMULATOR_DELEGATED_TOKEN if delegated else SIMULATOR_TOKEN)
    if settings.method == "token":
        return _static_token(settings)
    if cloud not in CLOUDS:
        raise ConfigError(f"[graph] cloud: unknown cloud {cloud!r}; use one of {', '.join(CLOUDS)}")
    graph_cloud = CLOUDS[cloud]
    authority = settings.authority_host or graph_cloud.authority
    make, secrets = _credential_factory(settings, authority, sign_in_retries, prompt)
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
        reason = redact(one_line(str(exc)), secrets)
        raise ConfigError(f"[auth] method = {settings.method!r}: {reason}") from None


def _from_environment(name: str, missing: str) -> str:
    """The value of the environment variable ``name``; ConfigError ``missing`` when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(missing)
    return value


def _static_token(settings: AuthSettings) -> StaticToken:
    value = _from_environment(
        settings.token_env,
        f"[auth] method = 'token' needs a bearer token in ${settings.token_env}; e.g. "
        f"export {settings.token_env}=$(az account get-access-token "
        "--resource https://graph.microsoft.com --query accessToken -o tsv)",
    )
    return StaticToken(value.removeprefix("Bearer ").strip())


def _credential_factory(
    settings: AuthSettings,
    authority: str,
    retries: int,
    prompt: Callable[[str], None] | None = None,
) -> tuple[Callable[[], Credential], list[str]]:
    """A function building a fresh azure-identity credential, and the secrets it holds."""
    # Imported here: azure-identity takes a while to import and most commands never sign in.
    import azure.identity as identity

    tls: dict[str, Any] = {}
    if settings.ca_bundle:
        tls["connection_verify"] = ca_bundle_path(settings.ca_bundle)
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
                tenant_id=settings.tenant_id,
                prompt_callback=_device_code_prompt(prompt),
                **client,
                **entra,
            )
        ), []
    raise ConfigError(f"[auth] method: unknown method {method!r}")  # pragma: no cover


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
    return _from_environment(
        settings.client_secret_env,
        f"[auth] method = 'client_secret' needs the secret in ${settings.client_secret_env} "
        f"(export {settings.client_secret_env}=...; the secret's Value, not its ID) "
        "or in a file named by client_secret_file",
    )


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


def _device_code_prompt(
    prompt: Callable[[str], None] | None,
) -> Callable[[str, str, datetime], None]:
    """What azure-identity calls with the device code: one line for the caller to show."""
    if prompt is None:
        raise ConfigError(
            "[auth] method = 'device_code' needs somewhere to show the code; run batcher "
            "from a terminal"
        )
    shown = prompt

    def show(verification_uri: str, user_code: str, expires_on: datetime) -> None:
        shown(
            f"sign in: open {verification_uri} and enter the code {user_code} "
            f"(before {expires_on:%H:%M} UTC); the run waits for the sign-in"
        )

    return show
