"""Load and validate the TOML configuration into typed settings."""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batcher.errors import ConfigError

CHINA_NAMES = {"china", "chinacloud", "21vianet", "mooncake", "azurechina"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class AuthSettings(_Section):
    method: Literal["token"] = "token"
    tenant_id: str = ""
    client_id: str = ""
    token_env: str = "BATCHER_ACCESS_TOKEN"


class SendSettings(_Section):
    batch_size: int = Field(default=60, ge=1, le=60)
    rate_per_second: float = Field(default=1.0, gt=0, le=100)
    max_in_flight: int = Field(default=4, ge=1, le=64)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    retry_for_seconds: float = Field(default=600.0, ge=0, le=86_400)
    backoff_initial_seconds: float = Field(default=1.0, ge=0, le=60)
    backoff_max_seconds: float = Field(default=30.0, ge=0, le=600)


class LedgerSettings(_Section):
    dir: Path = Path("runs")


FaultKind = Literal["429", "500", "502", "503", "504", "reset", "lost", "hang"]


class SimulatorSettings(_Section):
    rate_per_second: float = Field(default=1.0, gt=0)
    burst: int = Field(default=1, ge=1)
    latency_min_seconds: float = Field(default=0.05, ge=0)
    latency_max_seconds: float = Field(default=0.3, ge=0)
    faults: dict[FaultKind, float] = Field(default_factory=dict)
    retry_after_seconds: float | None = Field(default=None, ge=0)
    bad_ids: list[str] = Field(default_factory=list)
    hang_seconds: float = Field(default=3600.0, gt=0)
    client_secret: str = "simulator-secret"
    token_lifetime_seconds: int = Field(default=3599, ge=1)
    seed: int | None = None

    @model_validator(mode="after")
    def _check(self) -> SimulatorSettings:
        if self.latency_max_seconds < self.latency_min_seconds:
            raise ValueError("latency_max_seconds must be >= latency_min_seconds")
        if any(not 0 <= p <= 1 for p in self.faults.values()):
            raise ValueError("each fault probability must be between 0 and 1")
        if sum(self.faults.values()) > 1:
            raise ValueError("fault probabilities must add up to at most 1")
        return self


class Settings(_Section):
    graph: GraphSettings = GraphSettings()
    auth: AuthSettings = AuthSettings()
    send: SendSettings = SendSettings()
    ledger: LedgerSettings = LedgerSettings()
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
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, data)}") from None


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
    shown = "" if value is _MISSING or isinstance(value, dict) else f" (got {value!r})"
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
