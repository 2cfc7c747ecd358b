"""Fan-out of changes to subscribers: in process, and across gateway instances through Redis pub/sub.

Each subscriber has a bounded queue (``CG_LIVE_QUEUE_SIZE``). One that does not keep up loses its
oldest changes, never blocks the others, and is told: the next thing it reads is a ``MISSED`` marker.

With ``CG_REDIS_URL`` set, ``publish()`` first sends the batch on a Redis channel (raising
``BusUnavailable`` when it cannot, so the publisher keeps the events and tries again), then delivers it
here; every other instance delivers it to its own subscribers when it arrives, after evicting its own
cache entries of those customers (the cache's invalidation channel may arrive later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..channel import RedisChannel
from .model import ChangeEvent

log = logging.getLogger("customer_graph.events")

CHANNEL = "customer-graph:changes"
PUBLISH_TIMEOUT = 2.0  # seconds for one Redis publish

__all__ = ["CHANNEL", "BusUnavailable", "EventBus", "RedisBridge", "Subscriber"]


class BusUnavailable(Exception):
    """The changes could not be sent to the other gateway instances (Redis)."""


class Subscriber:
    """One subscription's queue: an async iterator of changes (and ``MISSED`` markers)."""

    def __init__(self, accounts: frozenset[str] | None, size: int) -> None:
        self.accounts = accounts
        self.size = max(1, size)
        self.dropped = 0  # changes lost because this subscriber fell behind
        self._queue: deque[ChangeEvent] = deque()
        self._missed = False
        self._ready = asyncio.Event()
        self._closed = False

    def offer(self, event: ChangeEvent) -> None:
        if self._closed or (self.accounts is not None and event.account_no not in self.accounts):
            return
        if len(self._queue) >= self.size:
            self._queue.popleft()
            self._missed = True
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> ChangeEvent:
        while True:
            if self._missed:
                self._missed = False
                return ChangeEvent.missed(datetime.now(UTC))
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()


class EventBus:
    def __init__(self, queue_size: int = 100) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self._bridge: RedisBridge | None = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @contextlib.asynccontextmanager
    async def subscribe(self, accounts: frozenset[str] | None = None) -> AsyncIterator[Subscriber]:
        """Changes from now on (of ``accounts`` only, when given) until the block ends."""
        subscriber = Subscriber(accounts, self.queue_size)
        self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)
            subscriber.close()

    def deliver(self, event: ChangeEvent) -> None:
        """To this process's subscribers only."""
        for subscriber in list(self._subscribers):
            subscriber.offer(event)

    async def publish(self, events: Sequence[ChangeEvent]) -> None:
        """To every instance's subscribers; ``BusUnavailable`` when the others cannot be reached."""
        if not events:
            return
        if self._bridge is not None:
            await self._bridge.send(events)
        for event in events:
            self.deliver(event)

    async def connect(self, redis_url: str, on_remote: Callable[[ChangeEvent], None] | None = None) -> None:
        self._bridge = RedisBridge(redis_url, self, on_remote)
        await self._bridge.start()

    async def aclose(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.close()
        if self._bridge is not None:
            await self._bridge.stop()
            self._bridge = None


class RedisBridge:
    """Sends this instance's changes on ``CHANNEL`` and delivers everyone else's here."""

    def __init__(
        self, url: str, bus: EventBus, on_remote: Callable[[ChangeEvent], None] | None = None
    ) -> None:
        self._bus = bus
        self._on_remote = on_remote
        self._channel = RedisChannel(url, CHANNEL, self._apply)

    async def start(self) -> None:
        await self._channel.start()

    async def send(self, events: Sequence[ChangeEvent]) -> None:
        payload = [event.to_json() for event in events]
        try:
            await asyncio.wait_for(self._channel.publish(payload), timeout=PUBLISH_TIMEOUT)
        except Exception as exc:
            raise BusUnavailable(f"changes not sent to the other instances ({type(exc).__name__})") from exc

    def _apply(self, payload: Any) -> None:
        try:
            events = [ChangeEvent.from_json(item) for item in payload]
        except (ValueError, KeyError, TypeError):
            log.warning("a malformed message on the live updates channel was ignored")
            return
        for event in events:
            if self._on_remote is not None:
                try:
                    self._on_remote(event)
                except Exception:
                    log.exception("evicting a remote change failed")
            self._bus.deliver(event)

    async def stop(self) -> None:
        await self._channel.stop()
