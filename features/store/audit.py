"""The audit trail: append-only, hash-chained records in the gateway's database.

What the gateway records (docs/policy.md, Audit): every response that served an allowed or masked value
of a policy-controlled field (``read``), every denial (``denial``), every write with its values before
and after (``write``), every use of an access grant with the grant's id (``grant_use``), access requests
and their decisions (``access_request``, ``access_decision``), a grant revoked before its end
(``access_revocation``).

**The chain.** Record *n* carries ``prev_hash`` (record *n-1*'s hash; 64 zeros for the first) and
``hash = sha256(prev_hash + "\\n" + n + "\\n" + canonical JSON of the record)`` — canonical: sorted keys,
no whitespace, UTF-8, times as ``2025-03-02T08:15:00.000000Z``; ``id`` (= *n*) is the chain position,
so a removed record is a gap as well as a broken link.

**Values are committed, not hashed in (format 2).** The values a record holds — each key of ``before``,
``after`` and ``detail`` (or the whole of one that is not an object) — enter the hashed JSON as
``sha256(salt + "\\n" + path + "\\n" + canonical JSON of the value)``, each path (``before.email``)
with a random salt of its own kept in ``salts``. So a value can be *redacted* (``redact()``: erasure,
retention) — the value and its salt removed, its commitment kept in ``redactions`` — and the record's
hash, the chain and ``verify()`` stay intact: the trail keeps the fact (who, when, which customer,
which field changed), not the value. A removed salt makes the commitment of a low-entropy value (a
phone number) impossible to test guesses against. While a value is present ``verify()`` recomputes its
commitment, so an edited value is caught like any other edit. Every redaction is itself a
``maintenance`` record. (Migration 0010 moved chains written in the first format to this one after
checking them; its ``maintenance`` record names the old head.)

The last id and hash are also kept in ``audit_chain_head``, updated in the same transaction, so
cutting records off the end shows too. ``verify()`` recomputes all of it. (Anyone who can rewrite the
whole table and the head can forge a consistent chain: keep a copy of ``VerifyResult.head_hash``
elsewhere to make that evident too.)

**Appends are serialised**: on PostgreSQL by ``pg_advisory_xact_lock`` taken in the appending
transaction (several gateway processes may share one database), the head read after it; on SQLite
by ``BEGIN IMMEDIATE`` and, within a process, an ``asyncio.Lock``. On a SQLite file ``record()``'s
transactions run on the database's writer thread (``Database.run_write``: one synchronous connection,
one transaction at a time), so the event loop spends one thread hop per group commit, not one per
statement; ``transaction()`` (the caller's own statements with its entries) uses the async engine.

**Durability before the response.** ``record()`` returns once the records are committed, and raises
``AuditUnavailable`` otherwise (the gateway answers ``INTERNAL`` and serves nothing). Concurrent
``record()`` calls are group-committed: while one transaction commits, the records that arrive meanwhile
queue up and go together in the next one; each caller still waits for its own records' commit. A bad
entry (not JSON-able, unknown kind) raises ``ValueError``/``TypeError`` in its own caller, before it
is queued, so it never fails anyone else's batch.

Nothing here logs record contents: log lines name counts and error classes only.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import enum
import hashlib
import json
import logging
import math
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dt_time
from decimal import Decimal
from typing import Any, Literal, TextIO, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from features.cursors import InvalidCursor, decode_cursor, encode_cursor

from .checkpoints import CheckpointError, Checkpoints
from .db import (
    AUDIT_CHAIN_LOCK_KEY,
    STORE_ERRORS,
    Database,
    StoreUnavailable,
)
from .models import (
    CHAIN_HEAD_ID,
    GENESIS_HASH,
    audit_chain_head,
    audit_customers,
    audit_log,
    audit_quarantine,
)
from .sealed import SealedValueError, sealer_of

log = logging.getLogger(__name__)

AuditKind = Literal[
    "read",
    "denial",
    "write",
    "grant_use",
    "access_request",
    "access_decision",
    "access_revocation",
    "pool",
    "search",
    "maintenance",
]
AUDIT_KINDS: frozenset[str] = frozenset(get_args(AuditKind))
FIELD_DECISIONS: frozenset[str] = frozenset(("allow", "mask", "deny"))
OPERATION_TYPES: frozenset[str] = frozenset(("query", "mutation", "subscription", "cli", "system"))

MAX_PAGE = 500
_MAX_TEXT = 512  # request id, user, operation name, field names: longer is cut (never a personal datum)
_MAX_DEPTH = 32
_CURSOR_KIND = "audit"


class AuditUnavailable(StoreUnavailable):
    """The audit store could not take (or read) the records. Nothing must be served unaudited."""


# --- input: what the gateway records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One record to append.

    ``fields``: per customer (account number), each policy-controlled field and its decision
    (``allow`` | ``mask`` | ``deny``), e.g. ``{"A-1001": {"email": "mask", "payments": "deny"}}``.
    ``customer_ids``: the customers the record is about; the keys of ``fields`` are added (in order).
    ``grant_id``: for ``grant_use`` (and an approving ``access_decision``), the access grant's id.
    ``before`` / ``after``: for writes, the values before and after (any JSON-able value; datetimes,
    dates, decimals, UUIDs, enums and dataclasses are converted). ``detail``: small extra facts that are
    not personal data (an access request's id, a TTL, an error code). ``at``: default the time of
    ``record()``.
    """

    kind: AuditKind
    request_id: str
    user_sub: str
    roles: Collection[str] = ()
    operation_name: str | None = None
    operation_type: str = "query"
    fields: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    customer_ids: Sequence[str] = ()
    grant_id: str | None = None
    before: Any = None
    after: Any = None
    detail: Mapping[str, Any] | None = None
    at: datetime | None = None


