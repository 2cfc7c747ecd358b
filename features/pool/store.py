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
from features.store.models import pool_history, pool_reviews

from .rules import HistoryPage, PoolEventKind, PoolRecord, PoolRules, Review, ReviewState

log = logging.getLogger(__name__)

MAX_PAGE = 100
_CURSOR_KIND = "pool"
_ENTERING = (PoolEventKind.RELEASE.value, PoolEventKind.RECYCLE.value)
# losing a customer starts the cooldown: released, recycled, or reassigned by a manager
_LOSSES = (*_ENTERING, PoolEventKind.REASSIGN.value)


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
        "assigned_to": record.assigned_to,
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
        assigned_to=row["assigned_to"],
    )


def history_cursor(record: PoolRecord) -> str:
    return encode_cursor(_CURSOR_KIND, str(record.id))


class PoolStore:
    def __init__(self, database: Database, rules: PoolRules | None = None) -> None:
        self.db = database
        self.rules = rules or PoolRules()

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

    async def open_review(
        self,
        *,
        account_no: str,
        region: str,
        cause: str,
        note: str | None,
        previous_owner: str | None,
        actor: str,
        at: datetime,
    ) -> int | None:
        """Before a customer is sent to the pool: its review, pending (None when ``cause`` skips review).
        Written first, so that no customer reaches the pool unreviewed whatever fails after; a send that
        did not happen cancels it (``cancel_review``)."""
        if not self.rules.reviews(cause):
            return None
        try:
            async with self.db.write_transaction() as conn:
                result = await conn.execute(
                    pool_reviews.insert()
                    .values(
                        account_no=account_no,
                        region=region,
                        state=ReviewState.PENDING.value,
                        cause=cause,
                        note=note,
                        previous_owner=previous_owner,
                        entered_at=at,
                        entered_by=actor,
                    )
                    .returning(pool_reviews.c.id)
                )
                return int(result.scalar_one())
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the pool reviews are unavailable ({type(exc).__name__})") from None

    async def cancel_review(self, review_id: int | None) -> None:
        """The owner change did not happen: its pending review goes (best effort; a stale one for an
        owned customer blocks nothing and leaves the queue)."""
        if review_id is None:
            return
        try:
            async with self.db.write_transaction() as conn:
                await conn.execute(
                    pool_reviews.delete().where(
                        pool_reviews.c.id == review_id, pool_reviews.c.state == ReviewState.PENDING.value
                    )
                )
        except STORE_ERRORS as exc:
            log.warning("a pending pool review was not cancelled (%s)", type(exc).__name__)

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
            pool_history.c.kind.in_(_LOSSES),
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


def _review(row: Mapping[Any, Any]) -> Review:
    return Review(
        id=int(row["id"]),
        account_no=row["account_no"],
        region=row["region"],
        state=ReviewState(row["state"]),
        cause=row["cause"],
        note=row["note"],
        previous_owner=row["previous_owner"],
        entered_at=row["entered_at"],
        entered_by=row["entered_by"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        decision_note=row["decision_note"],
    )


class ReviewStore:
    """The pool reviews: the newest row of an account is its state."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def latest(self, account_nos: Sequence[str]) -> dict[str, Review]:
        if not account_nos:
            return {}
        r = pool_reviews
        newest = (
            sa.select(r.c.account_no, sa.func.max(r.c.id).label("id"))
            .where(r.c.account_no.in_(sorted(set(account_nos))))
            .group_by(r.c.account_no)
            .subquery()
        )
        stmt = sa.select(r).join(newest, r.c.id == newest.c.id)
        try:
            async with self.db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the pool reviews are unavailable ({type(exc).__name__})") from None
        return {row["account_no"]: _review(row) for row in rows}

    async def queue(
        self, *, region: str | None, first: int, after: str | None
    ) -> tuple[list[Review], str | None, bool]:
        """Pending reviews (the newest row of their account), oldest first: the reviewers' queue."""
        r = pool_reviews
        later = sa.alias(pool_reviews)
        stmt = (
            sa.select(r)
            .where(r.c.state == ReviewState.PENDING.value)
            .where(~sa.exists().where(later.c.account_no == r.c.account_no, later.c.id > r.c.id))
        )
        if region is not None:
            stmt = stmt.where(r.c.region == region)
        if after is not None:
            (last,) = decode_cursor("reviews", after, 1)
            if not last.isdigit():
                raise InvalidCursor("invalid cursor")
            stmt = stmt.where(r.c.id > int(last))
        stmt = stmt.order_by(r.c.id).limit(first + 1)
        try:
            async with self.db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the pool reviews are unavailable ({type(exc).__name__})") from None
        found = [_review(row) for row in rows[:first]]
        end = encode_cursor("reviews", str(found[-1].id)) if found else None
        return found, end, len(rows) > first

    async def decide(
        self, review: Review, state: ReviewState, *, actor: str, note: str | None, at: datetime,
        conn: AsyncConnection,
    ) -> bool:  # fmt: skip
        """Decide a pending review (in the caller's transaction); False when it is no longer pending."""
        r = pool_reviews
        result = await conn.execute(
            r.update()
            .where(r.c.id == review.id, r.c.state == ReviewState.PENDING.value)
            .values(state=state.value, decided_by=actor, decided_at=at, decision_note=note)
        )
        return result.rowcount == 1
