"""One timeline per customer, from everything the gateway keeps about it: its own writes and the access
grants used on it (the audit trail), the systems' change events (the event inbox: sales webhooks by
account number, helpdesk webhooks by requester e-mail, the register's poll by tax id), and the pool
history (claims, releases, recycles, reassignments, reviews, warnings).

``CustomerHistory.page`` merges the sources newest first. A cursor is the last entry's (time, source, id):
each source is read up to that time and the merge drops what the order puts before it, so paging never
repeats or skips an entry. Values are the stored ones; the schema shows them through the reader's policy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from features.cursors import InvalidCursor, decode_cursor, encode_cursor
from features.store.audit import AuditFilter, AuditLog
from features.store.db import STORE_ERRORS, Database, StoreUnavailable
from features.store.models import UTCDateTime, event_inbox, pool_history

SOURCES = ("gateway", "access", "sales", "support", "contracts", "pool")
# audit kinds that are the customer's history (reads are not: the audit log has them)
_AUDIT_KINDS = ("write", "grant_use", "access_request", "access_decision", "access_revocation")
# pool operations the pool history tells better (with reason and note): their audit write is not repeated
POOL_OPERATIONS = frozenset({"claimCustomer", "releaseCustomer"})
_CURSOR = "history"
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    source: str  # one of SOURCES
    id: str  # unique within its source
    kind: str  # the operation, the system's event type, the pool event kind
    actor: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    grant_id: str | None = None

    @property
    def order(self) -> tuple[datetime, str, str]:
        return (self.at, self.source, self.id.rjust(20, "0"))


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]
    has_next_page: bool
    end_cursor: str | None


def cursor_of(entry: Entry) -> str:
    micros = round(entry.at.timestamp() * 1_000_000)
    return encode_cursor(_CURSOR, str(micros), entry.source, entry.id)


class CustomerHistory:
    def __init__(self, database: Database, audit: AuditLog) -> None:
        self.db = database
        self.audit = audit

    async def page(
        self,
        account_no: str,
        *,
        emails: Sequence[str],
        tax_id: str | None,
        first: int,
        after: str | None = None,
        sources: Collection[str] = SOURCES,
        since: datetime | None = None,
        until: datetime | None = None,
        keep: Callable[[Entry], bool] = lambda entry: True,
    ) -> Page:
        """Entries newest first, only those ``keep`` admits (the reader's view): a cursor and
        ``has_next_page`` never depend on an entry it left out. ``InvalidCursor`` for a foreign cursor."""
        bound: tuple[datetime, str, str] | None = None
        upto = until
        if after is not None:
            micros, source, entry_id = decode_cursor(_CURSOR, after, 3)
            if not micros.isdigit() or source not in SOURCES or not entry_id.isdigit():
                raise InvalidCursor("invalid cursor")
            at = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(micros))
            bound = (at, source, entry_id.rjust(20, "0"))
            upto = at + _TICK if upto is None else min(upto, at + _TICK)
        want = first + 1
        while True:
            found: list[Entry] = []
            more = False
            if "gateway" in sources or "access" in sources:
                part = await self._audit(account_no, want, since, upto, sources)
                more |= len(part) >= want
                found += part
            if {"sales", "support", "contracts"} & set(sources):
                part = await self._events(account_no, emails, tax_id, want, since, upto, sources)
                more |= len(part) >= want
                found += part
            if "pool" in sources:
                part = await self._pool(account_no, want, since, upto)
                more |= len(part) >= want
                found += part
            if bound is not None:
                found = [e for e in found if e.order < bound]
            found = [e for e in found if keep(e)]
            if len(found) > first or not more:
                break
            want *= 4  # entries the reader may not see were among them: read further back
        found.sort(key=lambda e: e.order, reverse=True)
        entries = found[:first]
        return Page(entries, len(found) > first, cursor_of(entries[-1]) if entries else None)

    async def _audit(
        self,
        account_no: str,
        want: int,
        since: datetime | None,
        until: datetime | None,
        sources: Collection[str],
    ) -> list[Entry]:
        entries: list[Entry] = []
        after: str | None = None
        # pool writes are skipped (the pool history has them): read on until enough are found
        while len(entries) < want:
            page = await self.audit.query(
                AuditFilter(customer_id=account_no, kinds=_AUDIT_KINDS, since=since, until=until),
                first=min(500, want * 2),
                after=after,
            )
            for record in page.records:
                detail = dict(record.detail or {})
                operation = str(detail.get("operation") or record.operation_name or record.kind)
                source = "gateway" if record.kind == "write" else "access"
                if source not in sources or (record.kind == "write" and operation in POOL_OPERATIONS):
                    continue
                entries.append(
                    Entry(
                        at=record.at,
                        source=source,
                        id=str(record.id),
                        kind=operation if record.kind == "write" else record.kind,
                        actor=record.user_sub,
                        before=record.before,
                        after=record.after,
                        detail={**detail, "fields": dict(record.fields)}
                        if record.kind != "write"
                        else detail,
                        grant_id=record.grant_id,
                    )
                )
            if not page.has_next_page:
                break
            after = page.end_cursor
        return entries

    async def _events(
        self,
        account_no: str,
        emails: Sequence[str],
        tax_id: str | None,
        want: int,
        since: datetime | None,
        until: datetime | None,
        sources: Collection[str],
    ) -> list[Entry]:
        e = event_inbox
        mine = []
        if "sales" in sources:
            mine.append(sa.and_(e.c.source == "sales", e.c.account_no == account_no))
        if "support" in sources and emails:
            # e-mails and tax ids are sealed: their blind indexes are compared
            mine.append(sa.and_(e.c.source == "support", e.c.email_idx.in_(list(emails))))
        if "contracts" in sources and tax_id:
            mine.append(sa.and_(e.c.source == "contracts", e.c.tax_id_idx == tax_id))
        if not mine:
            return []
        at = sa.type_coerce(sa.func.coalesce(e.c.occurred_at, e.c.received_at), UTCDateTime()).label("at")
        stmt = sa.select(e, at).where(sa.or_(*mine))
        if since is not None:
            stmt = stmt.where(at >= since)
        if until is not None:
            stmt = stmt.where(at < until)
        stmt = stmt.order_by(at.desc(), e.c.id.desc()).limit(want)
        rows = await self._read(stmt)
        return [
            Entry(
                at=row["at"],
                source=row["source"],
                id=str(row["id"]),
                kind=row["type"],
                detail={
                    **(row["detail"] or {}),
                    "eventId": row["event_id"],
                    **({"requesterEmail": row["email"]} if row["email"] else {}),
                },
            )
            for row in rows
        ]

    async def _pool(
        self, account_no: str, want: int, since: datetime | None, until: datetime | None
    ) -> list[Entry]:
        p = pool_history
        stmt = sa.select(p).where(p.c.account_no == account_no)
        if since is not None:
            stmt = stmt.where(p.c.at >= since)
        if until is not None:
            stmt = stmt.where(p.c.at < until)
        stmt = stmt.order_by(p.c.at.desc(), p.c.id.desc()).limit(want)
        rows = await self._read(stmt)
        return [
            Entry(
                at=row["at"],
                source="pool",
                id=str(row["id"]),
                kind=row["kind"],
                actor=row["actor"],
                detail={
                    key: row[key]
                    for key in ("owner_id", "reason", "note", "duplicate_of")
                    if row[key] is not None
                },
            )
            for row in rows
        ]

    async def _read(self, stmt: sa.Select[Any]) -> list[Mapping[str, Any]]:
        try:
            async with self.db.read() as conn:
                return list((await conn.execute(stmt)).mappings().all())
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the history is unavailable ({type(exc).__name__})") from None