# --- output: what is stored --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int  # position in the chain: 1, 2, 3, …
    at: datetime
    request_id: str
    user_sub: str
    roles: tuple[str, ...]
    operation_name: str | None
    operation_type: str
    kind: str
    customer_ids: tuple[str, ...]
    fields: Mapping[str, Mapping[str, str]]
    grant_id: str | None
    before: Any
    after: Any
    detail: Mapping[str, Any] | None
    prev_hash: str
    hash: str
    redacted: tuple[str, ...] = ()  # the value paths removed by erasure or retention ("before.email")

    @property
    def cursor(self) -> str:
        return encode_cursor(_CURSOR_KIND, str(self.id))

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values, camelCase keys (the export format)."""
        return {
            "id": self.id,
            "at": format_time(self.at),
            "requestId": self.request_id,
            "user": self.user_sub,
            "roles": list(self.roles),
            "operationName": self.operation_name,
            "operationType": self.operation_type,
            "kind": self.kind,
            "customers": list(self.customer_ids),
            "fields": {k: dict(v) for k, v in self.fields.items()},
            "grantId": self.grant_id,
            "before": self.before,
            "after": self.after,
            "detail": dict(self.detail) if self.detail is not None else None,
            "redacted": list(self.redacted),
            "prevHash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """All given conditions hold (``kinds``: any of them). ``since`` inclusive, ``until`` exclusive."""

    user_sub: str | None = None
    customer_id: str | None = None
    kinds: Collection[str] | None = None
    operation_name: str | None = None
    request_id: str | None = None
    grant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: list[AuditRecord]  # newest first
    has_next_page: bool
    end_cursor: str | None  # pass as ``after`` for the next page

    @property
    def start_cursor(self) -> str | None:
        return self.records[0].cursor if self.records else None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records_checked: int
    first_bad_id: int | None
    reason: str | None
    head_id: int  # what the chain head says: the last record's id and hash
    head_hash: str


# --- canonical form and hashing --------------------------------------------------------------------


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(prev_hash: str, record_id: int, body: str) -> str:
    """The hash of record ``record_id`` whose canonical body is ``body``, after ``prev_hash``."""
    return hashlib.sha256(f"{prev_hash}\n{record_id}\n{body}".encode()).hexdigest()


VALUE_PARTS: tuple[str, ...] = ("before", "after", "detail")
# Keys of ``detail`` that carry what a person typed or is (a search term): redacted with before/after.
PERSONAL_DETAIL_KEYS: frozenset[str] = frozenset(("search",))


def value_paths(before: Any, after: Any, detail: Any) -> list[tuple[str, Any]]:
    """Each committed value of a record with its path: every key of a part that is an object
    (``before.email``), or the part itself (``before``) when it is another non-null value."""
    paths: list[tuple[str, Any]] = []
    for part, value in zip(VALUE_PARTS, (before, after, detail), strict=True):
        if isinstance(value, Mapping):
            paths.extend((f"{part}.{key}", item) for key, item in value.items())
        elif value is not None:
            paths.append((part, value))
    return paths


def value_commitment(path: str, salt: str, value: Any) -> str:
    """What the hashed record holds in place of the value at ``path``."""
    return hashlib.sha256(f"{salt}\n{path}\n{canonical_json(value)}".encode()).hexdigest()


def _committed(
    before: Any, after: Any, detail: Any, salts: Mapping[str, str], redactions: Mapping[str, str]
) -> tuple[Any, Any, Any]:
    """``before``, ``after`` and ``detail`` as the hash sees them: each value replaced by its
    commitment (from its salt while it is present, from ``redactions`` once it is removed). Raises
    ``ValueError`` when a present value has no salt (the record cannot be checked)."""
    out: list[Any] = []
    for part, value in zip(VALUE_PARTS, (before, after, detail), strict=True):
        if isinstance(value, Mapping):
            committed: dict[str, str] = {}
            for key, item in value.items():
                path = f"{part}.{key}"
                if path not in salts:
                    raise ValueError(f"no salt for {path}")
                committed[key] = value_commitment(path, salts[path], item)
            prefix = part + "."
            for path, digest in redactions.items():
                if path.startswith(prefix):
                    committed[path[len(prefix) :]] = digest
            out.append(committed)
        elif value is not None:
            if part not in salts:
                raise ValueError(f"no salt for {part}")
            out.append(value_commitment(part, salts[part], value))
        else:
            out.append(redactions.get(part))
    return out[0], out[1], out[2]


def _body(
    at: datetime,
    request_id: str,
    user_sub: str,
    roles: Any,
    operation_name: str | None,
    operation_type: str,
    kind: str,
    customers: Any,
    fields: Any,
    grant_id: str | None,
    before: Any,
    after: Any,
    detail: Any,
    version: int = 2,
) -> str:
    """The hashed JSON of a record (format 2: ``before``/``after``/``detail`` already committed).
    ``version=1``: the first format (values hashed in, no ``format`` key), to check a chain being
    upgraded (``upgrade_chain_format``)."""
    body: dict[str, Any] = {
        "at": format_time(at),
        "requestId": request_id,
        "user": user_sub,
        "roles": roles,
        "operationName": operation_name,
        "operationType": operation_type,
        "kind": kind,
        "customers": customers,
        "fields": fields,
        "grantId": grant_id,
        "before": before,
        "after": after,
        "detail": detail,
    }
    if version != 1:
        body["format"] = version
    return canonical_json(body)


def _text(value: str, limit: int = _MAX_TEXT) -> str:
    """A string the databases store and give back unchanged: no NUL, valid UTF-8, bounded."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:limit]


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON values that survive a round trip through the database unchanged."""
    if depth > _MAX_DEPTH:
        raise ValueError("audit value nested too deeply")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("audit values cannot hold NaN or infinity")
        return value
    if isinstance(value, str):
        return _text(value, limit=1 << 20)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, datetime):
        return format_time(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date | dt_time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"audit value keys must be strings, not {type(key).__name__}")
            out[_text(str(key))] = jsonable(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [jsonable(item, depth + 1) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(item, depth + 1) for item in value), key=canonical_json)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot audit a value of type {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Prepared:
    values: dict[str, Any]  # audit_log columns but id, prev_hash, hash
    body: str
    customers: tuple[str, ...]


def _prepare(entry: AuditEntry, now: datetime) -> _Prepared:
    if entry.kind not in AUDIT_KINDS:
        raise ValueError(f"unknown audit kind {entry.kind!r}")
    if entry.operation_type not in OPERATION_TYPES:
        raise ValueError(f"unknown operation type {entry.operation_type!r}")
    if not entry.user_sub:
        raise ValueError("an audit record needs the user")
    if isinstance(entry.roles, str):
        raise TypeError("roles must be a collection of role names, not a string")
    at = entry.at if entry.at is not None else now
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    at = at.astimezone(UTC)
    fields: dict[str, dict[str, str]] = {}
    for account_no, decisions in entry.fields.items():
        per: dict[str, str] = {}
        for name, decision in decisions.items():
            if decision not in FIELD_DECISIONS:
                raise ValueError(f"unknown field decision {decision!r} (allow, mask or deny)")
            per[_text(name)] = decision
        fields[_text(account_no)] = per
    customers: list[str] = []
    seen: set[str] = set()
    for account_no in (*entry.customer_ids, *fields):
        cleaned = _text(account_no)
        if cleaned not in seen:
            seen.add(cleaned)
            customers.append(cleaned)
    roles = sorted({_text(r) for r in entry.roles})
    detail = jsonable(entry.detail) if entry.detail is not None else None
    before, after = jsonable(entry.before), jsonable(entry.after)
    salts = {path: secrets.token_hex(16) for path, _ in value_paths(before, after, detail)}
    committed = _committed(before, after, detail, salts, {})
    values: dict[str, Any] = {
        "at": at,
        "request_id": _text(entry.request_id),
        "user_sub": _text(entry.user_sub),
        "roles": roles,
        "operation_name": _text(entry.operation_name) if entry.operation_name is not None else None,
        "operation_type": entry.operation_type,
        "kind": entry.kind,
        "customers": customers,
        "fields": fields,
        "grant_id": _text(entry.grant_id) if entry.grant_id is not None else None,
        "before": before,
        "after": after,
        "detail": detail,
        "salts": salts or None,
        "redactions": None,
        "personal": any(_personal(path) for path in salts),
    }
    body = _body(
        at,
        values["request_id"],
        values["user_sub"],
        roles,
        values["operation_name"],
        entry.operation_type,
        entry.kind,
        customers,
        fields,
        values["grant_id"],
        *committed,
    )
    return _Prepared(values=values, body=body, customers=tuple(customers))


def _describe(exc: BaseException) -> str:
    """What went wrong, for messages and logs: error classes and driver messages, never SQL parameters."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    orig = getattr(exc, "orig", None)
    if orig is not None:
        return (
            f"{type(exc).__name__}: {str(orig).splitlines()[0][:200] if str(orig) else type(orig).__name__}"
        )
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc.errno}"
    return type(exc).__name__


