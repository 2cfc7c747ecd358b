"""The live-updates inbox on SQLite and PostgreSQL: insert-or-ignore, order, claims, restarts, pruning."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from features.store import Database
from features.store.models import event_inbox
from gateway.events.inbox import Inbox
from gateway.events.model import InboxEvent

from .conftest import Backend

T0 = datetime(2025, 3, 2, 8, 15, tzinfo=UTC)


async def _empty(db: Database) -> Database:
    """The PostgreSQL backend is one schema per session: start every test from an empty inbox."""
    async with db.engine.begin() as conn:
        await conn.execute(sa.delete(event_inbox))
    return db


@pytest.fixture
async def db(database: Database) -> Database:
    return await _empty(database)


def sales_event(n: int, account_no: str = "A100001") -> InboxEvent:
    return InboxEvent(
        source="sales",
        event_id=f"ev_{n:06d}",
        type="account.updated",
        account_no=account_no,
        occurred_at=T0 + timedelta(seconds=n),
    )


async def test_accept_once_per_source_and_id(db: Database) -> None:
    inbox = Inbox(db)
    assert await inbox.accept(sales_event(1)) is True
    assert await inbox.accept(sales_event(1)) is False  # a redelivery
    # the same id from another system is another event
    other = InboxEvent(source="support", event_id="ev_000001", type="ticket.created", email="a@b.cn")
    assert await inbox.accept(other) is True
    assert await inbox.count() == 2
    stored = await inbox.get("sales", "ev_000001")
    assert stored is not None and stored.published_at is None
    assert stored.event.account_no == "A100001" and stored.event.occurred_at == T0 + timedelta(seconds=1)


async def test_concurrent_redeliveries_store_one_row(db: Database) -> None:
    inbox = Inbox(db)
    results = await asyncio.gather(*(inbox.accept(sales_event(7)) for _ in range(8)))
    assert results.count(True) == 1
    assert await inbox.count("sales") == 1


async def test_pending_in_order_and_claimed_once(db: Database) -> None:
    inbox = Inbox(db)
    for n in (3, 1, 2):
        await inbox.accept(sales_event(n))
    pending = await inbox.pending()
    assert [row.event.event_id for row in pending] == ["ev_000003", "ev_000001", "ev_000002"]
    async with inbox.claim([row.id for row in pending]) as claim:
        assert claim.ids == {row.id for row in pending}
        claim.done(pending[0].id)
        claim.done(pending[1].id)
    assert [row.event.event_id for row in await inbox.pending()] == ["ev_000002"]
    async with inbox.claim([row.id for row in pending]) as claim:
        assert claim.ids == {pending[2].id}  # what is published is not claimed again


async def test_a_failed_publish_keeps_what_was_done(db: Database) -> None:
    inbox = Inbox(db)
    for n in (1, 2):
        await inbox.accept(sales_event(n))
    first, second = await inbox.pending()
    with pytest.raises(RuntimeError):
        async with inbox.claim([first.id, second.id]) as claim:
            claim.done(first.id)
            raise RuntimeError("Redis went away")
    assert [row.id for row in await inbox.pending()] == [second.id]


async def test_a_cancelled_publish_keeps_nothing(db: Database) -> None:
    inbox = Inbox(db)
    await inbox.accept(sales_event(1))
    (row,) = await inbox.pending()

    async def publish() -> None:
        async with inbox.claim([row.id]) as claim:
            claim.done(row.id)
            await asyncio.sleep(10)

    task = asyncio.create_task(publish())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.id for r in await inbox.pending()] == [row.id]


async def test_accepted_survives_a_restart(backend: Backend) -> None:
    first = backend.open()
    try:
        await Inbox(await _empty(first)).accept(sales_event(1))
    finally:
        await first.aclose()
    second = backend.open()
    try:
        pending = await Inbox(second).pending()
        assert [row.event.event_id for row in pending] == ["ev_000001"]
    finally:
        await second.aclose()


async def test_prune_forgets_only_old_published(db: Database) -> None:
    inbox = Inbox(db)
    await inbox.accept(sales_event(1), now=T0)
    await inbox.accept(sales_event(2), now=T0)
    await inbox.accept(sales_event(3), now=T0 + timedelta(days=10))
    rows = await inbox.pending()
    async with inbox.claim([rows[0].id, rows[2].id]) as claim:
        claim.done(rows[0].id)
        claim.done(rows[2].id)
    assert await inbox.prune(T0 + timedelta(days=7)) == 1  # old and published
    assert await inbox.count() == 2  # the old unpublished one is kept, and the recent one
    assert await inbox.accept(sales_event(1)) is True  # outside the window, an id is new again


@pytest.mark.services
async def test_two_gateways_claim_disjoint_rows(pg_backend: Backend) -> None:
    one, two = pg_backend.open(), pg_backend.open()
    try:
        await one.migrate()
        inbox_one, inbox_two = Inbox(one), Inbox(two)
        for n in range(4):
            await inbox_one.accept(sales_event(n))
        ids = [row.id for row in await inbox_one.pending()]
        async with inbox_one.claim(ids) as held:
            async with inbox_two.claim(ids) as other:
                assert held.ids == set(ids)
                assert other.ids == set()  # skipped, not waited for
            for row_id in held.ids:
                held.done(row_id)
        assert await inbox_two.pending() == []
    finally:
        await one.aclose()
        await two.aclose()
