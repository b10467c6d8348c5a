"""Bearer tokens for Graph: where they come from and when they are refreshed."""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from batcher.auth.explain import explain_sign_in_error, redact
from batcher.errors import AuthError

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

REFRESH_MARGIN_SECONDS = 300.0  # sign in again when less than this is left of a token's life


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
    expires_on: float  # as the credential said: seconds since the epoch
    refresh_at: float  # by the same clock
    after_refusal: bool  # signed in because Graph refused the token before this one

    def __repr__(self) -> str:
        return f"_Held(<redacted>, expires_on={self.expires_on}, refresh_at={self.refresh_at})"


class CredentialToken:
    """Tokens from an azure-identity credential.

    One sign-in at a time (an anyio lock: concurrent workers wait for it, they do not start
    their own); a new token when less than REFRESH_MARGIN_SECONDS are left, or after Graph
    refused the current one (``invalidate``). The credential's own cache would hand the refused
    token back, so after a 401 (and, for non-interactive methods, before expiry) a fresh
    credential is built. Device code keeps its credential for refreshes before expiry (MSAL
    redeems the refresh token silently) and prompts again only after a 401.

    ``refused_after_refresh`` turns true when Graph refuses a token that was itself fetched
    because Graph refused the one before: signing in again does not help, stop the run.

    One clock: ``clock`` reads seconds since the epoch, the scale of the credential's
    ``expires_on``, and is the only clock the source reads (the host's, time.time, unless a
    test injects its own).
    """

    def __init__(
        self,
        method: str,
        make_credential: Callable[[], Credential],
        scope: str,
        *,
        authority: str,
        interactive: bool = False,
        clock: Callable[[], float] = time.time,
        secrets: Iterable[str] = (),
    ) -> None:
        self.method = method
        self.scope = scope
        self.authority = authority
        self._make = make_credential
        self._credential = make_credential()
        self._interactive = interactive
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

    @property
    def expires_on(self) -> float | None:
        """When the current token expires, as the credential said (seconds since the epoch);
        None before a sign-in or after a 401."""
        return None if self._current is None else self._current.expires_on

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
        # Its life, on the source's one clock, from when this sign-in began. A short-lived
        # token is still used a while: at most half its life is given up.
        lifetime = max(0.0, access.expires_on - started)
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
        return _Held(access.token, access.expires_on, access.expires_on - margin, after_refusal)

    def _explain(self, exc: BaseException) -> str:
        message = explain_sign_in_error(exc, method=self.method, authority=self.authority)
        return redact(message, self._secrets)

    def __repr__(self) -> str:
        return (
            f"CredentialToken(method={self.method!r}, authority={self.authority!r}, "
            f"scope={self.scope!r}, token=<redacted>)"
        )


def claims_of(token: str) -> dict[str, object]:
    """A JWT access token's claims, read without verifying (for labelling only); {} if none."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def tenant_of(token: str) -> str | None:
    """The ``tid`` claim of a JWT access token, read without verifying (for labelling only)."""
    tid = claims_of(token).get("tid")
    return tid if isinstance(tid, str) else None


def operator_of(token: str) -> str | None:
    """The signed-in user's object ID (``oid``) of a delegated token (one with ``scp``, the
    delegated scopes); None for an application's token, or a token that is not a JWT."""
    claims = claims_of(token)
    oid = claims.get("oid")
    delegated = "scp" in claims or claims.get("idtyp") == "user"
    return oid.lower() if delegated and isinstance(oid, str) else None
