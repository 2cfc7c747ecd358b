"""The publisher: takes unpublished inbox rows in order, evicts the cache, publishes, marks them.

One background task per gateway. It wakes when a webhook is accepted (or the poller found changes),
and every ``IDLE_POLL`` seconds anyway (rows accepted by another process on the same database). On
start it publishes whatever was left unpublished — accepted, acknowledged, but not yet published when
the gateway stopped — which is the "no event lost across a restart" guarantee.

For each row: what it names is resolved to account numbers (a support e-mail, a party tax id: see
``resolve``); a row whose resolution fails (the sales system is down) waits, and so do later rows of
the same e-mail or tax id, so a customer's changes stay in order. Then, in one claim transaction:
evict the cache entries the event names, publish one ``ChangeEvent`` per customer, mark the row. A
type the graph does not know is evicted and marked, not published (no policy decision covers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from connectors.errors import UpstreamError
from features.store.db import StoreUnavailable
from gateway.cache import EntityCache

from .bus import BusUnavailable, EventBus
from .inbox import Inbox
from .model import KNOWN_TYPES, ChangeEvent, InboxEvent, StoredEvent
from .resolve import AccountResolver

log = logging.getLogger("customer_graph.events")

BATCH = 100  # rows per claim transaction
IDLE_POLL = 2.0  # seconds between looks at the inbox when nothing woke the publisher
MAX_BACKOFF = 30.0  # seconds, after failures (database, Redis, the sales system)
PRUNE_EVERY = 3600.0  # seconds

__all__ = ["Publisher"]


class Publisher:
    def __init__(
        self,
        inbox: Inbox,
        bus: EventBus,
        resolver: AccountResolver,
        cache: EntityCache | None,
        *,
        retention: timedelta = timedelta(days=7),
        idle_poll: float = IDLE_POLL,
        batch: int = BATCH,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observers: Sequence[Callable[[InboxEvent], Awaitable[None]]] = (),
    ) -> None:
        self.inbox = inbox
        self.observers = observers  # told of every published event (identity matching); best effort
        self.bus = bus
        self.resolver = resolver
        self.cache = cache
        self.retention = retention
        self.idle_poll = idle_poll
        self.batch = batch
        self.clock = clock
        self.published = 0  # rows published by this process
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiting = 0  # rows left waiting in the last round (their customers could not be resolved)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-updates-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Something was accepted: look now."""
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        next_prune = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            handled = 0
            try:
                handled = await self.publish_pending()
                failures = 0
            except (StoreUnavailable, BusUnavailable) as exc:
                failures += 1
                log.warning("live updates: publishing failed; will retry", extra={"error": str(exc)})
            except Exception:
                failures += 1
                log.exception("live updates: publishing failed; will retry")
            if loop.time() >= next_prune:
                next_prune = loop.time() + PRUNE_EVERY
                try:
                    await self.inbox.prune(self.clock() - self.retention)
                except Exception as exc:  # a database outage must not end the publisher
                    log.warning("live updates: pruning the inbox failed (%s)", type(exc).__name__)
            if handled >= self.batch and not failures and not self._waiting:
                continue  # more may be waiting
            wait = self.idle_poll
            if failures or self._waiting:
                wait = min(MAX_BACKOFF, 0.5 * 2 ** min(max(failures, 1), 8))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    # --- one round ------------------------------------------------------------------------------

    async def publish_pending(self) -> int:
        """Publish what is pending now (one batch); how many rows were looked at."""
        rows = await self.inbox.pending(self.batch)
        plans: list[tuple[StoredEvent, list[ChangeEvent]]] = []
        waiting: set[tuple[str, str]] = set()
        for row in rows:
            key = _order_key(row.event)
            if key in waiting:
                continue
            try:
                changes = await self._changes(row)
            except UpstreamError as exc:
                waiting.add(key)
                log.warning(
                    "live updates: the customers of an event cannot be resolved now",
                    extra={"source": row.event.source, "error_type": type(exc).__name__},
                )
                continue
            plans.append((row, changes))
        self._waiting = len(rows) - len(plans)
        if not plans:
            return len(rows)
        observed: list[InboxEvent] = []
        async with self.inbox.claim([row.id for row, _ in plans], now=self.clock()) as claim:
            for row, changes in plans:
                if row.id not in claim.ids:
                    continue  # another gateway published it meanwhile, or holds it now
                self._evict(row.event)
                await self.bus.publish(changes)
                claim.done(row.id)
                self.published += 1
                observed.append(row.event)
        for event in observed:  # after the claim's transaction: an observer may write to the database
            await self._observe(event)
        return len(rows)

    async def _changes(self, row: StoredEvent) -> list[ChangeEvent]:
        event = row.event
        if event.type not in KNOWN_TYPES:
            log.info("live updates: an event of unknown type is not published", extra={"type": event.type})
            return []
        if event.source in ("sales", "pool"):
            accounts: tuple[str, ...] = (event.account_no,) if event.account_no else ()
        elif event.source == "support":
            accounts = await self.resolver.by_email(event.email) if event.email else ()
        elif event.source == "contracts":
            party = event.detail.get("party_name")
            accounts = (
                await self.resolver.by_tax_id(event.tax_id, party if isinstance(party, str) else None)
                if event.tax_id
                else ()
            )
        else:
            accounts = ()
        at = event.occurred_at or row.received_at
        confidential = bool(event.detail.get("confidential", False))
        return [
            ChangeEvent(
                event_id=event.event_id,
                system=event.source,
                type=event.type,
                account_no=account_no,
                at=at,
                confidential=confidential,
            )
            for account_no in accounts
        ]

    async def _observe(self, event: InboxEvent) -> None:
        for observer in self.observers:
            try:
                await observer(event)
            except Exception as exc:  # an observer's failure never holds back publishing
                log.warning("live updates: an event observer failed (%s)", type(exc).__name__)

    def _evict(self, event: InboxEvent) -> None:
        if event.source == "sales" and event.account_no:
            if event.type.startswith("account."):
                self.resolver.forget(event.account_no)
            if self.cache is not None:
                self.cache.evict_customer(event.account_no)
            return
        if self.cache is None:
            return
        if event.source == "support" and event.email:
            self.cache.evict("tickets", event.email)
            self.cache.evict("satisfaction", event.email)
            ticket_id = event.detail.get("ticket_id")
            if ticket_id is not None:
                self.cache.evict("ticket_detail", str(ticket_id))
        elif event.source == "contracts" and event.tax_id:
            self.cache.evict("contracts", event.tax_id)


def _order_key(event: InboxEvent) -> tuple[str, str]:
    """Events with one key are published in order: a waiting one holds back the later ones."""
    return (event.source, event.account_no or event.email or event.tax_id or "")
