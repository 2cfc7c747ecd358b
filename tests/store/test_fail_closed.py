"""Fail closed: when the store cannot take the records, record() raises AuditUnavailable and nothing of
the failed records is stored; when the store comes back, the chain goes on intact."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from features.store import AuditLog, AuditUnavailable, Database

from .conftest import Backend, entry, scalar
from .proxy import TcpProxy


async def test_sqlite_file_gone(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    db = Database(f"sqlite+aiosqlite:///{folder}/gateway.db")
    await db.migrate()
    log = AuditLog(db)
    await log.record([entry(1)])
    await db.aclose()  # close pooled connections: the next one opens the file again
    shutil.rmtree(folder)
    with pytest.raises(AuditUnavailable):
        await log.record([entry(2)])
    # concurrent callers of one failed group commit all fail
    results = await asyncio.gather(*(log.record([entry(i)]) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, AuditUnavailable) for r in results)
    assert not await db.ping()
    await db.aclose()


async def test_postgresql_unreachable() -> None:
    db = Database("postgresql+asyncpg://postgres@127.0.0.1:1/test", connect_timeout=2)
    log = AuditLog(db)
    with pytest.raises(AuditUnavailable) as caught:
        await log.record([entry(1)])
    assert "unavailable" in str(caught.value)
    assert caught.value.__cause__ is None  # no SQL or parameters ride along in tracebacks
    assert not await db.ping()
    await db.aclose()


async def test_failure_inside_the_transaction_leaves_nothing(database: Database) -> None:
    """The store fails after the records were inserted but before the head moved: all rolled back."""
    log = AuditLog(database)
    await log.record([entry(1), entry(2)])
    fail = {"on": False}

    def before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fail["on"] and statement.lstrip().upper().startswith("UPDATE AUDIT_CHAIN_HEAD"):
            raise OSError(5, "I/O error")

    # every engine: record() appends on the SQLite writer's engine, elsewhere on the async engine
    event.listen(Engine, "before_cursor_execute", before_execute)
    try:
        fail["on"] = True
        with pytest.raises(AuditUnavailable):
            await log.record([entry(3), entry(4), entry(5)])
        assert await scalar(database, "SELECT count(*) FROM audit_log") == 2
        assert await scalar(database, "SELECT count(*) FROM audit_customers") == 2
        assert await scalar(database, "SELECT last_id FROM audit_chain_head") == 2
        fail["on"] = False
        await log.record([entry(6)])
    finally:
        event.remove(Engine, "before_cursor_execute", before_execute)
    result = await log.verify()
    assert result.ok and result.records_checked == 3


@pytest.mark.services
async def test_postgresql_stops_and_comes_back(pg_backend: Backend) -> None:
    backend = pg_backend
    target = make_url(backend.url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    db = Database(backend.url_via("127.0.0.1", proxy.port), schema=backend.schema, connect_timeout=2)
    log = AuditLog(db, timeout=3)
    try:
        await log.record([entry(1)])
        await proxy.stop()  # the server goes away, pooled connections die
        with pytest.raises(AuditUnavailable):
            await log.record([entry(2), entry(3)])
        results = await asyncio.gather(*(log.record([entry(i)]) for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, AuditUnavailable) for r in results)
        await proxy.start()  # back on the same port
        await log.record([entry(4)])
    finally:
        await proxy.stop()
        await db.aclose()
    database = backend.open()
    try:
        result = await AuditLog(database).verify()
    finally:
        await database.aclose()
    assert result.ok and result.records_checked == 2


@pytest.mark.services
async def test_postgresql_hangs(pg_backend: Backend) -> None:
    """A store that accepts connections but never answers: record() gives up after its timeout."""
    backend = pg_backend
    target = make_url(backend.url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    proxy.hang = True
    await proxy.start()
    db = Database(backend.url_via("127.0.0.1", proxy.port), schema=backend.schema, connect_timeout=5)
    log = AuditLog(db, timeout=0.5)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(AuditUnavailable, match="timed out"):
            await log.record([entry(1)])
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        await proxy.stop()
        await db.aclose()


async def test_unmigrated_database_fails_closed(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    with pytest.raises(AuditUnavailable):
        await AuditLog(db).record([entry(1)])
    await db.aclose()
