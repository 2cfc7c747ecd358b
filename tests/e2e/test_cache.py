"""The cross-request cache: warm requests skip the systems, the policy still applies per caller,
concurrent misses make one call, writes evict at once, and evictions reach other processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems
from gateway.app import create_app
from gateway.cache import CACHE_TTLS, EntityCache, parse_ttls
from tests.services import need_redis

from .conftest import ALL_SEEING, Graph, customer_id, settings_for
from .test_customer360 import QUERY as EVERY_FIELD

QUERY = "query($id: ID!) { customer(id: $id) { name email phone orders(first: 2) { orderNo } tickets(first: 2) { id } contracts { contractId } } }"


@pytest.fixture(scope="module")
async def cached(systems: DemoSystems) -> AsyncIterator[Graph]:
    app = create_app(settings_for(systems, CG_CACHE="true"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield Graph(client)


def total_calls(systems: DemoSystems) -> int:
    return sum(systems.stats(name)["count"] for name in ("sales", "support", "contracts"))


async def test_a_warm_request_makes_no_upstream_call(
    cached: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    variables = {"id": customer_id(examples.company)}
    cold = await cached.query(QUERY, variables, roles=ALL_SEEING)
    systems.reset_stats()
    warm = await cached.query(QUERY, variables, roles=ALL_SEEING)
    assert warm == cold
    assert total_calls(systems) == 0


async def test_the_policy_applies_after_the_cache(
    cached: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    variables = {"id": customer_id(examples.pool)}
    clear = await cached.query(QUERY, variables, roles=ALL_SEEING)
    systems.reset_stats()
    rep = await cached.query(QUERY, variables, roles=["sales_rep"], sub=examples.rep)
    assert total_calls(systems) == 0  # served from the entries the first caller's request cached
    email = clear["data"]["customer"]["email"]
    assert rep["data"]["customer"]["email"] == email[0] + "***@" + email.split("@")[1]
    assert email not in str(rep)
    assert rep["data"]["customer"]["orders"] is None


FILTERED = """query($id: ID!) { customer(id: $id) {
  tickets(first: 3, status: [OPEN, PENDING]) { id status } contracts(status: [ACTIVE]) { contractId status }
  recycleAt lastContactAt dormant owner { userId } } }"""


# Every entry outlives the test (at the default TTLs a 30-s entry could expire halfway and be fetched).
LONG_TTLS = ",".join(f"{resource}=3600" for resource in CACHE_TTLS)


@pytest.fixture(scope="module")
async def long_cached(systems: DemoSystems) -> AsyncIterator[Graph]:
    app = create_app(settings_for(systems, CG_CACHE="true", CG_CACHE_TTLS=LONG_TTLS))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield Graph(client)


async def test_answers_from_the_cache_equal_fresh_ones_for_every_caller(
    long_cached: Graph, graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    """Warm fields resolve synchronously from the cache (no batch, no task); they must answer exactly
    what a gateway without a cache answers, for every kind of customer and every role's policy."""
    cached = long_cached
    callers = [
        (ALL_SEEING, "u-steward"),
        (["sales_rep"], examples.rep),
        (["support_agent"], "u-support"),
        (["finance"], "u-finance"),
        (["legal"], "u-legal"),
    ]
    accounts = [
        examples.company,
        examples.person,
        examples.pool,
        examples.owned,
        examples.dormant,
        examples.no_email,
        examples.confidential_contract,
    ]
    for account in accounts:
        variables = {"id": customer_id(account)}
        for query in (EVERY_FIELD, FILTERED):
            primed = await cached.query(query, variables, roles=ALL_SEEING)  # fills the cache
            assert "errors" not in primed, primed
            systems.reset_stats()
            for roles, sub in callers:
                fresh = await graph.query(query, variables, roles=roles, sub=sub)
                before = total_calls(systems)
                warm = await cached.query(query, variables, roles=roles, sub=sub)
                assert warm == fresh, (account, roles)
                assert total_calls(systems) == before  # the cached gateway asked no system


async def test_concurrent_misses_make_one_call(
    cached: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    systems.set_faults("sales", latency_ms=100)
    try:
        systems.reset_stats()
        variables = {"id": customer_id(examples.heavy_tickets[-1])}
        results = await asyncio.gather(*(cached.query(QUERY, variables, roles=ALL_SEEING) for _ in range(10)))
    finally:
        systems.clear_faults()
    assert all(r == results[0] for r in results)
    endpoints = systems.stats("sales")["endpoints"]
    assert endpoints["GET /api/v1/accounts"]["count"] == 1
    assert endpoints["GET /api/v1/orders"]["count"] == 1


async def test_a_write_evicts_at_once(cached: Graph, systems: DemoSystems, examples: DemoExamples) -> None:
    variables = {"id": customer_id(examples.no_phone)}
    before = await cached.query(
        "query($id: ID!) { customer(id: $id) { title } }", variables, roles=ALL_SEEING
    )
    result = await cached.query(
        "mutation($input: UpdateCustomerContactInput!) { updateCustomerContact(input: $input) { customer { title } } }",
        {"input": {"customerId": variables["id"], "title": "缓存测试经理"}},
        roles=["data_steward"],
    )
    assert "errors" not in result, result
    after = await cached.query("query($id: ID!) { customer(id: $id) { title } }", variables, roles=ALL_SEEING)
    assert before["data"]["customer"]["title"] != "缓存测试经理"
    assert after["data"]["customer"]["title"] == "缓存测试经理"


def test_ttls_are_configurable() -> None:
    assert parse_ttls("orders=5, contracts=0")["orders"] == 5
    with pytest.raises(ValueError, match="resources"):
        parse_ttls("ordres=5")


async def test_evictions_reach_other_processes_through_redis() -> None:
    url = need_redis()
    one, two = EntityCache(), EntityCache()
    await one.connect(url)
    await two.connect(url)
    try:

        async def fetch(keys: list[str]) -> dict[str, str]:
            return {key: f"value of {key}" for key in keys}

        await one.wrap("account", fetch)(["A1"])
        await two.wrap("account", fetch)(["A1"])
        assert two.peek("account", "A1") == "value of A1"
        one.evict_customer("A1")
        for _ in range(50):
            if two.peek("account", "A1") is None:
                break
            await asyncio.sleep(0.02)
        assert two.peek("account", "A1") is None
        assert one.peek("account", "A1") is None
    finally:
        await one.aclose()
        await two.aclose()
