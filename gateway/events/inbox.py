"""The inbox: every accepted change event, stored before it is acknowledged, published from here.

``accept()`` inserts or ignores (``(source, event_id)`` is unique), and returns only once the row is
committed, so an acknowledged event survives any crash. ``pending()`` lists what is not yet published,
in order of acceptance; ``claim()`` is the transaction in which the publisher publishes a batch and
marks it: on PostgreSQL the rows are locked (``FOR UPDATE SKIP LOCKED``), so of several gateways on one
database exactly one publishes each event; on SQLite the write lock does the same. A crash before the
commit leaves the rows unpublished, to be published again: at least once, never lost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from features.store.db import STORE_ERRORS, Database, StoreUnavailable
from features.store.models import event_inbox

from .model import InboxEvent, StoredEvent

log = logging.getLogger("customer_graph.events")

__all__ = ["Claim", "Inbox"]


@dataclass(slots=True)
class Claim:
    """The rows of a batch this publisher holds (``ids``); ``done(id)`` marks one as published."""

    ids: frozenset[int]
    published: list[int] = field(default_factory=list)

    def done(self, row_id: int) -> None:
        self.published.append(row_id)


class Inbox:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _insert(self) -> Any:
        dialect = postgresql if self.database.is_postgresql else sqlite
        return dialect.insert(event_inbox)

    @staticmethod
    def _row(event: InboxEvent, now: datetime, published: bool) -> dict[str, Any]:
        return {
            "source": event.source,
            "event_id": event.event_id,
            "type": event.type,
            "account_no": event.account_no,
            "email": event.email,
            "tax_id": event.tax_id,
            "occurred_at": event.occurred_at,
            "detail": dict(event.detail) or None,
            "received_at": now,
            "published_at": now if published else None,
        }

    async def accept(self, event: InboxEvent, *, now: datetime | None = None) -> bool:
        """Store the event; True when it is new, False for a duplicate. Raises ``StoreUnavailable``."""
        return await self.accept_many([event], now=now) == 1

    async def accept_many(
        self, events: Sequence[InboxEvent], *, now: datetime | None = None, published: bool = False
    ) -> int:
        """Store the new ones of ``events`` (in this order) in one transaction; how many were new.
        ``published``: store them as already published (the poller's first baseline)."""
        if not events:
            return 0
        moment = now or datetime.now(UTC)
        statement = self._insert().on_conflict_do_nothing(index_elements=["source", "event_id"])
        inserted = 0
        try:
            async with self.database.write_transaction() as conn:
                for event in events:
                    result = await conn.execute(statement, self._row(event, moment, published))
                    inserted += max(result.rowcount, 0)
        except STORE_ERRORS as exc:
            raise StoreUnavailable("the event inbox cannot be written") from exc
        return inserted

    async def pending(self, limit: int = 100) -> list[StoredEvent]:
        """Unpublished events, oldest first."""
        query = (
            sa.select(event_inbox)
            .where(event_inbox.c.published_at.is_(None))
            .order_by(event_inbox.c.id)
            .limit(limit)
        )
        try:
            async with self.database.read() as conn:
                rows = (await conn.execute(query)).mappings().all()
        except STORE_ERRORS as exc:
            raise StoreUnavailable("the event inbox cannot be read") from exc
        return [_stored(row) for row in rows]

    @asynccontextmanager
    async def claim(self, ids: Iterable[int], *, now: datetime | None = None) -> AsyncIterator[Claim]:
        """Hold the still unpublished rows among ``ids`` for the block; the rows it marks ``done`` are
        published when it ends (also when it raises: what was done stays done)."""
        wanted = sorted(set(ids))
        query = sa.select(event_inbox.c.id).where(
            event_inbox.c.id.in_(wanted), event_inbox.c.published_at.is_(None)
        )
        if self.database.is_postgresql:
            query = query.with_for_update(skip_locked=True)
        failure: Exception | None = None
        try:
            async with self.database.write_transaction() as conn:
                claim = Claim(frozenset((await conn.execute(query)).scalars().all()))
                try:
                    yield claim
                except Exception as exc:  # keep what was published; cancellation rolls back instead
                    failure = exc
                if claim.published:
                    await conn.execute(
                        sa.update(event_inbox)
                        .where(event_inbox.c.id.in_(claim.published))
                        .values(published_at=now or datetime.now(UTC))
                    )
        except STORE_ERRORS as exc:
            raise StoreUnavailable("the event inbox cannot be written") from exc
        if failure is not None:
            raise failure

    async def get(self, source: str, event_id: str) -> StoredEvent | None:
        query = sa.select(event_inbox).where(
            event_inbox.c.source == source, event_inbox.c.event_id == event_id
        )
        async with self.database.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _stored(row)

    async def count(self, source: str | None = None, *, published: bool | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(event_inbox)
        if source is not None:
            query = query.where(event_inbox.c.source == source)
        if published is not None:
            column = event_inbox.c.published_at
            query = query.where(column.is_not(None) if published else column.is_(None))
        async with self.database.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def prune(self, before: datetime) -> int:
        """Forget published events received before ``before`` (the window in which repeats are
        recognised is the retention)."""
        statement = sa.delete(event_inbox).where(
            event_inbox.c.published_at.is_not(None), event_inbox.c.received_at < before
        )
        try:
            async with self.database.write_transaction() as conn:
                result = await conn.execute(statement)
        except STORE_ERRORS as exc:
            raise StoreUnavailable("the event inbox cannot be written") from exc
        return max(result.rowcount, 0)


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        id=int(row["id"]),
        event=InboxEvent(
            source=row["source"],
            event_id=row["event_id"],
            type=row["type"],
            account_no=row["account_no"],
            email=row["email"],
            tax_id=row["tax_id"],
            occurred_at=row["occurred_at"],
            detail=dict(row["detail"] or {}),
        ),
        received_at=row["received_at"],
        published_at=row["published_at"],
    )
