"""The pool as one gateway process runs it: rules, history, the scheduled sweep, and its events.

``PoolService`` is what the schema reaches through ``context.pool`` (``schema.pool.PoolPort``) and what
the gateway starts and stops with its lifespan:

    pool = PoolService.from_settings(settings, sales=lambda: gateway.upstreams.sales, evict=...)
    pool.on_pool_event(callback)       # live updates: claimed, released, recycled, recycle_warning
    pool.start()                       # the sweep every pool_sweep_interval seconds (0: never)
    await pool.sweep()                 # one pass now (``customer-graph pool sweep``)
    await pool.aclose()

The database (``CG_DATABASE_URL``, default SQLite ``var/gateway.db``) is opened and migrated on first
use, so a gateway that never touches the pool never creates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from features.store.audit import AuditLog
from features.store.db import STORE_ERRORS, Database, StoreUnavailable
from features.store.sealed import Keyring

from . import rules
from .claims import ClaimLock
from .rules import (
    HistoryPage,
    OwnedAccount,
    OwnerActivity,
    PoolEvent,
    PoolRecord,
    PoolRules,
    Review,
    ReviewState,
)
from .store import PoolStore, ReviewStore
from .sweep import Evict, SalesPort, Sweeper, SweepResult

log = logging.getLogger(__name__)

PoolEventCallback = Callable[[PoolEvent], Awaitable[None] | None]


class PoolService:
    def __init__(
        self,
        rules: PoolRules,
        sales: Callable[[], SalesPort],
        *,
        database: Database | None = None,
        database_url: str | None = None,
        keyring: Keyring | None = None,
        audit: AuditLog | None = None,
        evict: Evict | None = None,
        sweep_interval: float = 0.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.rules = rules
        self.sweep_interval = sweep_interval
        self.clock = clock or (lambda: datetime.now(UTC))
        self._sales = sales
        self._database = database
        self._own_database = database is None
        self._database_url = database_url or None
        self._keyring = keyring  # the data keys of a database this service opens itself
        self._audit = audit
        self._evict = evict
        self._callbacks: list[PoolEventCallback] = []
        self._ready: asyncio.Lock | None = None
        self._migrated = False
        self._claims: dict[str, tuple[asyncio.Lock, int]] = {}  # rep → (lock, users)
        self._claim_lock: ClaimLock | None = None
        self._task: asyncio.Task[None] | None = None
        self._store: PoolStore | None = None
        self._sweeper: Sweeper | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        sales: Callable[[], SalesPort],
        *,
        database: Database | None = None,
        keyring: Keyring | None = None,
        audit: AuditLog | None = None,
        evict: Evict | None = None,
    ) -> PoolService:
        return cls(
            PoolRules.from_settings(settings),
            sales,
            database=database,
            database_url=getattr(settings, "database_url", "") or None,
            keyring=keyring,
            audit=audit,
            evict=evict,
            sweep_interval=float(settings.pool_sweep_interval),
        )

    # --- the database, opened and migrated on first use ------------------------------------------

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = Database(self._database_url, keyring=self._keyring)
        return self._database

    async def ready(self) -> PoolStore:
        """The history store, its tables migrated (once per process; harmless if already done)."""
        if self._store is not None and self._migrated:
            return self._store
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if not self._migrated:
                await self.database.migrate()
                self._migrated = True
            if self._store is None:
                self._store = PoolStore(self.database, self.rules)
        return self._store

    async def sweeper(self) -> Sweeper:
        store = await self.ready()
        if self._sweeper is None:
            if self._audit is None:
                self._audit = AuditLog(self.database)
            self._sweeper = Sweeper(
                self.database,
                store,
                self.rules,
                self._sales,
                audit=self._audit,
                publish=self.publish,
                evict=self._evict,
                clock=self.clock,
            )
        return self._sweeper

    # --- what the schema uses (schema.pool.PoolPort) ---------------------------------------------

    def recycle_at(
        self, account: OwnedAccount, activities: Iterable[OwnerActivity], now: datetime | None = None
    ) -> datetime | None:
        """When the customer goes back to the pool (``rules.recycle_at`` with this gateway's rules)."""
        return rules.recycle_at(account, activities, self.rules, now)

    @contextlib.asynccontextmanager
    async def claiming(self, sub: str) -> AsyncIterator[None]:
        """One claim at a time per rep: in this process (a lock), and across every process and
        instance sharing the database (``claims.ClaimLock``), so the owned count a claim checks stays
        true until its owner change is done."""
        lock, users = self._claims.get(sub) or (asyncio.Lock(), 0)
        self._claims[sub] = (lock, users + 1)
        try:
            async with lock:
                await self.ready()
                if self._claim_lock is None:
                    self._claim_lock = ClaimLock(self.database)
                async with self._claim_lock.hold(sub):
                    yield
        finally:
            lock, users = self._claims[sub]
            if users <= 1:
                del self._claims[sub]
            else:
                self._claims[sub] = (lock, users - 1)

    async def last_loss(self, owner_id: str, account_no: str, since: datetime) -> datetime | None:
        return await (await self.ready()).last_loss(owner_id, account_no, since)

    async def record(self, records: Sequence[PoolRecord]) -> None:
        """Store history rows (claims, releases, recycles by a user) and publish them."""
        await (await self.ready()).add(records)
        await self.publish(records)

    async def entries(self, pool_since: Mapping[str, datetime | None]) -> dict[str, PoolRecord]:
        if not any(since is not None for since in pool_since.values()):
            return {}
        return await (await self.ready()).entries(pool_since)

    async def history(self, account_no: str, first: int, after: str | None) -> HistoryPage:
        return await (await self.ready()).history(account_no, first, after)

    # --- reviews before the pool ----------------------------------------------------------------

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
        return await (await self.ready()).open_review(
            account_no=account_no,
            region=region,
            cause=cause,
            note=note,
            previous_owner=previous_owner,
            actor=actor,
            at=at,
        )

    async def cancel_review(self, review_id: int | None) -> None:
        await (await self.ready()).cancel_review(review_id)

    async def review_states(self, account_nos: Sequence[str]) -> dict[str, Review]:
        """The newest review of each account that has one (none: claimable as before reviews)."""
        await self.ready()
        return await ReviewStore(self.database).latest(account_nos)

    async def review_queue(
        self, *, region: str | None, first: int, after: str | None
    ) -> tuple[list[Review], str | None, bool]:
        await self.ready()
        return await ReviewStore(self.database).queue(region=region, first=first, after=after)

    async def decide_review(
        self, review: Review, state: ReviewState, record: PoolRecord, *, note: str | None
    ) -> bool:
        """Decide a pending review and record it in the pool history, in one transaction; False when
        someone decided it meanwhile."""
        store = await self.ready()
        try:
            async with self.database.write_transaction() as conn:
                done = await ReviewStore(self.database).decide(
                    review, state, actor=record.actor, note=note, at=record.at, conn=conn
                )
                if done:
                    await store.add([record], conn)
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the pool reviews are unavailable ({type(exc).__name__})") from None
        if done:
            await self.publish([record])
        return done

    # --- events -------------------------------------------------------------------------------

    def on_pool_event(self, callback: PoolEventCallback) -> PoolEventCallback:
        """Call ``callback(event)`` for every pool event from now on (usable as a decorator)."""
        self._callbacks.append(callback)
        return callback

    async def publish(self, records: Sequence[PoolRecord]) -> None:
        for record in records:
            event = PoolEvent.of(record)
            for callback in list(self._callbacks):
                try:
                    outcome = callback(event)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    log.exception("pool event callback failed", extra={"pool_event": event.kind})

    # --- the sweep ----------------------------------------------------------------------------

    async def sweep(
        self, *, now: datetime | None = None, min_gap: timedelta | None = None, dry_run: bool = False
    ) -> SweepResult:
        return await (await self.sweeper()).run_once(now=now, min_gap=min_gap, dry_run=dry_run)

    def start(self) -> None:
        """Schedule the sweep every ``sweep_interval`` seconds, the first one interval after start."""
        if self.sweep_interval > 0 and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._schedule(), name="pool-sweep")

    async def _schedule(self) -> None:
        interval = self.sweep_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep(min_gap=timedelta(seconds=interval / 2))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pool sweep failed; the next one runs in %s s", interval)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._database is not None and self._own_database:
            await self._database.aclose()
            self._database = None
            self._store = None
            self._sweeper = None
            self._migrated = False