# --- appending to the chain -------------------------------------------------------------------------

_LOCK_CHAIN = sa.text("SELECT pg_advisory_xact_lock(:key)")
_READ_HEAD = sa.select(audit_chain_head.c.last_id, audit_chain_head.c.last_hash).where(
    audit_chain_head.c.id == CHAIN_HEAD_ID
)
_INSERT_RECORDS = audit_log.insert()
_MAX_ID = sa.select(sa.func.max(audit_log.c.id))
_INSERT_INDEX = audit_customers.insert()
_MOVE_HEAD = (  # compare-and-set: only from the head this append started from
    audit_chain_head.update()
    .where(audit_chain_head.c.id == CHAIN_HEAD_ID, audit_chain_head.c.last_id == sa.bindparam("from_id"))
    .values(last_id=sa.bindparam("to_id"), last_hash=sa.bindparam("to_hash"))
)


@dataclass(frozen=True, slots=True)
class _Appended:
    last_id: int
    last_hash: str
    quarantined: int  # rows found past the chain head and moved to audit_quarantine


def _append(conn: Connection, entries: Sequence[_Prepared]) -> _Appended:
    """Append ``entries`` to the chain inside ``conn``'s transaction, which must hold the chain lock on
    SQLite (``BEGIN IMMEDIATE``); on PostgreSQL the advisory lock is taken here, held until commit.
    Rows found past the chain head (forged, or left by tampering) are first moved to
    ``audit_quarantine``: the real chain goes on, the evidence is kept, and ``verify`` reports it.
    Synchronous: run on the writer thread (``Database.run_write``) or through ``run_sync``."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_CHAIN, {"key": AUDIT_CHAIN_LOCK_KEY})
    head = conn.execute(_READ_HEAD).one_or_none()
    if head is None:
        raise AuditUnavailable("the audit chain head is missing (database not migrated?)")
    first_id = last_id = int(head.last_id)
    quarantined = 0
    top = conn.execute(_MAX_ID).scalar()
    if top is not None and int(top) > first_id:
        quarantined = _quarantine(conn, first_id)
    prev = str(head.last_hash)
    rows: list[dict[str, Any]] = []
    index_rows: list[dict[str, Any]] = []
    for item in entries:
        last_id += 1
        digest = chain_hash(prev, last_id, item.body)
        rows.append({**item.values, "id": last_id, "prev_hash": prev, "hash": digest})
        index_rows.extend({"account_no": a, "audit_id": last_id} for a in item.customers)
        prev = digest
    conn.execute(_INSERT_RECORDS, rows)
    if index_rows:
        conn.execute(_INSERT_INDEX, index_rows)
    moved = conn.execute(_MOVE_HEAD, {"from_id": first_id, "to_id": last_id, "to_hash": prev})
    if moved.rowcount != 1:
        raise AuditUnavailable("the audit chain head moved during an append")
    return _Appended(last_id, prev, quarantined)


def _quarantine(conn: Connection, head_id: int) -> int:
    found = conn.execute(sa.select(audit_log).where(audit_log.c.id > head_id)).mappings().all()
    now = datetime.now(UTC)
    conn.execute(
        audit_quarantine.insert(),
        [
            {
                "record_id": int(row["id"]),
                "row": {k: jsonable(v) for k, v in row.items()},
                "quarantined_at": now,
            }
            for row in found
        ],
    )
    conn.execute(audit_customers.delete().where(audit_customers.c.audit_id > head_id))
    conn.execute(audit_log.delete().where(audit_log.c.id > head_id))
    return len(found)


def _first_hash(conn: Connection) -> str | None:
    found = conn.execute(sa.select(audit_log.c.hash).where(audit_log.c.id == 1)).scalar()
    return str(found) if found is not None else None


class ChainUpgradeError(Exception):
    """A chain in the first format that does not verify: it is left as it is (nothing is upgraded)."""


SYSTEM_USER = "customer-graph"  # the user of records the gateway writes of its own accord


def upgrade_chain_format(conn: Connection, chunk: int = 2000) -> int:
    """Move a chain written in the first format (values hashed in) to format 2 (values committed),
    inside ``conn``'s transaction (migration 0010): check every record against its first-format hash,
    give each value a salt, recompute the hashes from record 1, move the head, and append a
    ``maintenance`` record naming the old head (its id and hash, so the last checkpoint of the old
    chain can be matched to it). Raises ``ChainUpgradeError`` (nothing changed) when the old chain does
    not verify. Returns the number of records upgraded."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_CHAIN, {"key": AUDIT_CHAIN_LOCK_KEY})
    head = conn.execute(_READ_HEAD).one_or_none()
    if head is None or int(head.last_id) == 0:
        return 0
    head_id, head_hash = int(head.last_id), str(head.last_hash)
    columns = [c for c in audit_log.c if c.name not in ("salts", "redactions")]
    old_prev = new_prev = GENESIS_HASH
    expected = 1
    while expected <= head_id:
        rows = (
            conn.execute(
                sa.select(*columns)
                .where(audit_log.c.id >= expected, audit_log.c.id <= head_id)
                .order_by(audit_log.c.id)
                .limit(chunk)
            )
            .mappings()
            .all()
        )
        if not rows:
            break
        updates: list[dict[str, Any]] = []
        for row in rows:
            record_id = int(row["id"])
            facts = (
                row["at"],
                row["request_id"],
                row["user_sub"],
                row["roles"],
                row["operation_name"],
                row["operation_type"],
                row["kind"],
                row["customers"],
                row["fields"],
                row["grant_id"],
            )
            old_body = _body(*facts, row["before"], row["after"], row["detail"], version=1)
            if (
                record_id != expected
                or row["prev_hash"] != old_prev
                or chain_hash(old_prev, record_id, old_body) != row["hash"]
            ):
                raise ChainUpgradeError(
                    f"the audit chain does not verify at record {expected}: nothing was upgraded "
                    "(run 'customer-graph audit verify' with the previous release and investigate)"
                )
            old_prev = str(row["hash"])
            salts = {
                path: secrets.token_hex(16)
                for path, _ in value_paths(row["before"], row["after"], row["detail"])
            }
            committed = _committed(row["before"], row["after"], row["detail"], salts, {})
            digest = chain_hash(new_prev, record_id, _body(*facts, *committed))
            updates.append(
                {
                    "rid": record_id,
                    "salts": salts or None,
                    "personal": any(_personal(path) for path in salts),
                    "prev": new_prev,
                    "digest": digest,
                }
            )
            new_prev = digest
            expected += 1
        conn.execute(
            audit_log.update()
            .where(audit_log.c.id == sa.bindparam("rid"))
            .values(
                salts=sa.bindparam("salts"),
                personal=sa.bindparam("personal"),
                prev_hash=sa.bindparam("prev"),
                hash=sa.bindparam("digest"),
            ),
            updates,
        )
    if expected - 1 != head_id or old_prev != head_hash:
        raise ChainUpgradeError(
            f"the audit chain ends at record {expected - 1} but its head says {head_id}: nothing was "
            "upgraded (run 'customer-graph audit verify' with the previous release and investigate)"
        )
    conn.execute(
        audit_chain_head.update().where(audit_chain_head.c.id == CHAIN_HEAD_ID).values(last_hash=new_prev)
    )
    entry = AuditEntry(
        kind="maintenance",
        request_id="",
        user_sub=SYSTEM_USER,
        operation_type="system",
        detail={
            "operation": "upgradeAuditFormat",
            "format": 2,
            "records": head_id,
            "previousHeadId": head_id,
            "previousHeadHash": head_hash,
        },
    )
    _append(conn, [_prepare(entry, datetime.now(UTC))])
    return head_id


