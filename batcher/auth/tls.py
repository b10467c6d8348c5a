"""The [auth] ca_bundle setting: which CA certificates sign-in and Graph both trust."""

from __future__ import annotations

import ssl
from pathlib import Path

from batcher.errors import ConfigError

_WHAT = "the CA certificates to trust for sign-in and Graph"


def ca_bundle_path(path: str) -> str:
    """The absolute path of ``path``, a readable PEM file of CA certificates; else ConfigError.

    The bundle replaces the system's CAs (for sign-in and for Graph alike): it must hold every
    CA that signs those endpoints, such as an inspecting proxy's.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"[auth] ca_bundle {path}: cannot read it ({exc.strerror}); set it to a PEM file of "
            f"{_WHAT}"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(
            f"[auth] ca_bundle {path}: no PEM certificate in it; export {_WHAT} as PEM "
            "(-----BEGIN CERTIFICATE-----)"
        )
    resolved = str(Path(path).resolve())
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=resolved)
    except (ssl.SSLError, OSError):
        raise ConfigError(
            f"[auth] ca_bundle {path}: a certificate in it is not valid PEM; export {_WHAT} "
            "as PEM again"
        ) from None
    return resolved


def ssl_context(ca_bundle: str) -> ssl.SSLContext | None:
    """A client context trusting the ``ca_bundle`` setting; None when it is empty.

    None means: use the system's CAs (what an HTTP client does by default).
    """
    if not ca_bundle:
        return None
    return ssl.create_default_context(cafile=ca_bundle_path(ca_bundle))
