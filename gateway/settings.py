"""Settings: defaults, then a TOML file, then ``CG_*`` environment variables (which win)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    environment: str = "development"  # "development" | "production"

    sales_url: str = "http://127.0.0.1:8101"
    sales_api_key: str = ""
    support_url: str = "http://127.0.0.1:8102"
    support_token: str = ""
    contracts_url: str = "http://127.0.0.1:8103"
    contracts_user: str = ""
    contracts_password: str = ""

    upstream_timeout: float = 3.0  # seconds, per upstream call
    upstream_max_connections: int = 20  # per system
    contracts_max_in_flight: int = 4

    jwt_secret: str = ""
    jwt_jwks_url: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""

    policy_file: str = ""  # empty: the shipped policies/default.yaml

    graphiql: bool = True
    introspection: bool = True
    max_first: int = 100  # the largest `first` a list argument accepts
    document_cache_size: int = 1000

    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def production(self) -> bool:
        return self.environment == "production"


_ENV_PREFIX = "CG_"
_FIELDS = {f.name: f for f in fields(Settings) if f.name != "extra"}


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise SettingsError(f"{name}: expected true or false, got {value!r}")
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name}: expected a whole number, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name}: expected a number, got {value!r}") from None
    return str(value)


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the file (``path`` or ``CG_CONFIG``, if any) and the environment."""
    env = os.environ if environ is None else environ
    base = Settings()
    values: dict[str, Any] = {}
    config_path = path or env.get("CG_CONFIG")
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {config_path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_path}: {exc}") from None
        section = data.get("gateway", data)
        for key, value in section.items():
            if key not in _FIELDS:
                raise SettingsError(f"config file {config_path}: unknown setting {key!r}")
            values[key] = _coerce(key, value, getattr(base, key))
    for name in _FIELDS:
        env_name = _ENV_PREFIX + name.upper()
        if env_name in env:
            values[name] = _coerce(env_name, env[env_name], getattr(base, name))
    settings = replace(base, **values)
    if settings.environment not in {"development", "production"}:
        raise SettingsError("environment: expected 'development' or 'production'")
    return settings
