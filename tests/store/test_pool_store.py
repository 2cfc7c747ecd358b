"""The pool history and the sweep lock, on SQLite and PostgreSQL (features/pool/store.py, sweep.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from features.pool.rules import PoolEventKind, PoolRecord
from features.pool.store import PoolStore
from features.pool.sweep import SweepLock
from features.store import Database, InvalidCursor

from .conftest import Backend, scalar

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def rec(
    kind: PoolEventKind, account: str = "A1", owner: str = "u-1", at: datetime = T0, **kw: object
) -> PoolRecord:
    return PoolRecord(kind=kind, account_no=account, actor=owner, at=at, owner_id=owner, **kw)  # type: ignore[arg-type]


async def test_history_newest_first_with_cursors(database: Database) -> None:
    store = PoolStore(database)
    await store.add([rec(PoolEventKind.CLAIM, at=T0 + timedelta(days=i)) for i in range(5)])
    await store.add([rec(PoolEventKind.CLAIM, account="A2")])
    first = await store.history("A1", first=2)
    assert [r.at for r in first.records] == [T0 + timedelta(days=4), T0 + timedelta(days=3)]
    assert first.has_next_page and first.end_cursor
    rest = await store.history("A1", first=10, after=first.end_cursor)
    assert [r.at.day for r in rest.records] == [3, 2, 1] and not rest.has_next_page
    assert all(r.at.tzinfo is not None for r in rest.records)
    with pytest.raises(InvalidCursor):
        await store.history("A1", after="bogus")


async def test_warnings_are_stored_once(database: Database) -> None:
    store = PoolStore(database)
    warning = rec(PoolEventKind.WARNING, dedupe_key="warning:A1:u-1:2025-04-01T00:00:00", sales_stamp=T0)
    assert await store.add([warning]) == [True]
    assert await store.add([warning, rec(PoolEventKind.CLAIM)]) == [False, True]
    assert await scalar(database, "SELECT count(*) FROM pool_history WHERE kind = 'warning'") == 1


async def test_last_loss_and_pool_entries(database: Database) -> None:
    store = PoolStore(database)
    stamp = T0 + timedelta(days=3, seconds=1)
    await store.add(
        [
            rec(PoolEventKind.CLAIM, at=T0),
            rec(PoolEventKind.RELEASE, at=T0 + timedelta(days=3), reason="no_demand", sales_stamp=stamp),
            rec(PoolEventKind.RECYCLE, account="A2", owner="u-2", at=T0, reason="inactive", sales_stamp=T0),
        ]
    )
    assert await store.last_loss("u-1", "A1", T0) == T0 + timedelta(days=3)
    assert await store.last_loss("u-1", "A1", T0 + timedelta(days=4)) is None
    assert await store.last_loss("u-2", "A1", T0) is None
    entries = await store.entries({"A1": stamp, "A2": T0 + timedelta(days=9), "A3": None})
    assert set(entries) == {"A1"}  # A2 entered the pool again since (its stamp differs)
    assert entries["A1"].reason == "no_demand"


async def test_one_sweep_lock_holder_at_a_time(backend: Backend) -> None:
    databases = [backend.open() for _ in range(2)]
    try:
        await databases[0].migrate()
        locks = [SweepLock(db) for db in databases]
        now = lambda: datetime.now(UTC)  # noqa: E731
        async with locks[0].hold(now) as held:
            assert held is not None
            async with locks[1].hold(now) as other:
                assert other is None  # another instance is sweeping
            await held()  # renewing keeps it
        async with locks[1].hold(now) as held:
            assert held is not None  # released: the next one gets it
    finally:
        for db in databases:
            await db.aclose()


async def test_sqlite_lock_of_a_crashed_holder_lapses(tmp_path: object) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/gw.db")
    try:
        await db.migrate()
        crashed, other = SweepLock(db, ttl=timedelta(milliseconds=50)), SweepLock(db)
        now = lambda: datetime.now(UTC)  # noqa: E731
        assert await crashed._sqlite_take(now())  # taken, never released
        assert not await other._sqlite_take(now())
        await asyncio.sleep(0.1)
        assert await other._sqlite_take(now())
    finally:
        await db.aclose()
