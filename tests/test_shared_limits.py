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
        assert (await client.get("/readyz")).json()["sharedLimits"] == {"contracts": "redis"}
        # Redis goes away (its address now refuses connections)
        await slots._redis.aclose()
        slots._redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        slots._script = slots._redis.register_script(_ACQUIRE)
        lease = await slots.acquire(0.5)
        assert lease is not None and lease.startswith("local:")
        ready = (await client.get("/readyz")).json()
        metrics = (await client.get("/metrics")).text
        slots.release(lease)
    assert ready["sharedLimits"] == {"contracts": "fallback"}
    assert 'cg_shared_limit_fallback{system="contracts"} 1.0' in metrics
