"""The pool history in the gateway's database (table ``pool_history``, migration ``0002_pool``).

Claims, releases, recycles and warnings: who, when, why. The cooldown rule reads it (when did this rep
last release or lose this customer?), ``publicPool`` reads why a customer entered the pool, and
``poolHistory`` pages through it. Warnings carry a ``dedupe_key`` (unique), so announcing the same
recycle twice stores — and publishes — nothing the second time.

Every method may be given the caller's connection (inside its transaction: a recycle's history row and
its audit record commit together); without one it uses its own. Store failures raise
``StoreUnavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from features.cursors import InvalidCursor, decode_cursor, encode_cursor
from features.store.db import (
    STORE_ERRORS,
    Database,
    StoreUnavailable,
)
from features.store.models import pool_history

from .rules import HistoryPage, PoolEventKind, PoolRecord

log = logging.getLogger(__name__)

MAX_PAGE = 100
_CURSOR_KIND = "pool"
_ENTERING = (PoolEventKind.RELEASE.value, PoolEventKind.RECYCLE.value)


def _values(record: PoolRecord) -> dict[str, Any]:
    return {
        "at": record.at,
        "account_no": record.account_no,
        "kind": record.kind.value,
        "owner_id": record.owner_id,
        "actor": record.actor,
        "reason": record.reason,
        "note": record.note,
        "sales_stamp": record.sales_stamp,
        "request_id": record.request_id,
        "dedupe_key": record.dedupe_key,
        "duplicate_of": record.duplicate_of,
    }


def _record(row: Mapping[Any, Any]) -> PoolRecord:
    return PoolRecord(
        id=int(row["id"]),
        kind=PoolEventKind(row["kind"]),
        account_no=row["account_no"],
        actor=row["actor"],
        at=row["at"],
        owner_id=row["owner_id"],
        reason=row["reason"],
        note=row["note"],
        sales_stamp=row["sales_stamp"],
        request_id=row["request_id"],
        dedupe_key=row["dedupe_key"],
        duplicate_of=row["duplicate_of"],
    )


def history_cursor(record: PoolRecord) -> str:
    return encode_cursor(_CURSOR_KIND, str(record.id))


class PoolStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def add(self, records: Sequence[PoolRecord], conn: AsyncConnection | None = None) -> list[bool]:
        """Store the records; per record whether it was new (a warning already announced is not)."""
        if not records:
            return []
        try:
            if conn is not None:
                return await self._add(conn, records)
            async with self.db.write_transaction() as own:
                return await self._add(own, records)
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the pool history is unavailable ({type(exc).__name__})") from None

    async def _add(self, conn: AsyncConnection, records: Sequence[PoolRecord]) -> list[bool]:
        plain = [r for r in records if r.dedupe_key is None]
        if plain:
            await conn.execute(pool_history.insert(), [_values(r) for r in plain])
        inserted: list[bool] = []
        for record in records:
            if record.dedupe_key is None:
                inserted.append(True)
                continue
            dialect = postgresql if self.db.is_postgresql else sqlite
            stmt = (
                dialect.insert(pool_history)
                .values(_values(record))
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
            )
            result = await conn.execute(stmt)
            inserted.append(result.rowcount == 1)
        return inserted

    async def last_loss(self, owner_id: str, account_no: str, since: datetime) -> datetime | None:
        """When ``owner_id`` last released or lost ``account_no``, if at or after ``since``."""
        stmt = sa.select(sa.func.max(pool_history.c.at)).where(
            pool_history.c.owner_id == owner_id,
            pool_history.c.account_no == account_no,
            pool_history.c.kind.in_(_ENTERING),
            pool_history.c.at >= since,
        )
        try:
            async with self.db.read() as conn:
                value = (await conn.execute(stmt)).scalar()
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the pool history is unavailable ({type(exc).__name__})") from None
        return value if isinstance(value, datetime) else None

    async def entries(self, pool_since: Mapping[str, datetime | None]) -> dict[str, PoolRecord]:
        """For pool customers (account number → the sales system's pool_since): the release or recycle
        that put each there, matched by the stamp the sales system gave it. Absent: it entered otherwise
        (a manager's assignOwner, the sales system itself, or before the gateway kept history)."""
        wanted = {no: since for no, since in pool_since.items() if since is not None}
        if not wanted:
            return {}
        stmt = (
            sa.select(pool_history)
            .where(pool_history.c.account_no.in_(sorted(wanted)), pool_history.c.kind.in_(_ENTERING))
            .order_by(pool_history.c.id)
        )
        try:
            async with self.db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the pool history is unavailable ({type(exc).__name__})") from None
        found: dict[str, PoolRecord] = {}
        for row in rows:
            record = _record(row)
            if record.sales_stamp is not None and record.sales_stamp == wanted[record.account_no]:
                found[record.account_no] = record  # the newest match wins
        return found

    async def history(self, account_no: str, first: int = 20, after: str | None = None) -> HistoryPage:
        """The customer's pool history, newest first. ``InvalidCursor`` for a cursor it did not make."""
        if not 0 <= first <= MAX_PAGE:
            raise ValueError(f"first must be between 0 and {MAX_PAGE}")
        stmt = sa.select(pool_history).where(pool_history.c.account_no == account_no)
        if after is not None:
            (after_id,) = decode_cursor(_CURSOR_KIND, after, 1)
            if not after_id.isdigit():
                raise InvalidCursor("invalid cursor")
            stmt = stmt.where(pool_history.c.id < int(after_id))
        stmt = stmt.order_by(pool_history.c.id.desc()).limit(first + 1)
        try:
            async with self.db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the pool history is unavailable ({type(exc).__name__})") from None
        records = [_record(row) for row in rows[:first]]
        return HistoryPage(
            records=records,
            has_next_page=len(rows) > first,
            end_cursor=history_cursor(records[-1]) if records else None,
        )
