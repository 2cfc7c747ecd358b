"""Rate limiting per caller: RATE_LIMITED with Retry-After, per sub (per client IP without a token)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from starlette.applications import Starlette

from gateway.ratelimit import Limiter, LocalBuckets

from .gateway_client import GQL, assert_error_shape, bearer, codes, gateway, make_app
from .services import need_redis

TYPENAME = {"query": "{ __typename }"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock=clock)
    assert [buckets.take_now("a", 60, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take_now("a", 60, 3) == pytest.approx(1.0)  # one a second
    assert buckets.take_now("b", 60, 3) == 0.0  # another caller has its own bucket
    clock.now += 1.0
    assert buckets.take_now("a", 60, 3) == 0.0
    assert buckets.take_now("a", 60, 3) > 0
    clock.now += 3600  # a full bucket never holds more than the burst
    assert [buckets.take_now("a", 60, 3) == 0.0 for _ in range(4)] == [True, True, True, False]


def test_buckets_are_bounded() -> None:
    buckets = LocalBuckets(max_keys=10, clock=Clock())
    for n in range(100):
        buckets.take_now(f"caller-{n}", 60, 1)
    assert len(buckets._buckets) == 10


async def test_roles_may_have_their_own_rate() -> None:
    clock = Clock()
    limiter = Limiter(60, 2, {"service_app": 600}, LocalBuckets(clock=clock))
    person = [await limiter.check("sub:u-1", frozenset({"sales_rep"})) for _ in range(3)]
    service = [await limiter.check("sub:svc", frozenset({"service_app", "sales_rep"})) for _ in range(21)]
    assert person == [0, 0, 1]
    assert service[:20] == [0] * 20 and service[20] == 1  # ten times the rate, ten times the burst


@pytest.mark.parametrize("accept", ["application/json", GQL])
async def test_too_many_requests_is_429_with_retry_after(accept: str) -> None:
    async with gateway(CG_RATE_LIMIT_PER_MINUTE="6", CG_RATE_LIMIT_BURST="2") as client:
        headers = {"accept": accept, **bearer(sub="u-busy")}
        answers = [await client.post("/graphql", json=TYPENAME, headers=headers) for _ in range(3)]
        other = await client.post("/graphql", json=TYPENAME, headers=bearer(sub="u-calm"))
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.headers["retry-after"] == "10"  # 6 a minute: one every 10 s
    assert refused.headers["content-type"] == f"{accept}; charset=utf-8"
    body = refused.json()
    assert_error_shape(body)
    assert "data" not in body
    assert codes(body) == ["RATE_LIMITED"]
    assert body["errors"][0]["extensions"]["retryAfter"] == 10
    assert other.status_code == 200


async def test_callers_without_a_token_are_limited_per_client_address() -> None:
    env = {"CG_RATE_LIMIT_PER_MINUTE": "60", "CG_RATE_LIMIT_BURST": "1"}
    async with gateway(env, client_address=("127.0.0.2", 40000)) as first_ip:
        assert (await first_ip.post("/graphql", json=TYPENAME)).status_code == 200
        assert (await first_ip.post("/graphql", json=TYPENAME)).status_code == 429
        # a bad token does not buy a fresh bucket
        bad = await first_ip.post("/graphql", json=TYPENAME, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 429


async def test_rate_limiting_can_be_switched_off() -> None:
    async with gateway(CG_RATE_LIMIT_PER_MINUTE="0", CG_RATE_LIMIT_BURST="1") as client:
        statuses = {(await client.post("/graphql", json=TYPENAME)).status_code for _ in range(20)}
    assert statuses == {200}


async def statuses_from(apps: list[Starlette], sub: str) -> list[int]:
    statuses = []
    for app in apps:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client:
            statuses.append(
                (await client.post("/graphql", json=TYPENAME, headers=bearer(sub=sub))).status_code
            )
    return statuses


@pytest.mark.services
async def test_processes_share_their_buckets_through_redis() -> None:
    url = need_redis()
    sub = f"u-{uuid.uuid4().hex}"  # a fresh bucket in a shared Redis
    env = {"CG_REDIS_URL": url, "CG_RATE_LIMIT_PER_MINUTE": "60", "CG_RATE_LIMIT_BURST": "2"}
    one, two = make_app(**env), make_app(**env)
    try:
        assert await statuses_from([one, two, one], sub) == [200, 200, 429]
    finally:
        for app in (one, two):
            await app.state.gateway.rate_limiter.aclose()


async def test_an_unreachable_redis_falls_back_to_local_buckets() -> None:
    app = make_app(
        CG_REDIS_URL="redis://127.0.0.1:9/0", CG_RATE_LIMIT_PER_MINUTE="60", CG_RATE_LIMIT_BURST="1"
    )
    try:
        assert await statuses_from([app, app], "u-fallback") == [200, 429]
    finally:
        await app.state.gateway.rate_limiter.aclose()
