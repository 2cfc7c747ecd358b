"""The gateway's own database: one async SQLAlchemy engine, SQLite by default, PostgreSQL when configured.

``Database(None)`` (``CG_DATABASE_URL`` unset) is the SQLite file ``var/gateway.db`` under the working
directory; ``Database("postgresql+asyncpg://user@host/db")`` is PostgreSQL (``postgresql://`` and
``postgres://`` are taken to mean asyncpg, ``sqlite:///`` aiosqlite). ``migrate()`` brings the tables to
the newest Alembic revision; the gateway calls it at start.

SQLite runs in WAL mode (set by ``migrate()``) with ``synchronous=FULL`` (a committed audit record
survives a power cut) and a 5 s busy timeout, foreign keys on. Write transactions that must be
serialised (the audit chain) use ``write_transaction()``: ``BEGIN IMMEDIATE`` on SQLite, READ COMMITTED
on PostgreSQL. ``run_write(fn)`` runs a synchronous ``fn(connection)`` in such a transaction; on a SQLite
file it does so on a writer thread of its own (one synchronous pysqlite connection, same pragmas), one
thread hop per transaction instead of one per statement.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from .sealed import INDEX_KEY_NAME, Keyring, Sealer, attach, decode_index_key, new_index_key

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DATABASE_URL_ENV = "CG_DATABASE_URL"
DEFAULT_SQLITE_PATH = Path("var") / "gateway.db"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# pg_advisory_xact_lock keys (any two bigints unique to this application)
MIGRATION_LOCK_KEY = 0x43472D4D4947  # "CG-MIG"
AUDIT_CHAIN_LOCK_KEY = 0x43472D415544  # "CG-AUD"

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class DatabaseConfigError(ValueError):
    """The database URL or options cannot be used; the message never contains the password."""


# What a database outage looks like from here: driver and SQLAlchemy errors, sockets, timeouts.
STORE_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


class StoreUnavailable(Exception):
    """The gateway's database cannot be reached or refused the operation. The gateway answers ``INTERNAL``."""


def database_url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    value = env.get(DATABASE_URL_ENV, "").strip()
    return value or None


def normalise_url(url: str | None) -> URL:
    """The async driver URL for ``url`` (None: the default SQLite file). Raises ``DatabaseConfigError``."""
    if url is None:
        return URL.create("sqlite+aiosqlite", database=str(DEFAULT_SQLITE_PATH))
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseConfigError("the database URL cannot be parsed") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":
        if driver not in ("asyncpg", "psycopg2", "psycopg", ""):
            raise DatabaseConfigError(f"PostgreSQL is reached with asyncpg, not {driver}")
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        if driver not in ("aiosqlite", "pysqlite", ""):
            raise DatabaseConfigError(f"SQLite is reached with aiosqlite, not {driver}")
        return parsed.set(drivername="sqlite+aiosqlite")
    raise DatabaseConfigError(f"unsupported database {backend!r}: use sqlite or postgresql")


