"""How a command signs in and what its ledger is about, decided before anything is read."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batcher.actions import Action
from batcher.auth import StaticToken, TokenSource, ca_bundle_path, tenant_of, token_source
from batcher.calls import StopSignal
from batcher.config import Settings, SimulatorSettings
from batcher.errors import AuthError, ConfigError
from batcher.eventlog import Observer, no_events
from batcher.inputs import GUID
from batcher.ledger import RunScope

if TYPE_CHECKING:
    from batcher.job.summary import Summary


def _always(preview: Summary) -> bool:
    return True


@dataclass(frozen=True)
class Job:
    """Everything a command works with: settings, the tenant it is about, how it signs in (None
    for an offline dry run), its ledger, who watches (the observer) and who agrees (the gate)."""

    settings: Settings
    scope: RunScope
    tokens: TokenSource | None
    ledger: Path | None  # None: chosen at sign-in (the tenant is not known before)
    observer: Observer = no_events
    confirm: Callable[[Summary], bool] = _always
    stop: StopSignal = field(default_factory=StopSignal)
    command_line: str = "batcher"
    # Starts the built-in simulator and gives its URL (the CLI passes one: the library never
    # imports the simulator).
    start_simulator: Callable[[SimulatorSettings], AbstractContextManager[str]] | None = None
    # The gate asks for the tenant's primary domain above this many users (None: it never
    # asks, e.g. --yes or the simulator): the send reads it before asking (job/radius.py).
    asks_domain_over: int | None = None

    @property
    def simulated(self) -> bool:
        return self.settings.graph.target == "simulator"

    @property
    def actions(self) -> tuple[str, ...]:
        return self.scope.actions


def tokens_for(
    settings: Settings, *, offline: bool = False, prompt: Callable[[str], None] | None = None
) -> TokenSource | None:
    """How this command signs in (nothing is fetched yet); None when ``offline`` and the
    settings name no usable credential (a dry run needs none). ``prompt`` shows a device
    code to the admin: the library never prints."""
    if settings.auth.ca_bundle:
        ca_bundle_path(settings.auth.ca_bundle)  # a bad CA file is said before anything starts
    try:
        return token_source(
            settings.auth,
            simulator=settings.graph.target == "simulator",
            cloud=settings.graph.cloud,
            prompt=prompt,
            delegated=settings.simulator.delegated_token,
        )
    except ConfigError:
        if offline:
            return None
        raise


def run_scope(
    settings: Settings, tokens: TokenSource | None, actions: tuple[Action, ...]
) -> RunScope:
    """What the ledger is about: the actions and the tenant ("" until signing in tells it)."""
    return RunScope(
        actions=tuple(a.name for a in actions),
        tenant=tenant(settings, tokens) or "",
        cloud=settings.graph.cloud,
        api_version=settings.graph.api_version,
    )


def tenant(settings: Settings, tokens: TokenSource | None) -> str | None:
    """The tenant the ledger names, when it is known without a request: the built-in
    simulator, ``[auth] tenant_id``, or a JWT's tid claim. None when only signing in tells (a
    token that is not a JWT: ``session.signed_in`` asks Graph; an offline dry run)."""
    if settings.graph.target == "simulator":
        return "simulator"
    if settings.auth.tenant_id:
        return settings.auth.tenant_id
    if isinstance(tokens, StaticToken):
        return tenant_of(tokens.value)
    if tokens is None and settings.auth.method == "token":
        return None
    raise ConfigError(
        f"[auth] method = {settings.auth.method!r} needs tenant_id: it names the ledger and is "
        "checked against the token, so a sign-in to another tenant cannot reuse this one's "
        "ledger; set it to the Directory (tenant) ID"
    )


def check_tenant(token: str, expected: str) -> None:
    """Refuse a token for another tenant than the ledger's (when both name a tenant GUID)."""
    signed_in = tenant_of(token)
    if signed_in and GUID.match(expected) and signed_in.lower() != expected.lower():
        raise AuthError(
            f"signed in to tenant {signed_in}, but this run (and its ledger) is for tenant "
            f"{expected}; sign in to that tenant, or set [auth] tenant_id to the one you mean"
        )
