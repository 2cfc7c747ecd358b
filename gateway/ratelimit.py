"""Rate limiting per caller: a token bucket per ``sub`` (per client IP for calls without a valid token).

Each caller's bucket holds up to ``burst`` requests and refills at ``per_minute / 60`` a second; a
request that finds it empty is refused with ``RATE_LIMITED`` and told how many seconds to wait
(``Retry-After``). A role may have its own rate (``rate_limit_per_role``; the most generous of the
caller's roles wins), e.g. an app's service account.

Buckets live in this process (an LRU of the most recent callers), or — with ``redis_url`` — in Redis,
shared by every gateway process; when Redis cannot be reached the process falls back to its own
buckets rather than refusing or waving everything through.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .settings import Settings

log = logging.getLogger("customer_graph.ratelimit")

__all__ = ["Limiter", "LocalBuckets", "RedisBuckets", "build_limiter"]


class Buckets(Protocol):
    async def take(self, key: str, per_minute: int, burst: int) -> float:
        """0 when the request may go ahead; else the seconds until the bucket has a token again."""
        ...


class LocalBuckets:
    """Token buckets in this process, for the ``max_keys`` most recently seen callers."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)

    def take_now(self, key: str, per_minute: int, burst: int) -> float:
        now = self.clock()
        rate = per_minute / 60.0
        capacity = float(max(burst, 1))
        tokens, at = self._buckets.pop(key, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    async def take(self, key: str, per_minute: int, burst: int) -> float:
        return self.take_now(key, per_minute, burst)


# KEYS[1]: the bucket; ARGV: capacity, rate per second, now (seconds). Returns the wait in ms.
_REDIS_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
if now > at then tokens = math.min(capacity, tokens + (now - at) * rate) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', math.max(now, at))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return math.ceil(wait * 1000)
"""


class RedisBuckets:
    """The same buckets in Redis (one hash per caller, updated atomically by a script)."""

    def __init__(self, url: str, fallback: LocalBuckets, prefix: str = "cg:rate:") -> None:
        import redis.asyncio as redis_asyncio  # an optional dependency: only with CG_REDIS_URL

        self._client: Any = redis_asyncio.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        self._script: Any = self._client.register_script(_REDIS_SCRIPT)
        self.fallback = fallback
        self.prefix = prefix
        self._down_until = 0.0

    async def take(self, key: str, per_minute: int, burst: int) -> float:
        now = time.time()
        if now >= self._down_until:
            try:
                wait_ms = await self._script(
                    keys=[self.prefix + key], args=[max(burst, 1), per_minute / 60.0, now]
                )
                return float(wait_ms) / 1000.0
            except Exception as exc:  # any Redis failure: count locally for a while
                self._down_until = now + 5.0
                log.warning(
                    "rate limit store unavailable; counting in-process", extra={"error": type(exc).__name__}
                )
        return self.fallback.take_now(key, per_minute, burst)

    async def aclose(self) -> None:
        await self._client.aclose()


class Limiter:
    """Decides per request; ``check`` returns the whole seconds to wait, or 0 to go ahead."""

    def __init__(self, per_minute: int, burst: int, per_role: Mapping[str, int], buckets: Buckets) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.per_role = dict(per_role)
        self.buckets = buckets

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def rate_for(self, roles: frozenset[str]) -> int:
        return max((self.per_role.get(r, self.per_minute) for r in roles), default=self.per_minute)

    async def check(self, key: str, roles: frozenset[str]) -> int:
        if not self.enabled:
            return 0
        per_minute = self.rate_for(roles)
        # The burst grows with a role's higher rate, so a faster caller also gets a larger bucket.
        burst = max(self.burst, math.ceil(self.burst * per_minute / self.per_minute))
        wait = await self.buckets.take(key, per_minute, burst)
        return 0 if wait <= 0 else max(1, math.ceil(wait))

    async def aclose(self) -> None:
        closer = getattr(self.buckets, "aclose", None)
        if closer is not None:
            await closer()


def build_limiter(settings: Settings) -> Limiter:
    local = LocalBuckets()
    buckets: Buckets = local
    if settings.redis_url and settings.rate_limit_per_minute > 0:
        try:
            buckets = RedisBuckets(settings.redis_url, local)
        except ImportError:
            log.warning("CG_REDIS_URL is set but the redis package is missing; rate limits are per process")
    return Limiter(
        settings.rate_limit_per_minute, settings.rate_limit_burst, settings.rate_limit_per_role, buckets
    )
