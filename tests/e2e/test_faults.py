"""Faults at the systems: bounded latency, partial data, the right codes, breakers that open and
close, and never more load on a system than configured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems
from gateway.app import create_app

from .conftest import ALL_SEEING, Graph, customer_id, settings_for

DEADLINE = 1.5
QUERY = "query($id: ID!) { customer(id: $id) { name orders(first: 1) { orderNo } tickets(first: 1) { id } contracts { contractId } } }"


@pytest.fixture(scope="module")
async def app_client(systems: DemoSystems) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        systems,
        CG_REQUEST_DEADLINE=str(DEADLINE),
        CG_UPSTREAM_TIMEOUT="0.5",
        CG_BREAKER_FAILURES="3",
        CG_BREAKER_COOLDOWN="1.0",
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30
        ) as client,
    ):
        yield client


@pytest.fixture
def graph(app_client: httpx.AsyncClient) -> Graph:
    return Graph(app_client)


@pytest.fixture(autouse=True)
def clean(systems: DemoSystems) -> Iterator[None]:
    systems.clear_faults()
    systems.reset_stats()
    yield
    systems.clear_faults()


async def timed(graph: Graph, account_no: str) -> tuple[dict[str, object], float]:
    started = time.perf_counter()
    result = await graph.query(QUERY, {"id": customer_id(account_no)}, roles=ALL_SEEING)
    return result, time.perf_counter() - started


def errors_by_field(result: dict[str, object]) -> dict[str, dict[str, str]]:
    return {e["path"][-1]: e["extensions"] for e in result.get("errors", [])}  # type: ignore[attr-defined,index]


async def test_hang_is_bounded_by_the_deadline(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    systems.set_faults("contracts", hang=True)
    result, seconds = await timed(graph, examples.company)
    assert seconds < DEADLINE + 0.5
    customer = result["data"]["customer"]  # type: ignore[index]
    assert customer["name"] and customer["orders"] and customer["contracts"] is None
    assert errors_by_field(result) == {"contracts": {"code": "UPSTREAM_UNAVAILABLE", "system": "contracts"}}
    assert result["extensions"]["sources"] == {"sales": "ok", "support": "ok", "contracts": "timeout"}  # type: ignore[index]


async def test_a_slow_system_times_out_alone(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    systems.set_faults("support", latency_ms=3000)
    result, seconds = await timed(graph, examples.company)
    assert seconds < DEADLINE + 0.5
    assert errors_by_field(result) == {"tickets": {"code": "UPSTREAM_UNAVAILABLE", "system": "support"}}
    assert result["data"]["customer"]["contracts"] is not None  # type: ignore[index]


async def test_flapping_reads_are_retried(graph: Graph, systems: DemoSystems, examples: DemoExamples) -> None:
    systems.set_faults("sales", error_rate=0.3)
    results = [await timed(graph, examples.company) for _ in range(10)]
    complete = sum(1 for result, _ in results if "errors" not in result)
    assert complete >= 8  # three attempts each: a read fails only when all three do (0.3³ per call)
    assert all(seconds < DEADLINE + 0.5 for _, seconds in results)
    assert systems.stats("sales")["statuses"].get("503", 0) > 0  # the faults were really there


async def test_breaker_opens_fails_fast_and_closes_again(
    graph: Graph, app_client: httpx.AsyncClient, systems: DemoSystems, examples: DemoExamples
) -> None:
    systems.set_faults("support", down=True)
    for _ in range(3):
        await timed(graph, examples.company)
    ready = (await app_client.get("/readyz")).json()
    assert ready["systems"]["support"]["circuit"]["state"] == "open"
    calls_before = systems.stats("support")["count"]
    result, seconds = await timed(graph, examples.company)
    assert seconds < 0.5  # fails fast while open
    assert systems.stats("support")["count"] == calls_before  # nothing reached the system
    assert result["extensions"]["sources"]["support"] == "circuit_open"  # type: ignore[index]
    assert result["data"]["customer"]["orders"]  # type: ignore[index]
    metrics = (await app_client.get("/metrics")).text
    assert 'cg_breaker_state{system="support"} 2.0' in metrics

    systems.clear_faults()
    await asyncio.sleep(1.1)  # the cool-down
    result, _ = await timed(graph, examples.company)
    assert "errors" not in result
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["systems"]["support"]["circuit"]["state"] == "closed"


async def test_readyz_says_which_system_is_down(app_client: httpx.AsyncClient, systems: DemoSystems) -> None:
    assert (await app_client.get("/readyz")).status_code == 200
    systems.set_faults("contracts", down=True)
    response = await app_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["systems"]["contracts"]["reachable"] is False
    assert response.json()["systems"]["sales"]["reachable"] is True
    assert response.json()["database"] == {"reachable": True}
    assert systems.contracts_url not in response.text


async def test_register_saturation_never_exceeds_four(graph: Graph, systems: DemoSystems) -> None:
    """Five pages at once want ~150 register calls of 30 ms through 4 slots: more than the deadline
    allows. The answers come back in time, with what the register could serve, and it never sees a
    fifth call in flight."""
    systems.set_faults("contracts", latency_ms=30)
    query = "{ customers(first: 40) { edges { node { name contracts { contractId } } } } }"
    started = time.perf_counter()
    results = await asyncio.gather(*(graph.query(query, roles=ALL_SEEING) for _ in range(5)))
    assert time.perf_counter() - started < DEADLINE + 1.0
    for result in results:
        assert len(result["data"]["customers"]["edges"]) == 40
        codes = {(e["extensions"]["code"], e["extensions"].get("system")) for e in result.get("errors", [])}
        assert codes <= {("UPSTREAM_UNAVAILABLE", "contracts")}
    stats = systems.stats("contracts")
    assert stats["peak_in_flight"] <= 4
    assert set(stats["statuses"]) == {"200"}


async def test_a_burst_stays_under_the_helpdesks_rate(systems: DemoSystems, examples: DemoExamples) -> None:
    """The helpdesk's contract: RATE calls a second per token, 429 past it. The gateway keeps under it."""
    with DemoSystems(
        systems.data_dir,
        customers=systems.customers,
        seed=systems.seed,
        sales_port=0,
        support_port=0,
        contracts_port=0,
        support_rate=20,
    ) as slow_desk:
        app = create_app(settings_for(slow_desk, CG_SUPPORT_MAX_RATE="15", CG_REQUEST_DEADLINE="10"))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30
            ) as client,
        ):
            graph = Graph(client)
            accounts = [
                *list(examples.heavy_tickets),
                examples.company,
                examples.person,
                examples.mixed_case_email,
            ]
            query = (
                "query($id: ID!) { customer(id: $id) { tickets(first: 1) { id } satisfaction { rated } } }"
            )
            results = await asyncio.gather(
                *(graph.query(query, {"id": customer_id(a)}, roles=ALL_SEEING) for a in accounts * 3)
            )
        assert all("errors" not in r for r in results)
        assert "429" not in slow_desk.stats("support")["statuses"]


