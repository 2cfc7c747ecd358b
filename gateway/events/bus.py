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
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

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
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._bus = bus
        self._on_remote = on_remote
        self._origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await self._redis.ping()
        self._task = asyncio.create_task(self._listen(), name="live-updates-bridge")
        await asyncio.wait_for(self.ready.wait(), timeout=5)

    async def send(self, events: Sequence[ChangeEvent]) -> None:
        message = json.dumps({"o": self._origin, "e": [event.to_json() for event in events]})
        try:
            await asyncio.wait_for(self._redis.publish(CHANNEL, message), timeout=PUBLISH_TIMEOUT)
        except Exception as exc:
            raise BusUnavailable(f"changes not sent to the other instances ({type(exc).__name__})") from exc

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self.ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect after a pause
                log.warning("live updates channel lost", extra={"error_type": type(exc).__name__})
                await asyncio.sleep(1)

    def _apply(self, data: bytes | str) -> None:
        try:
            message: Any = json.loads(data)
            if not isinstance(message, dict) or message.get("o") == self._origin:
                return
            events = [ChangeEvent.from_json(item) for item in message.get("e", [])]
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()
