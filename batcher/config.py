"""Load and validate the TOML configuration into typed settings."""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batcher.errors import ConfigError

CHINA_NAMES = {"china", "chinacloud", "21vianet", "mooncake", "azurechina"}


class _Section(BaseModel):
    # strict: `batch_size = true` or `rate_per_second = "1"` is a mistake, not a number
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class GraphSettings(_Section):
    target: Literal["simulator", "graph"] = "simulator"
    cloud: Literal["global", "usgov", "usgovdod"] = "global"
    api_version: Literal["v1.0", "beta"] = "v1.0"
    base_url: str = ""

    @field_validator("cloud", mode="before")
    @classmethod
    def _no_china(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower().replace(" ", "") in CHINA_NAMES:
            raise ValueError(
                "Identity Protection's riskyUsers actions are not offered in Azure China "
                "(21Vianet); use global, usgov or usgovdod"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL; use e.g. https://graph.example")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(
                f"plain http is allowed only for loopback addresses, not {parts.hostname!r}; "
                "use https"
            )
        return value.rstrip("/")


AuthMethod = Literal[
    "token", "client_secret", "certificate", "managed_identity", "azure_cli", "device_code"
]
# Keys that would put a secret in the config file itself; refused, with where to put it instead.
_SECRET_KEYS = {
    "client_secret": "client_secret_env (an environment variable) or client_secret_file",
    "secret": "client_secret_env (an environment variable) or client_secret_file",
    "client_secret_value": "client_secret_env (an environment variable) or client_secret_file",
    "password": "the environment variable named by certificate_password_env",
    "certificate_password": "the environment variable named by certificate_password_env",
    "token": "the environment variable named by token_env",
    "access_token": "the environment variable named by token_env",
    "bearer_token": "the environment variable named by token_env",
}
_ENV_KEYS = ("token_env", "client_secret_env", "certificate_password_env")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TENANT = re.compile(r"^[A-Za-z0-9.-]+$")  # a GUID or a domain such as contoso.onmicrosoft.com
_NEEDS = {
    "client_secret": ("tenant_id", "client_id"),
    "certificate": ("tenant_id", "client_id", "certificate_path"),
    "device_code": ("tenant_id",),
}
_WHAT = {
    "tenant_id": 'tenant_id = "<Directory (tenant) ID>"',
    "client_id": 'client_id = "<Application (client) ID of the app registration>"',
    "certificate_path": 'certificate_path = "<PEM or PFX file with the private key>"',
}


class AuthSettings(_Section):
    """How batcher signs in; secrets come from the environment or a file, never from here."""

    # hide_input_in_errors: a refused [auth] table may hold a secret; never echo it.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    method: AuthMethod = "token"
    tenant_id: str = ""
    client_id: str = ""
    token_env: str = "BATCHER_ACCESS_TOKEN"
    client_secret_env: str = "BATCHER_CLIENT_SECRET"
    client_secret_file: str = ""
    certificate_path: str = ""
    certificate_password_env: str = "BATCHER_CERTIFICATE_PASSWORD"
    authority_host: str = ""
    ca_bundle: str = ""

    @model_validator(mode="before")
    @classmethod
    def _no_secrets_in_the_file(cls, data: Any) -> Any:
        # Checked on the whole table so the error names [auth] and never shows a value.
        if not isinstance(data, dict):
            return data
        for key in data:
            where = _SECRET_KEYS.get(str(key).lower())
            if where is not None:
                raise ValueError(
                    f"{key} must not be written in the config file (it would leak with the "
                    f"file); remove it and put the secret in {where}"
                )
        for key in _ENV_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value and not _ENV_NAME.match(value):
                raise ValueError(
                    f"{key} must be the NAME of an environment variable (e.g. "
                    f"{cls.model_fields[key].default}), not the secret itself; export the "
                    "secret in that variable"
                )
        return data

    @field_validator("tenant_id")
    @classmethod
    def _check_tenant(cls, value: str) -> str:
        value = value.strip()
        if value and not _TENANT.match(value):
            raise ValueError(
                "must be the tenant's GUID or a domain such as contoso.onmicrosoft.com"
            )
        return value

    @field_validator("authority_host")
    @classmethod
    def _check_authority_host(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        parts = urlsplit(value if "://" in value else f"https://{value}")
        if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(
                "must be an https host such as login.microsoftonline.us or "
                "https://127.0.0.1:8443 (sign-in is always over TLS; no path)"
            )
        return f"https://{parts.netloc}"

    @model_validator(mode="after")
    def _check_method(self) -> AuthSettings:
        missing = [key for key in _NEEDS.get(self.method, ()) if not getattr(self, key)]
        if missing:
            raise ValueError(
                f"method = {self.method!r} needs " + " and ".join(_WHAT[key] for key in missing)
            )
        return self


class SendSettings(_Section):
    batch_size: int = Field(default=60, ge=1, le=60)
    rate_per_second: float = Field(default=1.0, gt=0, le=100)
    max_in_flight: int = Field(default=4, ge=1, le=64)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    retry_for_seconds: float = Field(default=600.0, ge=0, le=86_400)
    backoff_initial_seconds: float = Field(default=1.0, ge=0, le=60)
    backoff_max_seconds: float = Field(default=30.0, ge=0, le=600)
    # Stop when no request got any HTTP answer for this long (refused, DNS, no route).
    unreachable_after_seconds: float = Field(default=30.0, gt=0, le=3600)


class DirectorySettings(_Section):
    """Budgets of the directory (users): look-ups and writes, each paced on its own, each one
    of Graph's documented windows (a window may go at once, then refills at its average rate).
    Reads: resource units (RU) per app per tenant, 3,500 / 5,000 / 8,000 per 10 s for tenants
    of under 50 / 50-500 / over 500 users; the default is the smallest. Writes: 3,000 per 150 s
    per app per tenant, and 18,000 per 300 s per tenant for all apps."""

    read_units_per_window: int = Field(default=3500, ge=1, le=100_000)
    read_window_seconds: float = Field(default=10.0, gt=0, le=3600)
    writes_per_window: int = Field(default=3000, ge=1, le=100_000)
    writes_window_seconds: float = Field(default=150.0, gt=0, le=3600)
    tenant_writes_per_window: int = Field(default=18_000, ge=1, le=1_000_000)
    tenant_writes_window_seconds: float = Field(default=300.0, gt=0, le=3600)
    # JSON batches (of up to 20 writes) in flight at once: enough that a containment within
    # the window waits on Graph's latency, not on its turn.
    writes_at_once: int = Field(default=16, ge=1, le=64)

    @model_validator(mode="before")
    @classmethod
    def _no_steady_rates(cls, data: Any) -> Any:
        if isinstance(data, dict) and "writes_per_second" in data:
            raise ValueError(
                "writes_per_second is no longer a setting: Graph's write quota is a window; "
                "write writes_per_window = 3000 and writes_window_seconds = 150 (the defaults), "
                "or e.g. writes_per_window = 20 and writes_window_seconds = 1 for at most 20 a "
                "second"
            )
        if isinstance(data, dict) and "reads_per_second" in data:
            raise ValueError(
                "reads_per_second is no longer a setting: Graph's read quota is a window of "
                "resource units; write read_units_per_window = 3500 and read_window_seconds = 10 "
                "(the defaults, a tenant under 50 users; 5000 for 50-500 users, 8000 above)"
            )
        return data


class BudgetsSettings(_Section):
    """Budgets besides Identity Protection's ([send]) and the directory's ([directory]), each a
    limit Microsoft documents (and says may change). Reports: "identity and access reports",
    5 requests per 10 s per app per tenant (authentication methods, sign-in logs). Security
    (incidents, alerts): 150 requests per minute. Outlook: per app per mailbox, 10,000
    requests per 10 minutes and 4 at once; one pacer per mailbox, at most
    ``outlook_open_mailboxes`` of them at once."""

    reports_per_window: int = Field(default=5, ge=1, le=10_000)
    reports_window_seconds: float = Field(default=10.0, gt=0, le=3600)
    reports_at_once: int = Field(default=5, ge=1, le=64)
    security_per_window: int = Field(default=150, ge=1, le=100_000)
    security_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    outlook_per_window: int = Field(default=10_000, ge=1, le=1_000_000)
    outlook_window_seconds: float = Field(default=600.0, gt=0, le=3600)
    outlook_at_once: int = Field(default=4, ge=1, le=64)
    outlook_open_mailboxes: int = Field(default=64, ge=1, le=10_000)


class LedgerSettings(_Section):
    # Empty: the per-user data folder; a relative path is relative to the config file.
    dir: Path = Field(default=Path(), strict=False)
    recent_hours: float = Field(default=24.0, ge=0, le=24 * 365)

    @property
    def folder(self) -> Path:
        """Where ledgers go: never the current directory, so a rerun from elsewhere finds them."""
        if str(self.dir) in ("", "."):
            import platformdirs

            return platformdirs.user_data_path("batcher", appauthor=False) / "ledgers"
        return self.dir.expanduser().absolute()


_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def protected_kind(entry: str) -> Literal["id", "upn", "group"] | None:
    """What a [safety] protected entry names: an object ID, a UPN, or ``group:<object id>``
    (its members, transitively); None: none of them."""
    if entry.lower().startswith("group:"):
        return "group" if _GUID.match(entry[len("group:") :]) else None
    if _GUID.match(entry):
        return "id"
    return "upn" if "@" in entry.strip("@") and " " not in entry else None


class SafetySettings(_Section):
    """Who batcher never writes to, and how far a send may reach before the gate asks for more
    than a count."""

    # Users batcher never writes to, whatever the action: UPNs, object IDs, "group:<id>".
    protected: list[str] = Field(default_factory=list)
    # Above this many users a directory action asks for the count and the tenant's primary
    # domain; in scripts --yes alone is refused (--max-users N agrees to at most N).
    confirm_over: int = Field(default=100, ge=0, le=10_000_000)
    # `batcher apply` refuses a plan older than this.
    plan_max_age_hours: float = Field(default=24.0, gt=0, le=24 * 365)

    @field_validator("protected")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            if protected_kind(entry) is None:
                raise ValueError(
                    f"{entry!r} is neither a UPN, an object ID nor group:<object id>; write "
                    'e.g. "breakglass1@contoso.com" or "group:<the group\'s object ID>"'
                )
        return value


FaultKind = Literal["429", "500", "502", "503", "504", "reset", "lost", "hang"]


class SimulatorSettings(_Section):
    rate_per_second: float = Field(default=1.0, gt=0)
    burst: int = Field(default=1, ge=1)
    latency_min_seconds: float = Field(default=0.05, ge=0)
    latency_max_seconds: float = Field(default=0.3, ge=0)
    faults: dict[FaultKind, float] = Field(default_factory=dict)
    retry_after_seconds: float | None = Field(default=None, ge=0)
    # the least Retry-After of a 429 for an empty budget or a drawn directory fault: Graph's
    # whole seconds, at least 1; a bench that speeds every budget up N times sets 1/N, and tests
    # about order rather than waiting set a few hundredths (fractional seconds)
    retry_after_least_seconds: float = Field(default=1.0, gt=0, le=60)
    bad_ids: list[str] = Field(default_factory=list)
    hang_seconds: float = Field(default=3600.0, gt=0)
    client_secret: str = "simulator-secret"
    token_lifetime_seconds: int = Field(default=3599, ge=1)
    seed: int | None = None
    other_apps_share: float = Field(default=0.0, ge=0, lt=1)
    permission_denied: bool = False
    processing_seconds: float = Field(default=0.0, ge=0)
    # The directory (users, $batch, block sign-in, revoke sessions)
    directory_file: Path | None = Field(default=None, strict=False)  # relative: to the config
    directory_read_denied: bool = False
    directory_write_denied: bool = False
    caller_privileged: bool = False
    revoke_answers_204: bool = False
    omit_properties: list[str] = Field(default_factory=list)  # user properties answers lack
    # Graph's resource units for the smallest tenant: 3,500 per 10 s (a look-up costs 1)
    directory_reads_per_second: float = Field(default=350.0, gt=0)
    directory_reads_burst: int | None = Field(default=3500, ge=1)  # None: one second's worth
    # Graph's write window: 3,000 per 150 s, i.e. a bucket of 3,000 refilling at 20/s
    directory_writes_per_second: float = Field(default=20.0, gt=0)
    directory_writes_burst: int = Field(default=3000, ge=1)
    directory_faults: dict[Literal["429", "500", "503", "504"], float] = Field(default_factory=dict)
    # Sources read straight from Graph (batcher.simulator.security): sample incidents by ID,
    # risky users at risk per level, successful sign-ins per address (users each), the reports
    # budget (5 per 10 s: a bucket of 5 refilling at 0.5/s), and which reads answer 403.
    incidents: list[int] = Field(default_factory=lambda: [42])
    risky_users: dict[Literal["low", "medium", "high"], int] = Field(default_factory=dict)
    sign_ins: dict[str, int] = Field(default_factory=dict)
    sign_ins_page_size: int = Field(default=1000, ge=1, le=1000)
    # Inbox rules (batcher.simulator.mailrules): rules per mailbox (the nine made first, then
    # forwards, deletes and harmless flags in turn), and how many a page lists at most
    mail_rules: int = Field(default=9, ge=9, le=10_000)
    mail_rules_page_size: int = Field(default=1000, ge=1, le=1000)
    reports_per_second: float = Field(default=0.5, gt=0)
    reports_burst: int = Field(default=5, ge=1)
    sources_denied: list[Literal["incidents", "risky_users", "sign_ins"]] = Field(
        default_factory=list
    )
    primary_domain: str = "contoso.onmicrosoft.com"  # GET /organization: the default domain
    # Privileged roles: UPN (or object ID) -> role names, active and eligible (PIM); groups:
    # group object ID -> member UPNs or object IDs (a member "group:<id>" is a nested group)
    role_holders: dict[str, list[str]] = Field(default_factory=dict)
    eligible_role_holders: dict[str, list[str]] = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    role_read_denied: bool = False  # 403 for RoleManagement.Read.Directory
    group_read_denied: bool = False  # 403 for GroupMember.Read.All
    delegated_token: bool = False  # a token as a signed-in user's (with oid, scp)
    # Outlook, per mailbox: 10,000 per 10 minutes
    outlook_per_second: float = Field(default=10_000 / 600, gt=0)
    outlook_burst: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SimulatorSettings:
        if self.latency_max_seconds < self.latency_min_seconds:
            raise ValueError("latency_max_seconds must be >= latency_min_seconds")
        for mix in (self.faults, self.directory_faults):
            if any(not 0 <= p <= 1 for p in mix.values()):
                raise ValueError("each fault probability must be between 0 and 1")
            if sum(mix.values()) > 1:
                raise ValueError("fault probabilities must add up to at most 1")
        return self


class Settings(_Section):
    graph: GraphSettings = GraphSettings()
    auth: AuthSettings = AuthSettings()
    send: SendSettings = SendSettings()
    directory: DirectorySettings = DirectorySettings()
    budgets: BudgetsSettings = BudgetsSettings()
    ledger: LedgerSettings = LedgerSettings()
    safety: SafetySettings = SafetySettings()
    simulator: SimulatorSettings = SimulatorSettings()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(path: Path | None) -> Settings:
    """Read ``path`` (or defaults when None); raise ConfigError with one actionable line."""
    if path is None:
        return Settings()
    if not path.is_file():
        raise ConfigError(
            f"{path}: config file not found; copy config.example.toml to config.toml "
            "or pass --config FILE"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix that line") from None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, data)}") from None
    return _beside(settings, path.parent.absolute())


def _beside(settings: Settings, folder: Path) -> Settings:
    """Relative paths in the config are relative to the config file, not the current folder."""
    ledger_dir = settings.ledger.dir.expanduser()
    if str(ledger_dir) not in ("", ".") and not ledger_dir.is_absolute():
        ledger = settings.ledger.model_copy(update={"dir": folder / ledger_dir})
        settings = settings.model_copy(update={"ledger": ledger})
    users = settings.simulator.directory_file
    if users is not None and not users.expanduser().is_absolute():
        simulator = settings.simulator.model_copy(update={"directory_file": folder / users})
        settings = settings.model_copy(update={"simulator": simulator})
    return settings


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    where = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else f"[{loc[0]}]" if loc else ""
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        suggestion = f"did you mean {hint[0]!r}?" if hint else f"known keys: {', '.join(known)}"
        return f"{where}: unknown setting; {suggestion}"
    msg = err["msg"].removeprefix("Value error, ")
    value = _lookup(data, err["loc"])
    secretive = bool(loc) and loc[0] == "auth"  # an [auth] value may be a pasted secret
    shown = "" if value is _MISSING or isinstance(value, dict) or secretive else f" (got {value!r})"
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"{where}: {msg}{shown}; fix it in the config{more}"


_MISSING = object()


def _lookup(data: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return _MISSING
    return data


def _known_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        if not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(model.model_fields)
