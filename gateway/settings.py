"""Settings: defaults, then a TOML file, then ``CG_*`` environment variables (which win)."""

from __future__ import annotations

import hashlib
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

    upstream_timeout: float = 3.0  # seconds, per upstream attempt
    request_deadline: float = 5.0  # seconds: bounds a request's total upstream time, retries included
    retry_attempts: int = 3  # per upstream call (reads; writes only with an idempotency key)
    breaker_failures: int = 5  # consecutive failed calls that open a system's circuit
    breaker_cooldown: float = 10.0  # seconds open before one probe call may close it again
    sales_max_in_flight: int = 16  # calls in flight per system, whatever the traffic at the gateway
    support_max_in_flight: int = 16
    contracts_max_in_flight: int = 4  # the register's contract: at most 4 per client
    support_max_rate: float = 45.0  # calls/s to the helpdesk (its RATE; the demo's is 50); 0 = unbounded

    jwt_secret: str = ""
    jwt_jwks_url: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""

    policy_file: str = ""  # empty: the shipped policies/default.yaml

    graphiql: bool = True
    introspection: bool = True
    max_first: int = 100  # the largest `first` a list argument accepts
    document_cache_bytes: int = 1_048_576  # text of the valid documents kept parsed (schema/documents.py)

    # Hostile and bad requests (gateway/http.py, gateway/limits.py, gateway/ratelimit.py,
    # gateway/persisted.py). Every limit is checked before anything runs.
    max_body_bytes: int = 262_144  # a larger request body is refused with 413
    max_header_bytes: int = 65_536  # a larger request head (line + headers) is refused with 431
    header_timeout: float = 10.0  # seconds for a request head to arrive (else 408)
    body_timeout: float = 30.0  # seconds for a request body to arrive (else 408)
    max_depth: int = 12  # field nesting; introspection subtrees not counted
    max_aliases: int = 50  # aliased fields in the operation
    max_tokens: int = 5000  # lexical tokens in the document (enforced while parsing)
    max_selections: int = 2000  # fields selected, fragments expanded, n repeats of a name weighing n²
    anonymous_max_tokens: int = 100  # without a valid token: { __typename }-sized documents only
    anonymous_max_selections: int = 20
    max_string_length: int = 10_000  # characters of one string in a document or its variables
    max_cost: int = 50_000  # see README "Limits": list fields multiply by their `first`
    max_cost_per_role: Mapping[str, int] = field(default_factory=dict)  # role → max cost
    cost_list_size: int = 10  # what a list field without `first` is assumed to return
    rate_limit_per_minute: int = 1200  # per caller (sub, or client IP without a token); 0 = off
    rate_limit_burst: int = 200  # requests a caller may send at once
    rate_limit_per_role: Mapping[str, int] = field(default_factory=dict)  # role → per minute
    redis_url: str = ""  # shared state between gateway processes (rate-limit buckets, cache invalidation)
    # With redis_url the register's in-flight bound holds for the deployment (gateway/shared_limits.py);
    # while Redis is unreachable each instance keeps limit // expected_instances. A lease expires
    # after shared_lease_ttl seconds, so a dead instance's leases come back.
    expected_instances: int = 3
    shared_lease_ttl: float = 40.0
    persisted_queries: str = "apq"  # "off" | "apq" | "allowlist"
    allowlist_file: str = ""  # JSON/YAML: operation hash → name (+ query, roles)
    apq_cache_size: int = 1000  # automatic persisted queries kept (LRU)

    # Cross-request cache of upstream entities (gateway/cache.py): on/off, and TTL overrides per
    # resource as "orders=30,contracts=600" (defaults in gateway.cache.CACHE_TTLS).
    cache: bool = True
    cache_ttls: str = ""

    tracing: str = "off"  # "off" | "console" | "otlp" (endpoint: OTEL_EXPORTER_OTLP_ENDPOINT)

    # The gateway's own database (features/store): empty = the SQLite file var/gateway.db.
    database_url: str = ""
    # The data keys that seal personal data in it (gateway/datakeys.py, features/store/sealed.py): Fernet
    # keys, newest first, separated by commas, or a file of them (one a line: a secret mount). Production
    # refuses to start without; development makes one in data.key beside the SQLite file (var/data.key).
    data_keys: str = field(default="", repr=False)
    data_keys_file: str = ""
    # Identity (features/identity): seconds between reloads of the support identities (previous and linked
    # e-mails) from the database, so another instance's link is in effect here within that time; 0: never.
    identity_refresh: float = 2.0
    # Access grants (features/store/access.py): seconds a user's grants are kept in-process; a new grant
    # shows on another instance at most this late. A revoked one never does: a cached grant is checked
    # against the database before it is applied.
    grant_cache_ttl: float = 2.0
    # Bulk-read watch (gateway/readwatch.py): a user who read personal data of more than this many
    # distinct customers in a sliding hour is counted (cg_bulk_read_alerts_total) and logged once an
    # hour; 0 = off.
    read_alert_customers: int = 500
    # Signed checkpoints of the audit chain outside its database (features/store/checkpoints.py): the file
    # (empty: beside a SQLite database file, else var/audit-checkpoints.jsonl) and the HMAC key.
    audit_checkpoint_file: str = ""
    audit_checkpoint_key: str = ""
    audit_checkpoint_every: int = 100  # records between checkpoints (and at least one a minute)

    # The public pool (features/pool): claim rules, auto-recycling and its scheduled sweep.
    pool_max_owned: int = 50  # customers one sales rep may own
    pool_cooldown_days: float = 30.0  # a rep cannot claim again what it released or lost this recently
    pool_recycle_after_days: float = 90.0  # no activity by the owner this long: back to the pool
    pool_warn_days: float = 7.0  # warn the owner this long before (recycleAt, an event)
    pool_protection_days: float = 14.0  # never recycled this soon after it was claimed / assigned
    # A customer entering the pool (release, recycle, manager to the pool) waits for a sales manager of its
    # region or a data steward to review it before anyone may claim it; reasons listed in pool_review_skip
    # (release reasons, recycle causes: e.g. "wrong_region,inactive") skip the review.
    pool_review: bool = True
    # Retention (features/retention.py): days a kind of personal data is kept before it is pseudonymised
    # (0: kept), how often the purge runs (seconds; 0: never inside the gateway), and the key of the
    # pseudonyms (empty: derived from CG_JWT_SECRET).
    retention_pool_notes_days: float = 730.0
    retention_event_payload_days: float = 180.0
    retention_audit_values_days: float = 365.0  # a write's values, a search term; the record's facts stay
    retention_access_reasons_days: float = 730.0  # why a field was asked for / a grant revoked (ended ones)
    retention_export_days: float = 30.0  # a data subject's export files, after the export finished
    retention_unlinked_identities_days: float = 365.0  # a support e-mail a steward unlinked (with its reason)
    retention_interval: float = 3600.0
    retention_key: str = ""
    # A data subject's exports (features/privacy.py) go here (with several instances: a shared volume).
    privacy_folder: str = "var/privacy"
    pool_review_skip: str = ""
    pool_sweep_interval: float = 3600.0  # seconds between sweeps inside the gateway; 0 = none

    # Live updates (gateway/events): signed webhooks from sales and support (empty secret: that
    # receiver answers 404), the register polled for changes, subscriptions over WebSocket.
    sales_webhook_secret: str = ""  # HMAC-SHA256 key of X-Sales-Signature (POST /hooks/sales)
    support_webhook_secret: str = ""  # HMAC-SHA256 key of X-Helpdesk-Signature (POST /hooks/support)
    contracts_poll_interval: float = 60.0  # seconds between the register's updated_since polls; 0 = none
    live_queue_size: int = 100  # changes queued per subscriber; a slower one loses the oldest
    # published events kept: the window in which repeats are known, and how far back Customer.history shows
    # the systems' changes (the issue: at least a year)
    events_retention_days: float = 365.0

    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def production(self) -> bool:
        return self.environment == "production"


