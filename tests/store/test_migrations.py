"""Migrations: an empty database gets every table; running again is harmless; the models match."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from features.store import Database, DatabaseConfigError
from features.store.db import DEFAULT_SQLITE_PATH, normalise_url
from features.store.migrations import downgrade, head_revision
from features.store.models import GENESIS_HASH, metadata

from .conftest import Backend, scalar

# this package's tables (later revisions may add others)
TABLES = {"alembic_version", "audit_log", "audit_customers", "audit_chain_head", "access_requests"}


async def tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_migrate_empty_database(empty_backend: Backend) -> None:
    db = empty_backend.open()
    try:
        assert await db.current_revision() is None
        await db.migrate()
        assert await tables(db) >= TABLES
        assert await db.current_revision() == head_revision()
        assert await scalar(db, "SELECT last_hash FROM audit_chain_head WHERE id = 1") == GENESIS_HASH
        await db.migrate()  # again: nothing to do
        assert await scalar(db, "SELECT count(*) FROM audit_chain_head") == 1
        assert await db.ping()
        if db.is_sqlite:  # WAL, set once for the file: readers never block the appending writer
            assert await scalar(db, "PRAGMA journal_mode") == "wal"
    finally:
        await db.aclose()


async def test_models_match_migrations(database: Database) -> None:
    def diff(conn: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with database.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_downgrade_and_upgrade_again(empty_backend: Backend) -> None:
    database = empty_backend.open()
    try:
        await database.migrate()
        async with database.engine.begin() as conn:
            await conn.run_sync(downgrade, "base")
        assert await tables(database) == {"alembic_version"}
        await database.migrate()
        assert await tables(database) >= TABLES
    finally:
        await database.aclose()


async def test_gateways_starting_together(empty_backend: Backend) -> None:
    databases = [empty_backend.open() for _ in range(3)]
    try:
        await asyncio.gather(*(db.migrate() for db in databases))
        assert await databases[0].current_revision() == head_revision()
        assert await scalar(databases[0], "SELECT count(*) FROM audit_chain_head") == 1
    finally:
        for db in databases:
            await db.aclose()


async def test_default_is_sqlite_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    db = Database(None)
    try:
        assert db.is_sqlite and db.url.database == str(DEFAULT_SQLITE_PATH)
        assert (tmp_path / "var").is_dir()
        await db.migrate()
        assert (tmp_path / "var" / "gateway.db").is_file()
    finally:
        await db.aclose()
    assert Database.from_env({}).url.database == str(DEFAULT_SQLITE_PATH)


def test_urls() -> None:
    assert normalise_url("postgresql://u:secret@db/x").drivername == "postgresql+asyncpg"
    assert normalise_url("postgres://u@db/x").drivername == "postgresql+asyncpg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    for bad in ("mysql://u@db/x", "postgresql+psycopg2cffi://u@db/x", "::"):
        with pytest.raises(DatabaseConfigError):
            normalise_url(bad)
    db = Database("postgresql://u:secret@db/x?schema=gw")
    assert db.schema == "gw" and "secret" not in db.safe_url and "schema" not in str(db.url)
    with pytest.raises(DatabaseConfigError):
        Database("postgresql://u@db/x", schema="bad; drop")
    with pytest.raises(DatabaseConfigError):
        Database("sqlite:///x.db", schema="gw")
