"""A department's limit holds for the whole deployment, not per process: the register's calls in flight
as a distributed semaphore in Redis (``CG_REDIS_URL``).

A call takes a **lease**: a member of a sorted set scored by its expiry (Redis's own clock, so hosts'
clocks do not matter). A Lua script drops expired leases and adds one only while fewer than the limit
are held; a call gives its lease back when the system has answered (``connectors/base.py`` holds it
as long as its slot, abandoned calls included). A lease outlives any call (``ttl`` > the longest a
call may run, 30 s): an instance that dies leaks its leases only until they expire.

When Redis cannot be reached the instance falls back to a conservative share of the limit — ``limit
// CG_EXPECTED_INSTANCES``, at least 1 — in this process, says so in ``/readyz`` (``sharedLimits``)
and in ``/metrics`` (``cg_shared_limit_fallback``), and goes back to Redis once it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import redis.asyncio as redis

from connectors.resilience import RateLimiter

log = logging.getLogger("customer_graph.shared_limits")

# KEYS[1] the set; ARGV: limit, ttl (ms), lease. Returns 1 when the lease was added.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
"""
POLL = 0.01  # seconds between tries while the deployment's slots are all taken
RETRY_REDIS = 5.0  # seconds in fallback before Redis is tried again


class RedisSlots:
    def __init__(
        self, url: str, name: str, limit: int, *, fallback: int, ttl: float = 40.0, prefix: str = "cg"
    ) -> None:
        self.key = f"{prefix}:slots:{name}"
        self.limit = limit
        self.ttl_ms = int(ttl * 1000)
        self.fallback_limit = max(1, fallback)
        self._fallback = asyncio.Semaphore(self.fallback_limit)
        self._redis: Any = redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script: Any = self._redis.register_script(_ACQUIRE)
        self.degraded_until = 0.0  # monotonic time before which Redis is not asked (fallback)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self.degraded_until

    async def acquire(self, timeout: float | None) -> str | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        lease = uuid.uuid4().hex
        while True:
            if self.degraded:
                return await self._acquire_local(deadline)
            try:
                if await self._script(keys=[self.key], args=[self.limit, self.ttl_ms, lease]):
                    return lease
            except (redis.RedisError, OSError) as exc:
                log.warning("shared limit: Redis unreachable (%s); this instance's share", type(exc).__name__)
                self.degraded_until = time.monotonic() + RETRY_REDIS
                continue
            if deadline is not None and time.monotonic() + POLL > deadline:
                return None
            await asyncio.sleep(POLL)

    async def _acquire_local(self, deadline: float | None) -> str | None:
        try:
            if deadline is None:
                await self._fallback.acquire()
            else:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._fallback.acquire()
        except TimeoutError:
            return None
        return "local:" + uuid.uuid4().hex

    def release(self, lease: str) -> None:
        if lease.startswith("local:"):
            self._fallback.release()
            return
        task = asyncio.get_running_loop().create_task(self._release(lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, lease: str) -> None:
        with contextlib.suppress(redis.RedisError, OSError):  # else the lease expires by itself
            await self._redis.zrem(self.key, lease)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()


# KEYS[1] the theoretical arrival time (ms); ARGV: interval (ms), max wait (ms, -1: none), ttl (ms).
# GCRA, like connectors.resilience.RateLimiter, on Redis's clock: returns the wait in ms, or -1.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
local max_wait = tonumber(ARGV[2])
if max_wait >= 0 and wait > max_wait then return -1 end
redis.call('SET', KEYS[1], tostring(tat + tonumber(ARGV[1])), 'PX', tonumber(ARGV[3]))
return math.floor(wait)
"""


class RedisRate:
    """A system's call rate for the whole deployment (the helpdesk's ``RATE``): one schedule of call
    slots in Redis. While Redis is unreachable the instance keeps ``rate // expected_instances``."""

    def __init__(self, url: str, name: str, rate: float, *, fallback_rate: float, prefix: str = "cg") -> None:
        self.key = f"{prefix}:rate:{name}"
        self.interval_ms = 1000.0 / rate
        self._fallback = RateLimiter(max(fallback_rate, 0.1))
        self._redis: Any = redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script: Any = self._redis.register_script(_RESERVE)
        self.degraded_until = 0.0

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self.degraded_until

    async def reserve(self, max_wait: float | None) -> float | None:
        if not self.degraded:
            try:
                limit = -1 if max_wait is None else int(max_wait * 1000)
                wait_ms = int(await self._script(keys=[self.key], args=[self.interval_ms, limit, 60_000]))
                return None if wait_ms < 0 else wait_ms / 1000.0
            except (redis.RedisError, OSError) as exc:
                log.warning("shared rate: Redis unreachable (%s); this instance's share", type(exc).__name__)
                self.degraded_until = time.monotonic() + RETRY_REDIS
        return self._fallback.reserve(max_wait)

    async def aclose(self) -> None:
        await self._redis.aclose()


class BreakerBoard:
    """Each instance's circuit states, reported for the whole deployment: every few seconds (and on
    ``/readyz``) an instance writes its states to a Redis hash that expires unless refreshed, so a
    dead instance drops out; ``deployment()`` counts, per system, how many instances have it open,
    half-open or closed. The breakers themselves stay per instance (each sees its own failures)."""

    def __init__(self, url: str, instance: str, *, ttl: float = 15.0, prefix: str = "cg") -> None:
        self.prefix = f"{prefix}:breakers:"
        self.key = self.prefix + instance
        self.ttl_ms = int(ttl * 1000)
        self._redis: Any = redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    async def publish(self, states: dict[str, str]) -> None:
        with contextlib.suppress(redis.RedisError, OSError):  # reported again at the next beat
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.key, mapping=states)
                pipe.pexpire(self.key, self.ttl_ms)
                await pipe.execute()

    async def deployment(self) -> dict[str, Any] | None:
        """``{"instances": n, "breakers": {system: {state: count}}}``; None when Redis cannot say."""
        try:
            keys = [key async for key in self._redis.scan_iter(match=self.prefix + "*", count=100)]
            counts: dict[str, dict[str, int]] = {}
            for key in keys:
                for system, state in (await self._redis.hgetall(key)).items():
                    by_state = counts.setdefault(system.decode(), {})
                    by_state[state.decode()] = by_state.get(state.decode(), 0) + 1
        except (redis.RedisError, OSError):
            return None
        return {"instances": len(keys), "breakers": counts}

    async def aclose(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            await self._redis.delete(self.key)  # a stopping instance leaves the report at once
        await self._redis.aclose()
