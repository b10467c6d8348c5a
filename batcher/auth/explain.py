"""Failed sign-ins as one actionable line, and secrets kept out of every message."""

from __future__ import annotations

import re
from collections.abc import Iterable

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
    text = " ".join(one_line(str(e)) for e in chain)
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
        cause = _connection_failure(chain)
        why = f" ({cause})" if cause else ""
        return (
            f"sign-in failed ({method}): could not reach {host}{why}; check the network, the "
            "proxy variables (HTTPS_PROXY, NO_PROXY) and [auth] authority_host"
        )
    unavailable = _unavailable_hint(method, text)
    if unavailable is not None:
        return f"sign-in failed ({method}): {unavailable}"
    reason = one_line(str(exc))[:300] or type(exc).__name__
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


def _connection_failure(chain: list[BaseException]) -> str | None:
    """Why the connection failed, in a few words, when the exception chain tells."""
    import socket

    names = {type(e).__name__ for e in chain}  # urllib3's, should the OS error be missing
    if "NameResolutionError" in names or any(isinstance(e, socket.gaierror) for e in chain):
        return "name not resolved (DNS)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if "ConnectTimeoutError" in names or any(isinstance(e, TimeoutError) for e in chain):
        return "timed out"
    return None


def _is_tls_failure(exc: BaseException) -> bool:
    import ssl

    return isinstance(exc, ssl.SSLError) or type(exc).__name__ == "SSLError"


def _entra_sentence(text: str, code: str) -> str:
    """Entra ID's own first sentence after the AADSTS code."""
    after = text.split(code, 1)[1].lstrip(": ")
    sentence = re.split(r"(?<=\.)\s|Trace ID:", after, maxsplit=1)[0]
    return sentence.strip()[:200] or "see the error page"


def one_line(text: str) -> str:
    return " ".join(text.split())


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by <redacted>."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
