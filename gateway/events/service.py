"""``LiveUpdates``: the webhook receivers, the inbox, the publisher, the register's poller and the bus,
started and stopped with the gateway; and the feed the subscriptions read (``schema.live.LiveFeed``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from starlette.routing import Route

from features.store.db import Database, StoreUnavailable
from gateway.cache import EntityCache
from gateway.datakeys import open_database
from gateway.settings import Settings
from policies import Policy
from policies.guard import Guard
from schema.context import RequestContext
from schema.loaders import Loaders, Upstreams

from .bus import EventBus, Subscriber
from .inbox import Inbox
from .model import RECYCLE_WARNING_TYPE, ChangeEvent, InboxEvent
from .poller import ContractsPoller
from .publisher import Publisher
from .receiver import WebhookReceiver
from .resolve import AccountResolver

if TYPE_CHECKING:
    from features.pool.rules import PoolEvent

log = logging.getLogger("customer_graph.events")

EVENT_ACCOUNT_TTL = 5.0  # seconds (only when CG_CACHE is off)

__all__ = ["LiveUpdates"]


class LiveUpdates:
    """One per gateway process. ``start()`` opens (and migrates) the gateway database unless one is
    given, connects the Redis bridge with ``CG_REDIS_URL``, and starts the publisher — which first
    publishes what a previous run accepted but did not publish — and the poller."""

    def __init__(
        self,
        settings: Settings,
        *,
        upstreams: Callable[[], Upstreams],
        policy: Callable[[], Policy],
        cache: EntityCache | None = None,
        database: Database | None = None,
        aliases: Callable[[str], tuple[str, ...]] | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        # Every subscriber loads the customer an event names: with the entity cache off, a small cache of
        # accounts (evicted by each event like the real one) still makes that one sales call per event.
        self.event_cache = cache if cache is not None else EntityCache({"account": EVENT_ACCOUNT_TTL})
        self._upstreams = upstreams
        self._policy = policy
        self._database = database
        self._owns_database = database is None
        self.bus = EventBus(settings.live_queue_size)
        self.resolver = AccountResolver(lambda: upstreams().sales, aliases=aliases)
        self.observers: list[Callable[[InboxEvent], Awaitable[None]]] = []
        self.receiver = WebhookReceiver(
            {"sales": settings.sales_webhook_secret, "support": settings.support_webhook_secret},
            self.accept,
            self.wake,
        )
        self.inbox: Inbox | None = None
        self.publisher: Publisher | None = None
        self.poller: ContractsPoller | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = open_database(self.settings)
        return self._database

    async def start(self, *, publish: bool = True, poll: bool = True) -> None:
        """``publish``/``poll`` False: leave that task stopped (tests)."""
        database = self.database
        if self._owns_database:
            await database.migrate()
        self.inbox = inbox = Inbox(database)
        if self.settings.redis_url:
            await self.bus.connect(self.settings.redis_url, on_remote=self._evict_remote)
        self.publisher = Publisher(
            inbox,
            self.bus,
            self.resolver,
            self.event_cache,
            retention=timedelta(days=self.settings.events_retention_days),
            observers=self.observers,
        )
        if publish:
            self.publisher.start()
        self.poller = ContractsPoller(
            inbox,
            lambda: self._upstreams().contracts,
            interval=self.settings.contracts_poll_interval,
            on_new=self.wake,
        )
        if poll:
            self.poller.start()

    async def aclose(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        await self.bus.aclose()
        if self._owns_database and self._database is not None:
            await self._database.aclose()
            self._database = None

    def routes(self) -> list[Route]:
        return [
            Route("/hooks/sales", self.receiver.sales, methods=["POST"]),
            Route("/hooks/support", self.receiver.support, methods=["POST"]),
        ]

    # --- the receivers' side --------------------------------------------------------------------

    async def accept(self, event: InboxEvent) -> bool:
        if self.inbox is None:
            raise StoreUnavailable("live updates are not started")
        return await self.inbox.accept(event)

    async def pool_event(self, event: PoolEvent) -> None:
        """The public pool's own events (``PoolService.on_pool_event``). Claims, releases and recycles
        reach subscribers as the sales system's ``account.owner_changed``; the recycle warning has no
        departmental counterpart, so it is accepted here."""
        if event.kind != "recycle_warning" or self.inbox is None:
            return
        when = event.recycle_at or event.at
        accepted = await self.accept(
            InboxEvent(
                source="pool",
                event_id=f"recycle_warning:{event.account_no}:{when.isoformat()}",
                type=RECYCLE_WARNING_TYPE,
                account_no=event.account_no,
                occurred_at=event.at,
            )
        )
        if accepted:
            self.wake()

    def wake(self) -> None:
        if self.publisher is not None:
            self.publisher.wake()

    def _evict_remote(self, event: ChangeEvent) -> None:
        if event.account_no:
            self.event_cache.evict_customer(event.account_no, publish=False)
        if event.account_no and event.type.startswith("account."):
            self.resolver.forget(event.account_no)

    # --- the subscriptions' side (schema.live.LiveFeed) -----------------------------------------

    def subscribe(
        self, accounts: frozenset[str] | None
    ) -> contextlib.AbstractAsyncContextManager[Subscriber]:
        return self.bus.subscribe(accounts)

    def refresh(self, context: RequestContext) -> None:
        context.loaders = Loaders(self._upstreams(), self.event_cache)
        principal = context.principal
        context.guard = Guard(self._policy(), principal) if principal is not None else None
        context.now = datetime.now(UTC)
