"""Store tests run on SQLite and on PostgreSQL.

PostgreSQL: ``$CG_TEST_DATABASE_URL`` or ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``; a test
session migrates a schema of its own (dropped at the end; tests that need an empty database get their
own), so concurrent runs never see each other; each test starts from empty tables. When the server
cannot be reached the PostgreSQL cases are skipped — or fail, with ``CG_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from connectors.models import Account
from features.store import AuditEntry, Database
from features.store.models import metadata
from features.store.sealed import raw_table
from tests.factories import data_keyring, make_account

T = TypeVar("T")
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def pg_test_url() -> str:
    return os.environ.get("CG_TEST_DATABASE_URL", "").strip() or DEFAULT_PG_URL


def services_required() -> bool:
    return os.environ.get("CG_REQUIRE_SERVICES", "").strip() == "1"


def run_elsewhere(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on an event loop of its own (from sync fixtures)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _reachable(url: str) -> bool:
    async def check() -> bool:
        db = Database(url, connect_timeout=2.0)
        try:
            return await db.ping()
        finally:
            await db.aclose()

    return run_elsewhere(check())


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = pg_test_url()
    if not _reachable(url):
        where = make_url(url).render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {where} (set CG_TEST_DATABASE_URL)"
        if services_required():
            pytest.fail(message + " and CG_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(message)
    return url


@dataclass
class Backend:
    name: str  # sqlite | postgresql
    url: str
    schema: str | None

    def open(self, **options: object) -> Database:
        """A Database of this backend, with the tests' data keys unless ``keyring=`` says otherwise."""
        options.setdefault("keyring", data_keyring())
        return Database(self.url, schema=self.schema, **options)  # type: ignore[arg-type]

    def url_via(self, host: str, port: int) -> str:
        """The same database reached through another address (a proxy)."""
        return make_url(self.url).set(host=host, port=port).render_as_string(hide_password=False)


async def _drop_schema(url: str, schema: str) -> None:
    admin = Database(url)
    try:
        async with admin.engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await admin.aclose()


async def _migrate(url: str, schema: str | None = None) -> None:
    db = Database(url, schema=schema, keyring=data_keyring())
    try:
        await db.migrate()
    finally:
        await db.aclose()  # SQLite: the last connection checkpoints the WAL into the file


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating costs more than copying)."""
    path = tmp_path_factory.mktemp("template") / "gateway.db"
    run_elsewhere(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@dataclass
class PgSchema:
    name: str
    seeded: dict[str, list[dict[str, Any]]]  # what the migrations put in each table


async def _read_seeds(url: str, schema: str) -> dict[str, list[dict[str, Any]]]:
    db = Database(url, schema=schema)
    try:
        async with db.engine.connect() as conn:
            return {
                table.name: [
                    dict(row) for row in (await conn.execute(sa.select(raw_table(table)))).mappings()
                ]
                for table in metadata.sorted_tables
            }
    finally:
        await db.aclose()


@pytest.fixture(scope="session")
def pg_schema(pg_url: str) -> Iterator[PgSchema]:
    """A migrated schema for this test session; each test starts from the tables as migrated."""
    schema = f"cg_test_{uuid.uuid4().hex[:12]}"
    run_elsewhere(_migrate(pg_url, schema))
    yield PgSchema(schema, run_elsewhere(_read_seeds(pg_url, schema)))
    run_elsewhere(_drop_schema(pg_url, schema))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A migrated database with empty tables, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        (tmp_path / "db").mkdir()
        shutil.copyfile(template, tmp_path / "db" / "gateway.db")
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/db/gateway.db", None)
        return
    url: str = request.getfixturevalue("pg_url")
    shared: PgSchema = request.getfixturevalue("pg_schema")
    db = Database(url, schema=shared.name)
    try:  # every table of the store back to what the migrations left in it
        async with db.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
            for table in metadata.sorted_tables:
                if shared.seeded.get(table.name):
                    await conn.execute(raw_table(table).insert(), shared.seeded[table.name])
    finally:
        await db.aclose()
    yield Backend("postgresql", url, shared.name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def empty_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A database with nothing in it yet (no tables), on SQLite and on PostgreSQL (its own schema)."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/db/gateway.db", None)
        return
    url: str = request.getfixturevalue("pg_url")
    schema = f"cg_test_{uuid.uuid4().hex[:12]}"
    try:
        yield Backend("postgresql", url, schema)
    finally:
        await _drop_schema(url, schema)


@pytest.fixture
async def pg_backend(pg_url: str) -> AsyncIterator[Backend]:
    """PostgreSQL only, migrated, a schema of its own."""
    schema = f"cg_test_{uuid.uuid4().hex[:12]}"
    await _migrate(pg_url, schema)
    try:
        yield Backend("postgresql", pg_url, schema)
    finally:
        await _drop_schema(pg_url, schema)


@pytest.fixture
async def database(backend: Backend) -> AsyncIterator[Database]:
    db = backend.open()
    try:
        yield db
    finally:
        await db.aclose()


def entry(n: int = 0, **overrides: object) -> AuditEntry:
    values: dict[str, object] = {
        "kind": "read",
        "request_id": f"req-{n}",
        "user_sub": "u-1021",
        "roles": ("sales_rep",),
        "operation_name": "CustomerPage",
        "operation_type": "query",
        "fields": {f"A-{n}": {"email": "mask", "payments": "deny"}},
    }
    values.update(overrides)
    return AuditEntry(**values)  # type: ignore[arg-type]


def account(account_no: str = "A-1", owner: str | None = "u-1021", region: str = "east") -> Account:
    return make_account(account_no, owner, region)


async def raw(db: Database, sql: str, **params: object) -> None:
    """Run SQL behind the store's back (tampering)."""
    async with db.engine.begin() as conn:
        await conn.execute(sa.text(sql), params)


async def scalar(db: Database, sql: str, **params: object) -> object:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


EntryFactory = Callable[..., AuditEntry]
