"""A Redis pub/sub channel the gateway's processes share: each publishes JSON payloads and receives
everyone else's (its own are recognised by an origin id and skipped). Used for cache invalidations
and live-update events. A lost connection is re-established after a pause; meanwhile the callers'
own guarantees hold (TTLs bound the cache's staleness; events wait in the inbox)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger("customer_graph.channel")


class RedisChannel:
    def __init__(self, url: str, name: str, on_payload: Callable[[Any], None]) -> None:
        import redis.asyncio as redis

        self.name = name
        self._redis = redis.from_url(url)
        self._on_payload = on_payload
        self._origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        """Connect and subscribe; returns once messages are being received (at most 5 s)."""
        await self._redis.ping()
        self._task = asyncio.create_task(self._listen(), name=f"redis-channel {self.name}")
        await asyncio.wait_for(self.ready.wait(), timeout=5)

    async def publish(self, payload: Any) -> None:
        await self._redis.publish(self.name, json.dumps({"o": self._origin, "p": payload}))

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.name)
                    self.ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._receive(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect after a pause
                log.warning(
                    "redis channel lost", extra={"channel": self.name, "error_type": type(exc).__name__}
                )
                await asyncio.sleep(1)

    def _receive(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("a malformed message on a redis channel was ignored", extra={"channel": self.name})
            return
        if isinstance(message, dict) and message.get("o") != self._origin and "p" in message:
            try:
                self._on_payload(message["p"])
            except Exception:  # one bad message never stops the channel
                log.exception("a redis channel message could not be applied", extra={"channel": self.name})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()