_ENV_PREFIX = "CG_"
_FIELDS = {f.name: f for f in fields(Settings) if f.name != "extra"}


def _coerce_mapping(name: str, value: Any) -> dict[str, int]:
    """A role → number table: a TOML table, or ``"role=5000,other=2000"`` in an environment variable."""
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            key, sep, number = part.partition("=")
            if not sep:
                raise SettingsError(f"{name}: expected role=number pairs separated by commas, got {part!r}")
            items.append((key, number))
    table: dict[str, int] = {}
    for key, number in items:
        if not str(key).strip():
            raise SettingsError(f"{name}: a role name is empty")
        try:
            table[str(key).strip()] = int(number)
        except (TypeError, ValueError):
            raise SettingsError(f"{name}: expected a whole number for {key!r}, got {number!r}") from None
    return table


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, Mapping):
        return _coerce_mapping(name, value)
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
    if values.get("environment") == "production":
        # Production turns GraphiQL and introspection off unless they are set explicitly.
        values.setdefault("graphiql", False)
        values.setdefault("introspection", False)
    settings = replace(base, **values)
    if settings.environment not in {"development", "production"}:
        raise SettingsError("environment: expected 'development' or 'production'")
    _check_request_limits(settings)
    _check_pool(settings)
    _check_live(settings)
    return settings