def _personal(path: str) -> bool:
    """Is the value at ``path`` one that erasure and retention remove (a write's values, a search term)?"""
    part, _, key = path.partition(".")
    return part in ("before", "after") or (part == "detail" and key in PERSONAL_DETAIL_KEYS)


@dataclass(frozen=True, slots=True)
class Redacted:
    records: int  # records whose values were (partly) removed
    values: int  # values removed


_REDACT_COLUMNS = (
    audit_log.c.id,
    audit_log.c.kind,
    audit_log.c.before,
    audit_log.c.after,
    audit_log.c.detail,
    audit_log.c.salts,
    audit_log.c.redactions,
)


def _redact_row(row: Mapping[Any, Any], wanted: Callable[[str, Any], bool]) -> dict[str, Any] | None:
    """The new value columns of ``row`` with every value ``wanted(path, value)`` removed and committed
    in ``redactions``; None when nothing is to be removed."""
    salts: dict[str, str] = dict(row["salts"] or {})
    redactions: dict[str, str] = dict(row["redactions"] or {})
    parts = {part: row[part] for part in VALUE_PARTS}
    removed = 0
    for path, value in value_paths(parts["before"], parts["after"], parts["detail"]):
        if path not in salts or not wanted(path, value):
            continue
        redactions[path] = value_commitment(path, salts.pop(path), value)
        part, _, key = path.partition(".")
        if key:
            parts[part] = {k: v for k, v in parts[part].items() if k != key}
        else:
            parts[part] = None
        removed += 1
    if not removed:
        return None
    return {
        "rid": row["id"],
        **parts,
        "salts": salts or None,
        "redactions": redactions,
        "personal": any(_personal(path) for path in salts),
        "removed": removed,
    }


