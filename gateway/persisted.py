"""Persisted queries: Apollo's automatic persisted queries (APQ) and an allow-list mode.

APQ (the protocol Apollo Client's persisted-queries link speaks): a request carries
``extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}``. Without ``query``, the gateway
runs the query it knows under that hash, or answers ``PersistedQueryNotFound`` (code
``PERSISTED_QUERY_NOT_FOUND``, HTTP 200 — the client then sends the hash with the query, and the
gateway checks the hash and remembers the query). Known queries live in a bounded LRU in this process.

Allow-list (``persisted_queries = "allowlist"``): only operations whose sha256 is in the allow-list file
run, for the roles the file names (if it names any); anything else is ``FORBIDDEN`` "operation not in
the allow-list". The file (JSON or YAML) is either Apollo's persisted-query manifest
(``{"format": "apollo-persisted-query-manifest", "operations": [{"id", "name", "body"}]}``) or a mapping
``sha256 → name | query | {name, query, roles}``; an entry's ``query``/``body`` lets clients send the
hash alone.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from schema.errors import BadUserInput, Forbidden, GraphError

from .settings import Settings, SettingsError

__all__ = [
    "AllowList",
    "PersistedQueries",
    "PersistedQueryNotFound",
    "PersistedQueryNotSupported",
    "Resolved",
    "query_hash",
]

_HASH = re.compile(r"^[0-9a-f]{64}$")
_MAX_STORED_QUERY = 100_000  # characters; a longer query still runs, it is just not remembered


class PersistedQueryNotFound(GraphError):
    """Apollo clients match this exact message and code, then resend the hash with the query."""

    code = "PERSISTED_QUERY_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("PersistedQueryNotFound")


class PersistedQueryNotSupported(GraphError):
    """Apollo clients stop sending hashes when they see this message."""

    code = "PERSISTED_QUERY_NOT_SUPPORTED"

    def __init__(self) -> None:
        super().__init__("PersistedQueryNotSupported")


def query_hash(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class AllowedOperation:
    name: str | None
    query: str | None
    roles: frozenset[str] | None  # None: every caller

    def permits(self, roles: frozenset[str]) -> bool:
        return self.roles is None or not self.roles.isdisjoint(roles)


class AllowList:
    """The registered operations by sha256 (see the module doc for the file's formats)."""

    def __init__(self, operations: Mapping[str, AllowedOperation]) -> None:
        self.operations = dict(operations)

    def __len__(self) -> int:
        return len(self.operations)

    def get(self, sha256: str) -> AllowedOperation | None:
        return self.operations.get(sha256)

    @classmethod
    def load(cls, path: str | Path) -> AllowList:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"allow-list file not found: {path}") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise SettingsError(f"allow-list file {path}: cannot read it ({type(exc).__name__})") from None
        try:
            return cls(_parse_allowlist(data))
        except ValueError as exc:
            raise SettingsError(f"allow-list file {path}: {exc}") from None


def _parse_allowlist(data: Any) -> dict[str, AllowedOperation]:
    if isinstance(data, Mapping) and isinstance(data.get("operations"), list):
        raw: list[tuple[Any, Any]] = []
        for index, item in enumerate(data["operations"]):
            if not isinstance(item, Mapping):
                raise ValueError(f"operations[{index}] is not a mapping")
            raw.append((item.get("id"), item))
    elif isinstance(data, Mapping):
        table = data.get("operations", data)
        if not isinstance(table, Mapping):
            raise ValueError("expected a mapping of sha256 hashes, or Apollo's operations list")
        raw = list(table.items())
    else:
        raise ValueError("expected a mapping of sha256 hashes, or Apollo's operations list")
    operations: dict[str, AllowedOperation] = {}
    for key, value in raw:
        sha = str(key).strip().lower()
        if not _HASH.fullmatch(sha):
            raise ValueError(f"{key!r} is not a sha256 hash (64 hex digits)")
        name: Any = None
        query: Any = None
        roles: Any = None
        if isinstance(value, str):
            if "{" in value:
                query = value
            else:
                name = value
        elif isinstance(value, Mapping):
            name = value.get("name")
            query = value.get("query", value.get("body"))
            roles = value.get("roles")
        elif value is not None:
            raise ValueError(f"{sha}: expected a name, a query or a mapping")
        if query is not None and (not isinstance(query, str) or query_hash(query) != sha):
            raise ValueError(f"{sha}: the query's sha256 is not its hash")
        if roles is not None and (
            not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles)
        ):
            raise ValueError(f"{sha}: roles must be a non-empty list of role names")
        operations[sha] = AllowedOperation(
            name=str(name) if name is not None else None,
            query=query,
            roles=frozenset(roles) if roles is not None else None,
        )
    return operations