def _check_request_limits(settings: Settings) -> None:
    if settings.persisted_queries not in {"off", "apq", "allowlist"}:
        raise SettingsError("persisted_queries: expected 'off', 'apq' or 'allowlist'")
    if settings.persisted_queries == "allowlist" and not settings.allowlist_file:
        raise SettingsError("persisted_queries = 'allowlist' needs allowlist_file (CG_ALLOWLIST_FILE)")
    for name in (
        "max_body_bytes",
        "max_depth",
        "max_aliases",
        "max_tokens",
        "max_selections",
        "anonymous_max_tokens",
        "anonymous_max_selections",
        "max_string_length",
        "max_cost",
        "apq_cache_size",
    ):
        if getattr(settings, name) < 1:
            raise SettingsError(f"{name}: must be at least 1")
    for name in ("cost_list_size", "rate_limit_per_minute", "rate_limit_burst"):
        if getattr(settings, name) < 0:
            raise SettingsError(f"{name}: must not be negative")
    for name in ("max_cost_per_role", "rate_limit_per_role"):
        for role, number in getattr(settings, name).items():
            if number < 1:
                raise SettingsError(f"{name}: {role} must be at least 1")


_REVIEW_REASONS = frozenset(
    (
        "no_demand",
        "unreachable",
        "duplicate",
        "wrong_region",
        "capacity",
        "other",
        "inactive",
        "dormant",
        "reassign",
    )
)


def _check_pool(settings: Settings) -> None:
    if settings.pool_max_owned < 1:
        raise SettingsError("pool_max_owned: must be at least 1")
    for reason in (r.strip() for r in settings.pool_review_skip.split(",")):
        if reason and reason not in _REVIEW_REASONS:
            raise SettingsError(
                f"pool_review_skip: unknown reason {reason!r} (one of {', '.join(sorted(_REVIEW_REASONS))})"
            )
    for name in (
        "pool_cooldown_days",
        "pool_recycle_after_days",
        "pool_warn_days",
        "pool_protection_days",
        "pool_sweep_interval",
    ):
        if getattr(settings, name) < 0:
            raise SettingsError(f"{name}: must not be negative")


def _check_live(settings: Settings) -> None:
    if settings.live_queue_size < 1:
        raise SettingsError("live_queue_size: must be at least 1")
    for name in (
        "contracts_poll_interval",
        "events_retention_days",
        "identity_refresh",
        "grant_cache_ttl",
        "read_alert_customers",
    ):
        if getattr(settings, name) < 0:
            raise SettingsError(f"{name}: must not be negative")


def retention_key(settings: Settings) -> bytes:
    """The key of the retention purge's pseudonyms (the same e-mail, the same pseudonym)."""
    secret = settings.retention_key or settings.jwt_secret or "customer-graph-retention"
    return hashlib.sha256(b"retention:" + secret.encode()).digest()
