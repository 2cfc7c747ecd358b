"""The recycling sweep: one pass over the owned customers; the due ones go back to the pool.

A pass lists every account (pages of 200, account-number order — the sales API has no "owned" filter),
reads the owned ones' activities in batches, and per customer applies ``rules.sweep_action``:

- **recycle** (the owner logged no activity for ``recycle_after``, protection over): ``PUT /owner
  {owner_id: null}`` with ``If-Match`` of the version just listed. A concurrent change (412) is skipped
  and looked at again next pass. Each recycle is stored in the pool history and the audit trail (kind
  ``pool``, operation type ``system``) in one transaction, then published (``on_pool_event``).
- **warn** (within ``warn_before`` of its recycle time): a ``warning`` history row, unique per (customer,
  owner, recycle time), and an event — only the first pass that sees it announces it.

**Idempotent**: a recycled customer is no longer owned, an announced warning is not new; a second pass
does nothing more. **One pass at a time across gateway instances**: on PostgreSQL a session-level
``pg_try_advisory_lock`` on a connection held for the pass (in autocommit, so no transaction stays
open); on SQLite (one host) a lock row in ``pool_sweeps`` with an expiry, taken under ``BEGIN
IMMEDIATE`` and renewed after every page (a crashed holder's lock lapses). An instance that does not
get the lock skips the pass. The row also remembers the last pass, so the scheduled passes of several
instances do not each run once per interval (``min_gap``).

Logs name counts only, never customers' data.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from connectors.errors import UpstreamConflict, UpstreamError, UpstreamNotFound
from connectors.models import Account, Activity
from features.store.audit import AuditEntry, AuditLog
from features.store.db import Database, StoreUnavailable
from features.store.models import pool_sweeps

from . import lockrows
from .rules import (
    SYSTEM_ACTOR,
    PoolEventKind,
    PoolRecord,
    PoolRules,
    RecycleCause,
    SweepAction,
    sweep_action,
    warning_key,
)
from .store import PoolStore

log = logging.getLogger(__name__)

SWEEP_NAME = "recycle"
SWEEP_LOCK_KEY = 0x43472D504F4F4C  # "CG-POOL": pg_try_advisory_lock key
LOCK_TTL = timedelta(minutes=10)  # SQLite lock row: renewed after every page
PAGE_SIZE = 200
WRITES_IN_FLIGHT = 8  # concurrent PUT /owner calls of one pass


class SalesPort(Protocol):
    """The sales connector, as the sweep uses it (``connectors.sales.SalesConnector`` fits)."""

    async def list_accounts(self, *, page: int = 1, per_page: int = 50) -> Any: ...

    async def activities(self, account_nos: list[str]) -> dict[str, list[Activity]]: ...

    async def set_owner(self, account_no: str, owner_id: str | None, *, version: int | None) -> Account: ...


EventSink = Callable[[Sequence[PoolRecord]], Awaitable[None]]
Evict = Callable[[str], None]


@dataclass(slots=True)
class SweepResult:
    """What one pass did: counts only (the CLI prints it, the log records it)."""

    ran: bool = True
    skipped: str | None = None  # "locked" (another instance runs one) | "recent" (one ran lately)
    scanned: int = 0  # accounts listed
    owned: int = 0  # of them owned
    recycled: int = 0
    warned: int = 0  # new warnings (already announced ones are not counted again)
    due_warnings: int = 0  # customers within the warning period (announced now or before)
    conflicts: int = 0  # changed concurrently: skipped, looked at again next pass
    errors: int = 0  # upstream or store failures for single customers
    seconds: float = 0.0
    dry_run: bool = False
    recycled_accounts: list[str] = field(default_factory=list)  # for tests and --verbose; not logged

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("recycled_accounts")
        return data


class SweepLock:
    """One pass at a time across every gateway instance sharing the database."""

    def __init__(self, database: Database, *, ttl: timedelta = LOCK_TTL) -> None:
        self.db = database
        self.ttl = ttl
        self.holder = f"{uuid.uuid4().hex[:12]}"

    @asynccontextmanager
    async def hold(self, now: Callable[[], datetime]) -> AsyncIterator[Callable[[], Awaitable[None]] | None]:
        """Yields a ``renew()`` callable while the lock is held, ``None`` when another holds it."""
        if self.db.is_postgresql:
            async with self._pg() as held:
                if not held:
                    yield None
                    return

                async def noop() -> None:
                    return None

                yield noop
            return
        if not await self._sqlite_take(now()):
            yield None
            return
        try:

            async def renew() -> None:
                await self._sqlite_take(now())

            yield renew
        finally:
            await self._sqlite_release()

    @asynccontextmanager
    async def _pg(self) -> AsyncIterator[bool]:
        async with self.db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            held = bool(
                (
                    await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": SWEEP_LOCK_KEY})
                ).scalar()
            )
            try:
                yield held
            finally:
                if held:
                    await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": SWEEP_LOCK_KEY})

    async def _sqlite_take(self, now: datetime) -> bool:
        return await lockrows.take(self.db, SWEEP_NAME, self.holder, self.ttl, reentrant=True)

    async def _sqlite_release(self) -> None:
        await lockrows.release(self.db, SWEEP_NAME, self.holder)


class Sweeper:
    """Runs passes. ``clock``: the time decisions are made at (tests move it); ``sales``: a callable
    giving the sales connector (the gateway's is built lazily)."""

    def __init__(
        self,
        database: Database,
        store: PoolStore,
        rules: PoolRules,
        sales: Callable[[], SalesPort],
        *,
        audit: AuditLog | None = None,
        publish: EventSink | None = None,
        evict: Evict | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = database
        self.store = store
        self.rules = rules
        self.sales = sales
        self.audit = audit
        self.publish = publish
        self.evict = evict
        self.clock = clock or (lambda: datetime.now(UTC))
        self.lock = SweepLock(database)

    async def run_once(
        self, *, now: datetime | None = None, min_gap: timedelta | None = None, dry_run: bool = False
    ) -> SweepResult:
        """One pass (or none: another instance holds the lock, or one finished less than ``min_gap``
        ago). ``now``: decide as of this time (default: the clock)."""
        started = time.perf_counter()
        clock: Callable[[], datetime] = (lambda: now) if now is not None else self.clock
        async with self.lock.hold(clock) as renew:
            if renew is None:
                log.info("pool sweep skipped: another instance is sweeping")
                return SweepResult(ran=False, skipped="locked")
            if min_gap is not None and await self._ran_lately(min_gap):
                return SweepResult(ran=False, skipped="recent")
            result = SweepResult(dry_run=dry_run)
            if not dry_run:
                await self._mark(last_started_at=datetime.now(UTC))
            await self._pass(clock(), result, renew, dry_run)
            result.seconds = round(time.perf_counter() - started, 3)
            if not dry_run:
                await self._mark(last_finished_at=datetime.now(UTC), last_result=result.summary())
        log.info("pool sweep done", extra={"pool_sweep": result.summary()})
        return result

    async def _ran_lately(self, gap: timedelta) -> bool:
        async with self.db.read() as conn:
            last = (
                await conn.execute(
                    sa.select(pool_sweeps.c.last_finished_at).where(pool_sweeps.c.name == SWEEP_NAME)
                )
            ).scalar()
        return isinstance(last, datetime) and datetime.now(UTC) - last < gap

    async def _mark(self, **values: Any) -> None:
        async with self.db.write_transaction() as conn:
            await lockrows.upsert(conn, self.db, SWEEP_NAME, values)

    async def _pass(
        self, now: datetime, result: SweepResult, renew: Callable[[], Awaitable[None]], dry_run: bool
    ) -> None:
        sales = self.sales()
        page_no = 1
        while True:
            page = await sales.list_accounts(page=page_no, per_page=PAGE_SIZE)
            accounts: list[Account] = list(page.accounts)
            result.scanned += len(accounts)
            await self._page(sales, [a for a in accounts if a.owner_id is not None], now, result, dry_run)
            if not accounts or page_no * PAGE_SIZE >= page.total:
                return
            page_no += 1
            await renew()

    async def _page(
        self, sales: SalesPort, owned: list[Account], now: datetime, result: SweepResult, dry_run: bool
    ) -> None:
        result.owned += len(owned)
        if not owned:
            return
        activities = await sales.activities([a.account_no for a in owned])
        due: list[Account] = []
        warnings: list[PoolRecord] = []
        for account in owned:
            action, when = sweep_action(account, activities.get(account.account_no, ()), self.rules, now)
            if action is SweepAction.RECYCLE:
                due.append(account)
            elif action is SweepAction.WARN and when is not None and account.owner_id is not None:
                result.due_warnings += 1
                warnings.append(
                    PoolRecord(
                        kind=PoolEventKind.WARNING,
                        account_no=account.account_no,
                        actor=SYSTEM_ACTOR,
                        at=now,
                        owner_id=account.owner_id,
                        reason=RecycleCause.INACTIVE.value,
                        sales_stamp=when,
                        dedupe_key=warning_key(account.account_no, account.owner_id, when),
                    )
                )
        if dry_run:
            result.recycled += len(due)
            result.recycled_accounts.extend(a.account_no for a in due)
            return
        if warnings:
            try:
                inserted = await self.store.add(warnings)
            except Exception:
                log.exception("pool sweep: warnings not stored", extra={"count": len(warnings)})
                result.errors += len(warnings)
            else:
                new = [w for w, fresh in zip(warnings, inserted, strict=True) if fresh]
                result.warned += len(new)
                await self._publish(new)
        if due:
            await self._recycle(sales, due, now, result)

    async def _recycle(
        self, sales: SalesPort, due: list[Account], now: datetime, result: SweepResult
    ) -> None:
        gate = asyncio.Semaphore(WRITES_IN_FLIGHT)

        async def one(account: Account) -> PoolRecord | None:
            async with gate:
                try:
                    review = await self.store.open_review(
                        account_no=account.account_no,
                        region=account.region,
                        cause=RecycleCause.INACTIVE.value,
                        note=None,
                        previous_owner=account.owner_id,
                        actor=SYSTEM_ACTOR,
                        at=now,
                    )
                except StoreUnavailable:
                    result.errors += 1  # no review, no recycle: the next pass tries again
                    return None
                try:
                    updated = await sales.set_owner(account.account_no, None, version=account.version)
                except UpstreamConflict:
                    result.conflicts += 1  # claimed, released or edited meanwhile: next pass decides again
                    await self.store.cancel_review(review)
                    return None
                except UpstreamNotFound:
                    await self.store.cancel_review(review)
                    return None
                except UpstreamError as exc:
                    result.errors += 1
                    log.warning("pool sweep: a recycle failed upstream (%s)", type(exc).__name__)
                    await self.store.cancel_review(review)
                    return None
            if self.evict is not None:
                self.evict(account.account_no)
            return PoolRecord(
                kind=PoolEventKind.RECYCLE,
                account_no=account.account_no,
                actor=SYSTEM_ACTOR,
                at=now,
                owner_id=account.owner_id,
                reason=RecycleCause.INACTIVE.value,
                sales_stamp=updated.pool_since,
                region=account.region,
            )

        records = [r for r in await asyncio.gather(*(one(a) for a in due)) if r is not None]
        if not records:
            return
        result.recycled += len(records)
        result.recycled_accounts.extend(r.account_no for r in records)
        try:
            await self._store(records)
        except Exception:
            # The customers are back in the pool (the sales system is the truth); only their history
            # and audit records are missing. Logged loudly, with counts only.
            log.exception("pool sweep: recycles not recorded", extra={"count": len(records)})
            result.errors += len(records)
        await self._publish(records)

    async def _store(self, records: list[PoolRecord]) -> None:
        entries = [
            AuditEntry(
                kind="pool",
                request_id=f"pool-sweep-{self.lock.holder}",
                user_sub=SYSTEM_ACTOR,
                operation_name="poolSweep",
                operation_type="system",
                customer_ids=(r.account_no,),
                before={"owner_id": r.owner_id},
                after={"owner_id": None},
                detail={"action": "recycle", "reason": r.reason},
            )
            for r in records
        ]
        if self.audit is None:
            await self.store.add(records)
            return
        async with self.audit.transaction() as tx:
            await self.store.add(records, tx.connection)
            tx.add(*entries)

    async def _publish(self, records: Sequence[PoolRecord]) -> None:
        if records and self.publish is not None:
            try:
                await self.publish(records)
            except Exception:
                log.exception("pool sweep: publishing events failed")
