"""Signing in for Graph: token sources, credentials, the CA bundle, sign-in errors explained."""

from batcher.auth.credentials import (
    SIGN_IN_RETRIES,
    SIMULATED_OPERATOR,
    SIMULATOR_DELEGATED_TOKEN,
    SIMULATOR_TOKEN,
    token_source,
)
from batcher.auth.explain import explain_sign_in_error, redact
from batcher.auth.sources import (
    REFRESH_MARGIN_SECONDS,
    Credential,
    CredentialToken,
    StaticToken,
    TokenSource,
    operator_of,
    tenant_of,
)
from batcher.auth.tls import ca_bundle_path, ssl_context

__all__ = [
    "REFRESH_MARGIN_SECONDS",
    "SIGN_IN_RETRIES",
    "SIMULATED_OPERATOR",
    "SIMULATOR_DELEGATED_TOKEN",
    "SIMULATOR_TOKEN",
    "Credential",
    "CredentialToken",
    "StaticToken",
    "TokenSource",
    "ca_bundle_path",
    "explain_sign_in_error",
    "operator_of",
    "redact",
    "ssl_context",
    "tenant_of",
    "token_source",
]