async def test_dormant_is_never_guessed_while_the_helpdesk_is_down(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    """The review: with the helpdesk down a customer became ``dormant: true`` with no error. A recent
    contact in a system that answered still decides (not dormant); otherwise null and the error."""
    query = "query($id: ID!) { customer(id: $id) { email dormant lastContactAt activities(first: 1) { occurredAt } } }"
    healthy = await graph.query(
        query, {"id": customer_id(examples.dormant)}, roles=["sales_manager", *ALL_SEEING]
    )
    assert healthy["data"]["customer"]["dormant"] is True and healthy["data"]["customer"]["email"]
    active = await graph.query(query, {"id": customer_id(examples.company)}, roles=ALL_SEEING)
    assert active["data"]["customer"]["dormant"] is False

    systems.set_faults("support", down=True)
    outage = await graph.query(query, {"id": customer_id(examples.dormant)}, roles=ALL_SEEING)
    assert outage["data"]["customer"]["dormant"] is None
    assert outage["data"]["customer"]["lastContactAt"] is None
    failed = {tuple(e["path"]): e["extensions"] for e in outage["errors"]}
    assert failed[("customer", "dormant")]["code"] == "UPSTREAM_UNAVAILABLE"
    assert failed[("customer", "dormant")]["system"] == "support"
    assert failed[("customer", "lastContactAt")]["code"] == "UPSTREAM_UNAVAILABLE"
    still = await graph.query(query, {"id": customer_id(examples.company)}, roles=ALL_SEEING)
    [latest] = still["data"]["customer"]["activities"]
    age = datetime.now(UTC) - datetime.fromisoformat(latest["occurredAt"].replace("Z", "+00:00"))
    assert age < timedelta(days=365), "the example company should have a recent activity"
    assert still["data"]["customer"]["dormant"] is False  # a recent activity decides it without the helpdesk