class Database:
    """The async engine and what every part of the store needs to know about it (and, on a SQLite file,
    the writer ``run_write()`` uses: a synchronous engine of one connection and a thread of its own).

    ``schema`` (PostgreSQL only; or ``?schema=`` in the URL): the schema the tables live in (created by
    ``migrate()``), set as the connections' ``search_path``. ``connect_timeout``: seconds to open a
    connection before giving up. ``keyring``: the data keys that seal personal data (``sealed.py``);
    without it a sealed column can be neither written nor read (backups need none: they copy ciphertext).
    Statements' parameters are never put in error messages or logs (``hide_parameters``): they hold
    personal data before it is sealed.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        schema: str | None = None,
        connect_timeout: float = 5.0,
        statement_timeout: float = 10.0,
        pool_size: int = 10,
        echo: bool = False,
        keyring: Keyring | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self.sealer = Sealer(keyring)
        self.dialect = self.url.get_backend_name()  # "sqlite" | "postgresql"
        if "schema" in self.url.query:  # postgresql+asyncpg://host/db?schema=gateway
            query_schema = self.url.query["schema"]
            schema = schema or (query_schema if isinstance(query_schema, str) else query_schema[-1])
            self.url = self.url.difference_update_query(["schema"])
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise DatabaseConfigError(f"bad schema name {schema!r}")
        if schema is not None and self.dialect != "postgresql":
            raise DatabaseConfigError("a schema can only be chosen on PostgreSQL")
        self.schema = schema
        self.connect_timeout = connect_timeout
        # a SQLite file (not in memory): run_write() uses the writer thread
        self._sqlite_file = self.dialect == "sqlite" and not _sqlite_in_memory(self.url.database)
        # the SQLite file's path (audit checkpoints are kept beside it by default); None elsewhere
        self.file_path: str | None = str(self.url.database) if self._sqlite_file else None
        self._echo = echo
        self._writer: Engine | None = None
        self._writer_executor: ThreadPoolExecutor | None = None
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(kwargs, connect_timeout)
        else:
            server_settings = {"application_name": "customer-graph"}
            if schema is not None:
                server_settings["search_path"] = schema
            self.engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,  # a restarted server costs one reconnect, not one failed request
                pool_timeout=connect_timeout,
                connect_args={
                    "timeout": connect_timeout,
                    "command_timeout": statement_timeout,
                    "server_settings": server_settings,
                },
                **kwargs,
            )
        attach(self.engine.sync_engine.dialect, self.sealer)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Database:
        return cls(database_url_from_env(environ), **options)

    # --- engine setup ---------------------------------------------------------------------------

    def _sqlite_engine(self, kwargs: dict[str, Any], busy_timeout: float) -> AsyncEngine:
        if _sqlite_in_memory(self.url.database):
            kwargs["poolclass"] = StaticPool  # one connection, or every connection sees its own database
        else:
            Path(self.url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(self.url, connect_args={"timeout": busy_timeout}, **kwargs)
        _sqlite_events(engine.sync_engine, busy_timeout)
        return engine

    def _writer_engine(self) -> tuple[Engine, ThreadPoolExecutor]:
        """The SQLite file's writer: a synchronous engine (one connection) and the thread it is used on,
        made at first use (and again after ``aclose()``)."""
        if self._writer is None or self._writer_executor is None:
            engine = sa.create_engine(
                self.url.set(drivername="sqlite+pysqlite"),
                pool_size=1,
                max_overflow=0,
                # the connection is made and used on the writer thread, but disposed of from elsewhere
                connect_args={"timeout": self.connect_timeout, "check_same_thread": False},
                echo=self._echo,
                hide_parameters=True,
            )
            _sqlite_events(engine, self.connect_timeout)
            attach(engine.dialect, self.sealer)
            self._writer = engine.execution_options(cg_sqlite_immediate=True)
            self._writer_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        return self._writer, self._writer_executor

    # --- properties -----------------------------------------------------------------------------

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    # --- transactions ---------------------------------------------------------------------------

    @asynccontextmanager
    async def write_transaction(self, *, open_keys: bool = True) -> AsyncIterator[AsyncConnection]:
        """A transaction that takes the write lock at once (SQLite ``BEGIN IMMEDIATE``) or runs READ
        COMMITTED (PostgreSQL: each statement sees what committed before it, e.g. after a lock wait).
        ``open_keys`` False: without loading the blind-index key first (a restore replaces it)."""
        if open_keys:
            await self._index_key()
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(cg_sqlite_immediate=True)
            else:
                await conn.execution_options(isolation_level="READ COMMITTED")
            async with conn.begin():
                yield conn

    async def run_write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(connection, *args, **kwargs)`` inside one ``write_transaction()``-like transaction,
        committed before this returns (rolled back if ``fn`` raises). On a SQLite file ``fn`` runs on the
        writer thread, on its synchronous connection; elsewhere on the async engine (``run_sync``).

        Cancelled while the writer thread runs ``fn``, the transaction still ends (commits or rolls
        back) on that thread; cancelled before it started, it never runs. The writer runs one
        transaction at a time, in the order they were asked for."""
        await self._index_key()
        if not self._sqlite_file:
            async with self.write_transaction() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        engine, executor = self._writer_engine()
        call = functools.partial(_in_transaction, engine, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only use of one connection (one transaction, rolled back at the end)."""
        await self._index_key()
        async with self.engine.connect() as conn:
            yield conn

    # --- lifecycle ------------------------------------------------------------------------------

    async def migrate(self, revision: str = "head", *, open_keys: bool = True) -> None:
        """Upgrade the tables to ``revision`` (Alembic). Safe when several gateways start at once on one
        PostgreSQL (an advisory lock serialises them) and on an existing, up-to-date database. Then (unless
        ``open_keys`` is False: a restore) the blind-index key is made if there is none, and opened with the
        data keys: wrong keys fail here, at start (``SealedValueError``)."""
        load = functools.partial(self._load_index_key, create=True) if open_keys else _nothing
        from .migrations import upgrade

        async with self.engine.connect() as conn:
            if self.is_postgresql:
                async with conn.begin():
                    await conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                    if self.schema is not None:
                        await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                    await conn.run_sync(upgrade, revision)
                    await conn.run_sync(load)
            else:
                await self._sqlite_wal(conn)
                await conn.execution_options(cg_sqlite_immediate=True)
                async with conn.begin():
                    await conn.run_sync(upgrade, revision)
                    await conn.run_sync(load)
        log.info("gateway database at revision %s (%s)", revision, self.dialect)

    def _load_index_key(self, conn: Connection, create: bool = False) -> None:
        """Open this database's blind-index key (``sealed_keys``) with the data keys: a keyring that cannot
        (the wrong keys) fails here, at start, with ``SealedValueError``. ``create`` (``migrate()``, under
        its lock): make the key when the database has none yet. Nothing to do without a keyring or before
        migration 0009."""
        if self.sealer.keyring is None or not sa.inspect(conn).has_table("sealed_keys"):
            return
        from .models import sealed_keys

        query = sa.select(sealed_keys.c.value).where(sealed_keys.c.name == INDEX_KEY_NAME)
        value = conn.execute(query).scalar_one_or_none()
        if value is None and create:
            conn.execute(
                sealed_keys.insert().values(
                    name=INDEX_KEY_NAME, value=new_index_key(), created_at=datetime.now(UTC)
                )
            )
            value = conn.execute(query).scalar_one()
        if value is not None:
            self.sealer.index_key = decode_index_key(value)

    async def reload_keys(self) -> None:
        """Read the blind-index key again (after a restore replaced it)."""
        self.sealer.index_key = None
        await self._index_key()

    async def _index_key(self) -> None:
        """Before a transaction: the blind-index key, when it was not loaded yet (``migrate()`` loads it;
        a Database used on a migrated database without ``migrate()`` loads it here, once)."""
        if self.sealer.index_key is not None or self.sealer.keyring is None:
            return
        async with self.engine.connect() as conn:
            await conn.run_sync(self._load_index_key)

    async def _sqlite_wal(self, conn: AsyncConnection) -> None:
        """Put the file in WAL mode (persistent): readers never block the appending writer."""
        if _sqlite_in_memory(self.url.database):
            return
        raw = (await conn.get_raw_connection()).driver_connection  # aiosqlite, autocommit
        assert raw is not None
        for attempt in range(50):
            try:
                async with raw.execute("PRAGMA journal_mode") as cursor:
                    row = await cursor.fetchone()
                if row is not None and str(row[0]).lower() == "wal":
                    return
                async with raw.execute("PRAGMA journal_mode=WAL"):
                    pass
            except sqlite3.OperationalError:  # another process holds the lock switching needs
                if attempt == 49:
                    raise
                await asyncio.sleep(0.02 * (1 + attempt % 5))

    async def current_revision(self) -> str | None:
        from .migrations import current

        async with self.engine.connect() as conn:
            return await conn.run_sync(current)

    async def ping(self, timeout: float | None = None) -> bool:
        """Can a connection run ``SELECT 1`` now? Never raises."""
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.connect_timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Close the pooled connections (they reopen at the next use); waits for a running write."""
        writer, executor = self._writer, self._writer_executor
        self._writer = self._writer_executor = None
        if writer is not None and executor is not None:
            try:  # after what the writer thread has been given already
                await asyncio.get_running_loop().run_in_executor(executor, writer.dispose)
            finally:
                executor.shutdown(wait=False)
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.safe_url!r})"


def _nothing(conn: Connection) -> None:
    return None


def sqlite_file(url: URL) -> str | None:
    """The SQLite file a (normalised) URL names; None for PostgreSQL and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or _sqlite_in_memory(url.database):
        return None
    return str(url.database)


def _sqlite_in_memory(database: str | None) -> bool:
    return not database or database == ":memory:" or database.startswith("file::memory:")


def _sqlite_events(engine: Engine, busy_timeout: float) -> None:
    """Connect-time pragmas and SQLAlchemy-controlled ``BEGIN`` for a SQLite engine (the async engine's
    ``sync_engine`` and the writer's engine alike)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # let SQLAlchemy, not the driver, say when a transaction begins (and how: see _on_begin)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # (WAL is set once, persistently, by migrate(): switching needs a lock a busy database
            # may not give at once, and connecting must not wait for it)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("cg_sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _in_transaction(
    engine: Engine, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """On the writer thread: ``fn`` in one ``BEGIN IMMEDIATE`` transaction of the writer's connection."""
    with engine.connect() as conn, conn.begin():
        return fn(conn, *args, **kwargs)
