"""The register serves 4 calls at a time. A call the gateway gives up on (its timeout, the request's
deadline) must keep its slot until the register has answered: the outside review saw 5 in flight at
the register and 22 at the helpdesk (bound 16) because a timed-out call freed its slot at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from demo.servers import DemoSystems
from gateway.app import create_app

from .conftest import ALL_SEEING, Graph, settings_for
from .running import in_memory_copy


@pytest.fixture(scope="module")
def slow_register(systems: DemoSystems) -> Iterator[DemoSystems]:
    with in_memory_copy(
        systems,
        contracts_latency_ms=(1200.0, 1200.0),  # inside the register's own 4-in-flight gate
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def graph(slow_register: DemoSystems, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Graph]:
    folder: Path = tmp_path_factory.mktemp("in-flight")
    app = create_app(
        settings_for(
            slow_register,
            CG_DATABASE_URL=f"sqlite+aiosqlite:///{folder}/gateway.db",
            CG_UPSTREAM_TIMEOUT="0.3",  # every register call is given up on long before it answers
            CG_REQUEST_DEADLINE="1.0",
            CG_BREAKER_FAILURES="1000",
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30
        ) as client,
    ):
        yield Graph(client)


def _tax_ids(systems: DemoSystems, count: int) -> list[str]:
    accounts = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"per_page": 200},
        headers=systems.auth_headers("sales"),
    ).json()["data"]
    return [a["account_no"] for a in accounts if a["tax_id"]][:count]


async def test_the_register_never_sees_more_than_its_four_calls(
    graph: Graph, slow_register: DemoSystems
) -> None:
    slow_register.reset_stats()
    query = "query($no: String!) { customer(accountNo: $no) { contracts { contractId } } }"
    customers = _tax_ids(slow_register, 24)
    answers = await asyncio.gather(
        *(graph.query(query, {"no": no}, roles=ALL_SEEING) for no in customers)  # 24 requests at once
    )
    assert all(a["data"]["customer"]["contracts"] is None for a in answers)  # each gave up (timeout)
    await asyncio.sleep(1.5)  # the abandoned calls finish at the register
    stats = slow_register.stats("contracts")
    assert stats["statuses"].get("503", 0) == 0, stats  # "busy": a fifth call reached the register
    assert max(e["peak_in_flight"] for e in stats["endpoints"].values()) <= 4, stats
