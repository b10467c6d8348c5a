"""Bearer tokens for Graph: where they come from and when they are refreshed."""

from __future__ import annotations

import base64
import json
import os
from typing import Protocol

from batcher.config import AuthSettings
from batcher.errors import ConfigError

SIMULATOR_TOKEN = "simulator-token"


class TokenSource(Protocol):
    """Gives the current bearer token; ``invalidate`` after a 401 forces a new one."""

    async def token(self) -> str: ...

    def invalidate(self) -> None: ...


class StaticToken:
    """A token handed over as is (from an environment variable); it cannot be refreshed."""

    def __init__(self, value: str) -> None:
        self.value = value

    async def token(self) -> str:
        return self.value

    def invalidate(self) -> None:
        """Nothing to refresh: the next 401 stops the run."""

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


def token_source(settings: AuthSettings, *, simulator: bool) -> TokenSource:
    """Build the token source the settings ask for."""
    if simulator:
        return StaticToken(SIMULATOR_TOKEN)
    value = os.environ.get(settings.token_env, "").strip()
    if not value:
        raise ConfigError(
            f"[auth] method = 'token' needs a bearer token in ${settings.token_env}; e.g. "
            f"export {settings.token_env}=$(az account get-access-token "
            "--resource https://graph.microsoft.com --query accessToken -o tsv)"
        )
    return StaticToken(value.removeprefix("Bearer ").strip())


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