@dataclass(frozen=True, slots=True)
class Resolved:
    """The query to run, and the hash to remember it under once it ran (APQ registration)."""

    query: str | None
    register: str | None = None
    apq: str | None = None  # for the request log: "hit", "registered" (hash and query) or None


APQ_CACHE_BYTES = 4 << 20  # query text remembered for APQ, whatever the entry count


class PersistedQueries:
    """Turns a request's ``query`` and ``extensions.persistedQuery`` into the query to run."""

    def __init__(self, mode: str, cache_size: int = 1000, allowlist: AllowList | None = None) -> None:
        self.mode = mode
        self.cache_size = max(1, cache_size)
        self.allowlist = allowlist
        self._known: OrderedDict[str, str] = OrderedDict()
        self._known_bytes = 0  # query text held: bounded by APQ_CACHE_BYTES as well as by entries

    @classmethod
    def from_settings(cls, settings: Settings) -> PersistedQueries:
        allowlist = None
        if settings.persisted_queries == "allowlist":
            allowlist = AllowList.load(settings.allowlist_file)
        return cls(settings.persisted_queries, settings.apq_cache_size, allowlist)

    def resolve(
        self, query: str | None, extensions: Mapping[str, Any] | None, roles: frozenset[str]
    ) -> Resolved:
        """The query to run; raises the GraphError to answer instead."""
        persisted = extensions.get("persistedQuery") if extensions else None
        sha: str | None = None
        register: str | None = None
        outcome: str | None = None
        if persisted is not None:
            if self.mode == "off":
                if query is None:
                    raise PersistedQueryNotSupported()
            else:
                sha = _requested_hash(persisted)
                if query is None:
                    query = self._lookup(sha, roles)
                    outcome = "hit"
                else:
                    outcome = "registered"
                    if query_hash(query) != sha:
                        raise BadUserInput("provided sha does not match query")
                    if sha not in self._known:
                        register = sha
        if self.mode == "allowlist" and query is not None:
            self._check_allowed(sha or query_hash(query), roles)
        return Resolved(query=query, register=register, apq=outcome if persisted is not None else None)

    def remember(self, sha: str, query: str) -> None:
        if len(query) > _MAX_STORED_QUERY or sha in self._known:
            return
        self._known[sha] = query
        self._known_bytes += len(query)
        while len(self._known) > self.cache_size or self._known_bytes > APQ_CACHE_BYTES:
            _, dropped = self._known.popitem(last=False)
            self._known_bytes -= len(dropped)

    def _lookup(self, sha: str, roles: frozenset[str]) -> str:
        if self.allowlist is not None:
            self._check_allowed(sha, roles)
            entry = self.allowlist.get(sha)
            if entry is not None and entry.query is not None:
                return entry.query
        known = self._known.get(sha)
        if known is None:
            raise PersistedQueryNotFound()
        self._known.move_to_end(sha)
        return known

    def _check_allowed(self, sha: str, roles: frozenset[str]) -> None:
        entry = self.allowlist.get(sha) if self.allowlist is not None else None
        if entry is None or not entry.permits(roles):
            raise Forbidden("operation not in the allow-list")


def _requested_hash(persisted: Any) -> str:
    if not isinstance(persisted, Mapping):
        raise BadUserInput("extensions.persistedQuery must be an object")
    version = persisted.get("version")
    if type(version) is not int or version != 1:
        raise BadUserInput("Unsupported persisted query version")
    sha = persisted.get("sha256Hash")
    if not isinstance(sha, str) or not _HASH.fullmatch(sha.lower()):
        raise BadUserInput("extensions.persistedQuery.sha256Hash must be a sha256 hash (64 hex digits)")
    return sha.lower()
