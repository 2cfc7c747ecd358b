"""The deployment-wide in-flight bound (``gateway/shared_limits.py``): leases in Redis, expiring, and a
conservative per-instance share while Redis cannot be reached."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from gateway.shared_limits import RedisSlots
from tests.services import need_redis


async def test_leases_bound_the_deployment_and_expire() -> None:
    url = need_redis()
    name = f"test-{uuid.uuid4().hex[:8]}"
    one, two = (RedisSlots(url, name, 2, fallback=1, ttl=1.0) for _ in range(2))  # two "instances"
    try:
        first, second = await one.acquire(1.0), await two.acquire(1.0)
        assert first and second
        assert await one.acquire(0.2) is None  # the deployment's 2 are held
        two.release(second)
        await asyncio.sleep(0.05)
        third = await one.acquire(1.0)
        assert third is not None
        # an instance that dies never releases: its lease expires
        assert await two.acquire(0.1) is None
        await asyncio.sleep(1.1)
        assert await two.acquire(0.5) is not None
        assert not one.degraded
    finally:
        await one.aclose()
        await two.aclose()


async def test_without_redis_an_instance_keeps_its_share() -> None:
    slots = RedisSlots("redis://127.0.0.1:1/0", "contracts", 4, fallback=4 // 3)
    try:
        lease = await slots.acquire(1.0)
        assert lease is not None and lease.startswith("local:") and slots.degraded
        assert await slots.acquire(0.1) is None  # its share is 1 of the 4
        slots.release(lease)
        assert await slots.acquire(0.1) is not None
    finally:
        await slots.aclose()


@pytest.mark.services
async def test_readyz_and_metrics_say_when_the_share_is_used() -> None:
    import redis.asyncio as aioredis

    from gateway.shared_limits import _ACQUIRE

    from .gateway_client import gateway

    async with gateway(CG_REDIS_URL=need_redis(), lifespan=True) as client:
        slots = client._transport.app.state.gateway.shared_slots  # type: ignore[attr-defined]
        assert slots is not None
        assert (await client.get("/readyz")).json()["sharedLimits"] == {
            "contracts": "redis",
            "support": "redis",
        }
        # Redis goes away (its address now refuses connections)
        await slots._redis.aclose()
        slots._redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        slots._script = slots._redis.register_script(_ACQUIRE)
        lease = await slots.acquire(0.5)
        assert lease is not None and lease.startswith("local:")
        ready = (await client.get("/readyz")).json()
        metrics = (await client.get("/metrics")).text
        slots.release(lease)
    assert ready["sharedLimits"] == {"contracts": "fallback", "support": "redis"}
    assert 'cg_shared_limit_fallback{system="contracts"} 1.0' in metrics


async def test_a_shared_rate_spaces_calls_across_instances_and_falls_back() -> None:
    from gateway.shared_limits import RedisRate

    url = need_redis()
    name = f"test-{uuid.uuid4().hex[:8]}"
    one, two = (RedisRate(url, name, 10.0, fallback_rate=5.0) for _ in range(2))
    try:
        waits = [await (one if i % 2 else two).reserve(None) for i in range(6)]  # 6 calls, 2 instances
        assert waits[0] == 0.0 and all(w is not None for w in waits)
        assert waits[-1] is not None and waits[-1] >= 0.4  # the 6th call's slot is ~0.5 s out: 10/s in all
        assert await one.reserve(0.1) is None  # no slot within 0.1 s: refused, nothing booked
    finally:
        await one.aclose()
        await two.aclose()
    down = RedisRate("redis://127.0.0.1:1/0", "support", 10.0, fallback_rate=10.0 / 3)
    try:
        assert await down.reserve(None) == 0.0 and down.degraded
        second = await down.reserve(None)
        assert second is not None and second > 0.25  # this instance's share: ~3.3 calls a second
    finally:
        await down.aclose()


async def test_readyz_reports_the_breakers_of_every_instance() -> None:
    """Breakers stay per instance (each sees its own failures), but every instance's /readyz says how
    many instances of the deployment have each system's circuit open."""
    from .gateway_client import bearer, gateway

    url = need_redis()
    async with (
        gateway(CG_REDIS_URL=url, CG_BREAKER_FAILURES="100", lifespan=True) as one,  # stays closed
        gateway(CG_REDIS_URL=url, CG_BREAKER_FAILURES="1", lifespan=True) as two,
    ):
        # through instance two, a customer read: the (unreachable) sales system opens its circuit there
        await two.post(
            "/graphql", json={"query": "{ customers(first: 1) { totalCount } }"}, headers=bearer(["finance"])
        )
        await two.get("/readyz")  # publishes two's states now (otherwise within 5 s)
        seen = (await one.get("/readyz")).json()["deployment"]
    assert seen["instances"] >= 2
    assert seen["breakers"]["sales"].get("open", 0) >= 1
    assert seen["breakers"]["sales"].get("closed", 0) >= 1  # instance one's own circuit is closed