def _normal(text: str) -> str:
    return "".join(text.casefold().split())


def matches_any(term: str, values: Collection[str]) -> bool:
    """Does a search term give away one of ``values``: one holds the other (case and spaces aside),
    or their digits do (a phone number typed another way)? Terms under 2 characters match nothing."""
    t = _normal(term)
    digits = "".join(c for c in t if c.isdigit())
    for value in values:
        v = _normal(value)
        if len(t) >= 2 and len(v) >= 2 and (t in v or v in t):
            return True
        v_digits = "".join(c for c in v if c.isdigit())
        if len(digits) >= 4 and len(v_digits) >= 4 and (digits in v_digits or v_digits in digits):
            return True
    return False


# --- the log -----------------------------------------------------------------------------------------


class AuditTransaction:
    """A write transaction of the caller's own (``connection``) whose audit entries (``add()``) are
    appended to the chain in the same transaction, at its end: both commit, or neither does."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self._entries: list[_Prepared] = []

    def add(self, *entries: AuditEntry) -> None:
        now = datetime.now(UTC)
        self._entries.extend(_prepare(e, now) for e in entries)


@dataclass(slots=True, eq=False)
class _Waiting:
    prepared: list[_Prepared]
    done: asyncio.Future[None]


class AuditLog:
    """The audit trail in ``database``. ``group_commit=False``: one transaction per ``record()`` call.
    ``timeout``: seconds a commit may take before the records count as not taken."""

    def __init__(
        self,
        database: Database,
        *,
        group_commit: bool = True,
        max_batch: int = 1000,
        timeout: float = 5.0,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.db = database
        self.checkpoints = checkpoints
        self.quarantined = 0  # rows found past the chain head by this process's appends (tampering)
        self._chain: str | None = None  # the first record's hash: the chain's identity in checkpoints
        self.group_commit = group_commit
        self.max_batch = max_batch
        self.timeout = timeout
        self._lock = asyncio.Lock()  # SQLite: one appending transaction at a time in this process
        self._queue: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0  # transactions committed by record() (for tests and metrics)

    # --- appending ------------------------------------------------------------------------------

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        """Append a request's entries (in this order, contiguous in the chain) and return once they
        are committed. Raises ``AuditUnavailable`` when they could not be (nothing of them is stored
        then, unless the failure hit the commit's acknowledgement itself, or the timeout ran out while
        the writer thread was committing them: that transaction still ends there)."""
        if not entries:
            return
        now = datetime.now(UTC)
        prepared = [_prepare(e, now) for e in entries]
        if not self.group_commit:
            await self._commit([prepared])
            return
        loop = asyncio.get_running_loop()
        waiting = _Waiting(prepared, loop.create_future())
        self._queue.append(waiting)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="audit-group-commit")
        await waiting.done

    async def _flush(self) -> None:
        batch: list[_Waiting] = []
        try:
            await asyncio.sleep(0)  # let the callers of this loop iteration join the first batch
            while self._queue:
                batch, size = [], 0
                while self._queue and (not batch or size + len(self._queue[0].prepared) <= self.max_batch):
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += len(item.prepared)
                try:
                    await self._commit([w.prepared for w in batch])
                except AuditUnavailable as exc:
                    for w in batch:
                        if not w.done.done():
                            w.done.set_exception(AuditUnavailable(str(exc)))
                else:
                    for w in batch:
                        if not w.done.done():
                            w.done.set_result(None)
                batch = []
        finally:
            # cancelled (shutdown): nobody may believe its records were stored
            stranded = batch + self._queue
            self._queue = []
            for w in stranded:
                if not w.done.done():
                    w.done.set_exception(AuditUnavailable("the audit log was shut down"))

    async def _commit(self, groups: list[list[_Prepared]]) -> None:
        entries = [p for group in groups for p in group]
        try:
            async with asyncio.timeout(self.timeout):
                if self.db.is_sqlite:
                    async with self._lock:
                        appended = await self.db.run_write(_append, entries)
                else:
                    appended = await self.db.run_write(_append, entries)
        except AuditUnavailable:
            log.warning("audit store did not take %d record(s): chain head missing or moved", len(entries))
            raise
        except STORE_ERRORS as exc:
            reason = _describe(exc)
            log.warning("audit store did not take %d record(s): %s", len(entries), reason)
            raise AuditUnavailable(f"the audit store is unavailable ({reason})") from None
        except Exception as exc:  # anything else: still nobody may think the records were stored
            log.error(
                "audit append failed unexpectedly (%s); %d record(s) not taken",
                type(exc).__name__,
                len(entries),
            )
            raise AuditUnavailable(f"the audit store is unavailable ({type(exc).__name__})") from None
        self.commits += 1
        await self._after_append(appended)

    async def _after_append(self, appended: _Appended) -> None:
        if appended.quarantined:
            self.quarantined += appended.quarantined
            log.error(
                "audit trail tampered with: %d record(s) past the chain head moved to audit_quarantine; "
                "the chain goes on from its head (run customer-graph audit verify)",
                appended.quarantined,
            )
        if self.checkpoints is not None and self.checkpoints.due(appended.last_id):
            if self._chain is None:
                async with self.db.read() as conn:
                    self._chain = await conn.run_sync(_first_hash)
            if self._chain is not None:
                self.checkpoints.write(self._chain, appended.last_id, appended.last_hash)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AuditTransaction]:
        """A write transaction whose own statements and audit entries commit together (see
        ``AuditTransaction``). Store failures raise ``AuditUnavailable``; the body's own exceptions
        roll everything back and pass through unchanged."""
        try:
            async with asyncio.timeout(self.timeout):
                if self.db.is_sqlite:
                    await self._lock.acquire()
                try:
                    async with self.db.write_transaction() as conn:
                        tx = AuditTransaction(conn)
                        yield tx
                        if tx._entries:
                            await conn.run_sync(_append, tx._entries)
                finally:
                    if self.db.is_sqlite:
                        self._lock.release()
        except STORE_ERRORS as exc:
            reason = _describe(exc)
            log.warning("audit store transaction failed: %s", reason)
            raise AuditUnavailable(f"the audit store is unavailable ({reason})") from None

    # --- redaction: erasure and retention ---------------------------------------------------------

    async def redact_customer(
        self, account_no: str, terms: Collection[str], *, cause: Mapping[str, Any], chunk: int = 500
    ) -> Redacted:
        """Remove the values of every record about ``account_no`` (a write's before and after, a
        request's reason) and every search term that gives away one of ``terms`` (the erased values).
        The facts stay; the chain still verifies. Idempotent; each chunk is one transaction with a
        ``maintenance`` record saying what was removed (``cause``: the erasure request)."""
        about = sa.select(audit_customers.c.audit_id).where(audit_customers.c.account_no == account_no)
        first = await self._redact(audit_log.c.id.in_(about), lambda p, v: _personal(p), cause, chunk)
        searched = await self._redact(
            audit_log.c.kind == "search",
            lambda p, v: _personal(p) and isinstance(v, str) and matches_any(v, terms),
            cause,
            chunk,
        )
        return Redacted(first.records + searched.records, first.values + searched.values)

    async def redact_older_than(
        self, cutoff: datetime, *, cause: Mapping[str, Any], chunk: int = 500
    ) -> Redacted:
        """Remove the values (see ``redact_customer``) of every record from before ``cutoff``."""
        _aware(cutoff)
        return await self._redact(audit_log.c.at < cutoff, lambda p, v: _personal(p), cause, chunk)

    async def _redact(
        self,
        where: sa.ColumnElement[bool],
        wanted: Callable[[str, Any], bool],
        cause: Mapping[str, Any],
        chunk: int,
    ) -> Redacted:
        last, records, values = 0, 0, 0
        while True:
            async with self.transaction() as tx:
                rows = (
                    (
                        await tx.connection.execute(
                            sa.select(*_REDACT_COLUMNS)
                            .where(where, audit_log.c.id > last, audit_log.c.personal.is_(True))
                            .order_by(audit_log.c.id)
                            .limit(chunk)
                        )
                    )
                    .mappings()
                    .all()
                )
                changes = [c for c in (_redact_row(row, wanted) for row in rows) if c is not None]
                if changes:
                    await tx.connection.execute(
                        audit_log.update()
                        .where(audit_log.c.id == sa.bindparam("rid"))
                        .values(
                            before=sa.bindparam("before"),
                            after=sa.bindparam("after"),
                            detail=sa.bindparam("detail"),
                            salts=sa.bindparam("salts"),
                            redactions=sa.bindparam("redactions"),
                            personal=sa.bindparam("personal"),
                        ),
                        [{k: v for k, v in c.items() if k != "removed"} for c in changes],
                    )
                    removed = sum(int(c["removed"]) for c in changes)
                    tx.add(
                        AuditEntry(
                            kind="maintenance",
                            request_id=str(cause.get("requestId", "")),
                            user_sub=str(cause.get("by", SYSTEM_USER)),
                            operation_type="system",
                            detail={
                                "operation": "redactValues",
                                **{k: v for k, v in cause.items() if k not in ("by", "requestId")},
                                "records": len(changes),
                                "values": removed,
                                "firstId": int(changes[0]["rid"]),
                                "lastId": int(changes[-1]["rid"]),
                            },
                        )
                    )
                    records += len(changes)
                    values += removed
            if len(rows) < chunk:
                return Redacted(records, values)
            last = int(rows[-1]["id"])

    async def aclose(self) -> None:
        """Wait for queued records to be committed (or to fail)."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.wait([flusher])

    # --- reading --------------------------------------------------------------------------------

    async def query(self, filter: AuditFilter, first: int = 50, after: str | None = None) -> AuditPage:
        """Records matching ``filter``, newest first, ``first`` at most (1..500), after the cursor
        ``after``. Raises ``InvalidCursor`` (a ``ValueError``) for a cursor it did not make."""
        if not 1 <= first <= MAX_PAGE:
            raise ValueError(f"first must be between 1 and {MAX_PAGE}")
        _aware(filter.since, filter.until)
        stmt = sa.select(audit_log)
        if filter.customer_id is not None:
            stmt = stmt.join(
                audit_customers,
                sa.and_(
                    audit_customers.c.audit_id == audit_log.c.id,
                    audit_customers.c.account_no == filter.customer_id,
                ),
            )
        conditions: list[sa.ColumnElement[bool]] = []
        if filter.user_sub is not None:
            conditions.append(audit_log.c.user_sub == filter.user_sub)
        if filter.kinds is not None:
            conditions.append(audit_log.c.kind.in_(sorted(filter.kinds)))
        if filter.operation_name is not None:
            conditions.append(audit_log.c.operation_name == filter.operation_name)
        if filter.request_id is not None:
            conditions.append(audit_log.c.request_id == filter.request_id)
        if filter.grant_id is not None:
            conditions.append(audit_log.c.grant_id == filter.grant_id)
        if filter.since is not None:
            conditions.append(audit_log.c.at >= filter.since)
        if filter.until is not None:
            conditions.append(audit_log.c.at < filter.until)
        if after is not None:
            (after_id,) = decode_cursor(_CURSOR_KIND, after, 1)
            if not after_id.isdigit():
                raise InvalidCursor("invalid cursor")
            conditions.append(audit_log.c.id < int(after_id))
        stmt = stmt.where(*conditions).order_by(audit_log.c.id.desc()).limit(first + 1)
        try:
            async with self.db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        except STORE_ERRORS as exc:
            raise AuditUnavailable(f"the audit store is unavailable ({_describe(exc)})") from None
        records = [_record(row) for row in rows[:first]]
        return AuditPage(
            records=records,
            has_next_page=len(rows) > first,
            end_cursor=records[-1].cursor if records else None,
        )

    async def get(self, record_id: int) -> AuditRecord | None:
        try:
            async with self.db.read() as conn:
                row = (
                    (await conn.execute(sa.select(audit_log).where(audit_log.c.id == record_id)))
                    .mappings()
                    .one_or_none()
                )
        except STORE_ERRORS as exc:
            raise AuditUnavailable(f"the audit store is unavailable ({_describe(exc)})") from None
        return _record(row) if row is not None else None

    async def _scan(
        self, since: datetime | None, until: datetime | None, chunk: int = 1000
    ) -> AsyncIterator[AuditRecord]:
        """Records oldest first (by id), in chunks of one statement each."""
        last = 0
        async with self.db.read() as conn:
            while True:
                stmt = sa.select(audit_log).where(audit_log.c.id > last)
                if since is not None:
                    stmt = stmt.where(audit_log.c.at >= since)
                if until is not None:
                    stmt = stmt.where(audit_log.c.at < until)
                rows = (await conn.execute(stmt.order_by(audit_log.c.id).limit(chunk))).mappings().all()
                for row in rows:
                    yield _record(row)
                if len(rows) < chunk:
                    return
                last = int(rows[-1]["id"])

    async def export(
        self,
        since: datetime | None,
        fmt: Literal["jsonl", "csv"],
        out: TextIO,
        *,
        until: datetime | None = None,
    ) -> int:
        """Write the records from ``since`` (inclusive; None: all) oldest first to ``out``, one JSON
        object per line (``jsonl``) or CSV with a header (nested values as JSON). Returns the count."""
        if fmt not in ("jsonl", "csv"):
            raise ValueError("format must be jsonl or csv")
        _aware(since, until)
        count = 0
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(EXPORT_COLUMNS)
        try:
            async for record in self._scan(since, until):
                data = record.to_dict()
                if writer is not None:
                    writer.writerow([_csv_cell(data[c]) for c in EXPORT_COLUMNS])
                else:
                    out.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
                    out.write("\n")
                count += 1
        except STORE_ERRORS as exc:
            raise AuditUnavailable(f"the audit store is unavailable ({_describe(exc)})") from None
        return count

    async def verify(self, *, chunk: int = 2000, checkpoints: Checkpoints | None = None) -> VerifyResult:
        """Recompute the chain from the first record to the head: contiguous ids, each ``prev_hash``
        the previous ``hash``, each ``hash`` the record's contents, the customer index matching, the
        head matching the last record. Raises ``AuditUnavailable`` when the store cannot be read."""
        try:
            return await self._verify(chunk, checkpoints if checkpoints is not None else self.checkpoints)
        except STORE_ERRORS as exc:
            raise AuditUnavailable(f"the audit store is unavailable ({_describe(exc)})") from None

    async def _verify(self, chunk: int, checkpoints: Checkpoints | None) -> VerifyResult:
        json_columns = ("roles", "customers", "fields", "before", "after", "detail", "salts", "redactions")
        columns = [
            sa.cast(c, sa.Text).label(c.name) if c.name in json_columns else c for c in audit_log.columns
        ]
        async with self.db.read() as conn:
            sealer = sealer_of(conn.dialect)  # the values are sealed: read as stored, opened here
            head = (
                await conn.execute(
                    sa.select(audit_chain_head.c.last_id, audit_chain_head.c.last_hash).where(
                        audit_chain_head.c.id == CHAIN_HEAD_ID
                    )
                )
            ).one_or_none()
            if head is None:
                return VerifyResult(False, 0, None, "the chain head is missing", 0, "")
            head_id, head_hash = int(head.last_id), str(head.last_hash)

            def bad(checked: int, record_id: int | None, reason: str) -> VerifyResult:
                return VerifyResult(False, checked, record_id, reason, head_id, head_hash)

            anchors: dict[int, str] = {}
            if checkpoints is not None:
                chain = await conn.run_sync(_first_hash)
                try:
                    for point in checkpoints.read(chain or ""):
                        anchors[point.record_id] = point.hash
                except CheckpointError as exc:
                    return bad(0, None, f"the checkpoint file cannot be trusted: {exc}")
                beyond = [n for n in anchors if n > head_id]
                if beyond:
                    return bad(
                        0,
                        head_id + 1,
                        f"the chain ends at {head_id} but a checkpoint recorded record {max(beyond)}: "
                        "records were cut off the end and the head moved back",
                    )
            prev, expected, checked = GENESIS_HASH, 1, 0
            while expected <= head_id:
                try:
                    rows = (
                        (
                            await conn.execute(
                                sa.select(*columns)
                                .where(audit_log.c.id >= expected, audit_log.c.id <= head_id)
                                .order_by(audit_log.c.id)
                                .limit(chunk)
                            )
                        )
                        .mappings()
                        .all()
                    )
                except (ValueError, TypeError):
                    return bad(checked, expected, f"a record from id {expected} on cannot be read")
                if not rows:
                    break
                low, high = int(rows[0]["id"]), int(rows[-1]["id"])
                index: dict[int, set[str]] = {}
                for account_no, audit_id in (
                    await conn.execute(
                        sa.select(audit_customers.c.account_no, audit_customers.c.audit_id).where(
                            audit_customers.c.audit_id >= low, audit_customers.c.audit_id <= high
                        )
                    )
                ).all():
                    index.setdefault(int(audit_id), set()).add(str(account_no))
                for row in rows:
                    record_id = int(row["id"])
                    if record_id != expected:
                        missing = (
                            f"record {expected} is missing"
                            if record_id == expected + 1
                            else f"records {expected} to {record_id - 1} are missing"
                        )
                        return bad(checked, record_id, missing)
                    if row["prev_hash"] != prev:
                        return bad(checked, record_id, "its prev_hash is not the previous record's hash")
                    try:
                        parsed = {
                            c: None
                            if row[c] is None
                            else json.loads(sealer.open(f"audit_log.{c}", row[c]))
                            if c in VALUE_PARTS
                            else json.loads(row[c])
                            for c in json_columns
                        }
                        committed = _committed(
                            parsed["before"],
                            parsed["after"],
                            parsed["detail"],
                            parsed["salts"] or {},
                            parsed["redactions"] or {},
                        )
                        body = _body(
                            row["at"],
                            row["request_id"],
                            row["user_sub"],
                            parsed["roles"],
                            row["operation_name"],
                            row["operation_type"],
                            row["kind"],
                            parsed["customers"],
                            parsed["fields"],
                            row["grant_id"],
                            *committed,
                        )
                    except (ValueError, TypeError, AttributeError, SealedValueError):
                        return bad(checked, record_id, "its contents cannot be read")
                    if chain_hash(prev, record_id, body) != row["hash"]:
                        return bad(checked, record_id, "its contents do not match its hash")
                    if index.get(record_id, set()) != set(parsed["customers"] or ()):
                        return bad(checked, record_id, "the customer index does not match the record")
                    anchored = anchors.get(record_id)
                    if anchored is not None and anchored != row["hash"]:
                        return bad(checked, record_id, "its hash is not the one its checkpoint recorded")
                    prev = str(row["hash"])
                    expected += 1
                    checked += 1
            if expected - 1 != head_id:
                return bad(checked, expected, f"the chain ends at {expected - 1} but its head says {head_id}")
            if prev != head_hash:
                return bad(checked, head_id, "the last record's hash is not the one in the chain head")
            past = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(audit_log.c.id)).where(audit_log.c.id > head_id)
                )
            ).one()
            if past[0]:
                return bad(
                    checked,
                    int(past[1]),
                    f"{past[0]} record(s) past the chain head are not part of the chain",
                )
            held = (
                await conn.execute(sa.select(sa.func.count()).select_from(audit_quarantine))
            ).scalar() or 0
            if held:
                return bad(
                    checked,
                    None,
                    f"{held} record(s) found past the chain head were moved to audit_quarantine: "
                    "the table was tampered with",
                )
            return VerifyResult(True, checked, None, None, head_id, head_hash)


EXPORT_COLUMNS: tuple[str, ...] = (
    "id",
    "at",
    "requestId",
    "user",
    "roles",
    "operationName",
    "operationType",
    "kind",
    "customers",
    "fields",
    "grantId",
    "before",
    "after",
    "detail",
    "redacted",
    "prevHash",
    "hash",
)


def _aware(*times: datetime | None) -> None:
    if any(t is not None and t.tzinfo is None for t in times):
        raise ValueError("times must be timezone-aware")


def _csv_cell(value: Any) -> str | int:
    if value is None:
        return ""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _record(row: Mapping[Any, Any]) -> AuditRecord:
    return AuditRecord(
        id=int(row["id"]),
        at=row["at"],
        request_id=row["request_id"],
        user_sub=row["user_sub"],
        roles=tuple(row["roles"]),
        operation_name=row["operation_name"],
        operation_type=row["operation_type"],
        kind=row["kind"],
        customer_ids=tuple(row["customers"]),
        fields=row["fields"],
        grant_id=row["grant_id"],
        before=row["before"],
        after=row["after"],
        detail=row["detail"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
        redacted=tuple(sorted(row["redactions"] or ())),
    )
