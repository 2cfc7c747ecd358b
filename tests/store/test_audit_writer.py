"""Appending through the database's writer (a thread of its own on a SQLite file, the async engine
elsewhere): one chain whichever path appends, fail closed, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from features.store import AuditFilter, AuditLog, AuditUnavailable, Database

from .conftest import Backend, entry, raw, scalar


def sqlite_path(backend: Backend) -> Path:
    return Path(backend.url.split("///", 1)[1])


@pytest.fixture
def sqlite_backend(sqlite_template: Path, tmp_path: Path) -> Backend:
    """A migrated SQLite file (the writer thread is for SQLite files)."""
    (tmp_path / "db").mkdir()
    shutil.copyfile(sqlite_template, tmp_path / "db" / "gateway.db")
    return Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/db/gateway.db", None)


async def test_many_concurrent_records_keep_one_chain_on_the_writer(sqlite_backend: Backend) -> None:
    db = sqlite_backend.open()
    path = str(sqlite_path(sqlite_backend))
    threads: set[str] = set()

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if conn.engine.url.database == path and statement.startswith("INSERT INTO audit_log"):
            threads.add(threading.current_thread().name)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        log = AuditLog(db)
        await asyncio.gather(*(log.record([entry(i)]) for i in range(300)))
        await asyncio.gather(*(log.record([entry(i), entry(i, kind="denial")]) for i in range(300, 400)))
        result = await log.verify()
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
        await db.aclose()
    assert result.ok and result.records_checked == 500
    assert log.commits < 40  # group commit: many requests per transaction
    assert {name.split("_")[0] for name in threads} == {"audit-writer"}, threads


async def test_records_and_transactions_at_once_keep_one_chain(database: Database) -> None:
    """record() (the writer thread on SQLite) and transaction() (the async engine) append to one chain."""
    log = AuditLog(database)

    async def in_transaction(n: int) -> None:
        async with log.transaction() as tx:
            tx.add(entry(n, kind="access_request", operation_type="mutation"))

    await asyncio.gather(
        *(log.record([entry(i)]) for i in range(60)),
        *(in_transaction(100 + i) for i in range(20)),
    )
    result = await log.verify()
    assert result.ok and result.records_checked == 80
    kinds = [r.kind for r in (await log.query(AuditFilter(), first=100)).records]
    assert kinds.count("access_request") == 20


async def test_missing_chain_head_fails_closed(database: Database) -> None:
    log = AuditLog(database)
    await log.record([entry(1)])
    await raw(database, "DELETE FROM audit_chain_head")
    with pytest.raises(AuditUnavailable, match="head is missing"):
        await log.record([entry(2)])
    results = await asyncio.gather(*(log.record([entry(i)]) for i in range(3, 8)), return_exceptions=True)
    assert all(isinstance(r, AuditUnavailable) for r in results)
    with pytest.raises(AuditUnavailable):
        async with log.transaction() as tx:
            tx.add(entry(9))
    assert await scalar(database, "SELECT count(*) FROM audit_log") == 1


async def test_unreadable_database_file_fails_closed(sqlite_backend: Backend) -> None:
    path = sqlite_path(sqlite_backend)
    db = sqlite_backend.open()
    log = AuditLog(db)
    try:
        await log.record([entry(1)])
        await db.aclose()  # the next append opens the file again
        path.write_bytes(b"this is not a database" * 512)
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            extra.unlink(missing_ok=True)
        with pytest.raises(AuditUnavailable, match="unavailable"):
            await log.record([entry(2)])
    finally:
        await db.aclose()


async def test_database_locked_by_another_process_fails_closed(sqlite_backend: Backend) -> None:
    """Another process holds the write lock longer than the busy timeout: nothing is stored, and
    appending goes on once it lets go."""
    db = sqlite_backend.open(connect_timeout=0.2)
    log = AuditLog(db)
    other = sqlite3.connect(sqlite_path(sqlite_backend), isolation_level=None)
    try:
        await log.record([entry(1)])
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(AuditUnavailable, match="locked"):
            await log.record([entry(2)])
        other.execute("ROLLBACK")
        await log.record([entry(3)])
        result = await log.verify()
    finally:
        other.close()
        await db.aclose()
    assert result.ok and result.records_checked == 2


async def test_timeout_while_the_writer_waits(sqlite_backend: Backend) -> None:
    """record() gives up after its timeout although the writer thread still waits for the lock: the
    caller is told the records were not taken (the transaction then running may still commit them);
    a transaction that had not started yet never runs; the chain stays intact."""
    db = sqlite_backend.open(connect_timeout=10)
    log = AuditLog(db)
    other = sqlite3.connect(sqlite_path(sqlite_backend), isolation_level=None)
    try:
        await log.record([entry(1)])
        other.execute("BEGIN IMMEDIATE")
        log.timeout = 0.5
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(AuditUnavailable, match="timed out"):
            await log.record([entry(2)])  # the writer thread is now waiting on the lock with it
        assert loop.time() - started < 5  # not the 10 s the writer may wait
        with pytest.raises(AuditUnavailable, match="timed out"):
            await log.record([entry(3)])  # queued behind it, cancelled before it started
        other.execute("ROLLBACK")
        log.timeout = 5
        await log.record([entry(4)])
        result = await log.verify()
        request_ids = [r.request_id for r in (await log.query(AuditFilter(), first=10)).records]
    finally:
        other.close()
        await db.aclose()
    assert result.ok
    # req-2 was on the writer when its caller gave up: committed once the lock was free
    assert request_ids in (["req-4", "req-2", "req-1"], ["req-4", "req-1"])


async def test_closing_waits_for_a_running_append(sqlite_backend: Backend) -> None:
    db = sqlite_backend.open(connect_timeout=10)
    log = AuditLog(db, timeout=10)
    other = sqlite3.connect(sqlite_path(sqlite_backend), isolation_level=None)
    try:
        await log.record([entry(1)])
        other.execute("BEGIN IMMEDIATE")
        recording = asyncio.create_task(log.record([entry(2)]))
        await asyncio.sleep(0.2)  # the writer thread waits for the lock with entry 2
        closing = asyncio.create_task(db.aclose())
        await asyncio.sleep(0.2)
        assert not closing.done() and not recording.done()
        other.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.gather(recording, closing), 10)
    finally:
        other.close()
        await db.aclose()
    reopened = sqlite_backend.open()
    try:
        result = await AuditLog(reopened).verify()
    finally:
        await reopened.aclose()
    assert result.ok and result.records_checked == 2
