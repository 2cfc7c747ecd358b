"""Cross-request cache of upstream entities, per (system resource, key), with single flight.

What is cached is the connectors' raw domain objects — never a policy-filtered answer — so one
entry serves every caller, and the policy is applied after the cache on every request.

- **TTL per resource** (``CACHE_TTLS``, overridable with ``CG_CACHE_TTLS="orders=30,contracts=600"``):
  the staleness bound of each resource when nothing tells the gateway of a change.
- **Single flight**: concurrent misses for one key, from any number of requests, make one upstream
  call; the others wait for it (and share its failure).
- **Invalidation**: the gateway's own writes, and change events, evict what they name at once
  (``evict_customer``). With ``CG_REDIS_URL`` set, every eviction is published on a Redis channel
  and applied by every worker and instance; without it each process has its own cache and
  another process's writes are seen after the TTL at the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

from cachetools import TTLCache

from schema.loaders import MISS

from .channel import RedisChannel

log = logging.getLogger("customer_graph.cache")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# seconds; the staleness bound of each resource (README "Caching")
CACHE_TTLS: dict[str, float] = {
    "account": 30,
    "orders": 60,
    "payments": 60,
    "opportunities": 60,
    "activities": 30,
    "user": 300,
    "tickets": 30,
    "satisfaction": 60,
    "ticket_detail": 30,
    "contracts": 300,
}
MAX_ENTRIES = 50_000  # per resource
CHANNEL = "customer-graph:invalidate"

Observer = Callable[[str, str], None]  # (resource, "hit" | "miss" | "eviction")


def parse_ttls(text: str) -> dict[str, float]:
    """``"orders=30,contracts=600"`` → TTLs over the defaults; unknown names or bad numbers raise."""
    ttls = dict(CACHE_TTLS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in CACHE_TTLS:
            known = ", ".join(CACHE_TTLS)
            raise ValueError(f"cache_ttls: {part!r} is not resource=seconds (resources: {known})")
        try:
            ttls[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"cache_ttls: {part!r} is not resource=seconds") from None
    return ttls


class EntityCache:
    """One per process; shared by every request's loaders."""

    def __init__(self, ttls: Mapping[str, float] | None = None, observer: Observer | None = None) -> None:
        self.ttls = dict(ttls or CACHE_TTLS)
        self._stores: dict[str, TTLCache[Hashable, Any]] = {
            name: TTLCache(maxsize=MAX_ENTRIES, ttl=ttl) for name, ttl in self.ttls.items() if ttl > 0
        }
        self._inflight: dict[tuple[str, Hashable], asyncio.Future[Mapping[Any, Any]]] = {}
        self._observer = observer
        self._bus: RedisBus | None = None
        self._wrapped: dict[tuple[str, Callable[..., Any]], Callable[..., Any]] = {}
        self._lookups: dict[str, Callable[[Hashable], Any] | None] = {}

    def _observe(self, resource: str, result: str, count: int = 1) -> None:
        if self._observer is not None and count:
            for _ in range(count):
                self._observer(resource, result)

    def wrap(
        self, resource: str, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]]
    ) -> Callable[[list[K]], Awaitable[Mapping[K, V]]]:
        """A batch fetch that answers from the cache and fetches only the misses, once per key (made
        once per resource and fetch: every request's loaders share it)."""
        made = self._wrapped.get((resource, fetch))
        if made is None:
            made = self._wrapped[(resource, fetch)] = self._wrap(resource, fetch)
        return made

    def _wrap(
        self, resource: str, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]]
    ) -> Callable[[list[K]], Awaitable[Mapping[K, V]]]:
        store = self._stores.get(resource)
        if store is None:
            return fetch
        inflight = self._inflight

        async def cached(keys: list[K]) -> Mapping[K, V]:
            found: dict[K, V] = {}
            missing: list[K] = []
            waiting: list[tuple[K, asyncio.Future[Mapping[Any, Any]]]] = []
            for key in keys:
                try:
                    found[key] = store[key]
                    continue
                except KeyError:
                    pass
                pending = inflight.get((resource, key))
                if pending is not None:
                    waiting.append((key, pending))
                else:
                    missing.append(key)
            self._observe(resource, "hit", len(keys) - len(missing) - len(waiting))
            self._observe(resource, "miss", len(missing))
            if missing:
                future: asyncio.Future[Mapping[Any, Any]] = asyncio.get_running_loop().create_future()
                for key in missing:
                    inflight[(resource, key)] = future
                try:
                    fetched = await fetch(missing)
                except BaseException as exc:
                    future.set_exception(exc)
                    future.exception()  # retrieved: no warning when nobody else waited
                    raise
                finally:
                    for key in missing:
                        if inflight.get((resource, key)) is future:
                            del inflight[(resource, key)]
                for key in missing:
                    if key in fetched:
                        store[key] = found[key] = fetched[key]
                if not future.done():
                    future.set_result(fetched)
            for key, pending in waiting:
                shared = await pending
                if key in shared:
                    found[key] = shared[key]
            return found

        return cached

    def lookup(self, resource: str) -> Callable[[Hashable], Any] | None:
        """For a cached resource, a function answering a key's cached value (a hit, counted) or
        ``MISS``; the loaders use it to answer a hit without a round through the event loop."""
        if resource in self._lookups:
            return self._lookups[resource]
        store = self._stores.get(resource)
        if store is None:
            self._lookups[resource] = None
            return None
        observe = self._observe

        def cached(key: Hashable) -> Any:
            try:
                value = store[key]  # one expiry check (``get`` makes two)
            except KeyError:
                return MISS
            observe(resource, "hit")
            return value

        self._lookups[resource] = cached
        return cached

    def peek(self, resource: str, key: Hashable) -> Any:
        store = self._stores.get(resource)
        return None if store is None else store.get(key)

    def evict(self, resource: str, key: Hashable, *, publish: bool = True) -> None:
        store = self._stores.get(resource)
        if store is not None and store.pop(key, None) is not None:
            self._observe(resource, "eviction")
        if publish and self._bus is not None:
            self._bus.publish(resource, key)

    def evict_customer(
        self, account_no: str, *, email: str | None = None, tax_id: str | None = None, publish: bool = True
    ) -> None:
        """Everything known about one customer: its account, sales lists, support and contracts."""
        account = self.peek("account", account_no)
        email = email or getattr(account, "email", None)
        tax_id = tax_id or getattr(account, "tax_id", None)
        for resource in ("account", "orders", "payments", "opportunities", "activities"):
            self.evict(resource, account_no, publish=publish)
        if email:
            self.evict("tickets", email, publish=publish)
            self.evict("satisfaction", email, publish=publish)
        if tax_id:
            self.evict("contracts", tax_id, publish=publish)

    def clear(self) -> None:
        for store in self._stores.values():
            store.clear()

    # --- several workers and instances ----------------------------------------------------------

    async def connect(self, redis_url: str) -> None:
        """Share evictions through Redis pub/sub with every other process using the same URL."""
        self._bus = RedisBus(redis_url, self)
        await self._bus.start()

    async def aclose(self) -> None:
        if self._bus is not None:
            await self._bus.stop()
            self._bus = None


class RedisBus:
    """Publishes this process's evictions and applies everyone else's."""

    def __init__(self, url: str, cache: EntityCache) -> None:
        self._cache = cache
        self._channel = RedisChannel(url, CHANNEL, self._apply)
        self._sends: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        await self._channel.start()

    def publish(self, resource: str, key: Hashable) -> None:
        task = asyncio.ensure_future(self._channel.publish({"r": resource, "k": key}))
        self._sends.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future[Any]) -> None:
        self._sends.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning("cache invalidation not published", extra={"error_type": type(error).__name__})

    def _apply(self, payload: Any) -> None:
        if isinstance(payload, dict):
            self._cache.evict(str(payload.get("r")), payload.get("k"), publish=False)

    async def stop(self) -> None:
        for task in list(self._sends):
            with contextlib.suppress(Exception):
                await task
        await self._channel.stop()
