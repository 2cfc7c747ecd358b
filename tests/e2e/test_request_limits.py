"""Refused requests — too complex, rate limited, not allow-listed — cost the departments nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from demo.data import DemoExamples
from demo.servers import DemoSystems
from gateway.app import create_app
from gateway.auth import issue_token

from .conftest import ALL_SEEING, SECRET, customer_id, settings_for

# cost: 1 + 50 × (nodes 1 + name 1 + orders (1 + 5 × 1) + tickets (1 + 20 × 1)) = 1451 for n = 50
PAGE = (
    "query($n: Int) { customers(first: $n) { nodes { name orders(first: 5) { orderNo } tickets { id } } } }"
)


def total_calls(systems: DemoSystems) -> int:
    return sum(
        endpoint["count"]
        for name in ("sales", "support", "contracts")
        for endpoint in systems.stats(name)["endpoints"].values()
    )


@asynccontextmanager
async def client_for(systems: DemoSystems, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(systems, **env))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client


def auth(roles: list[str], sub: str = "u-limits") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, sub=sub, roles=roles)}"}


async def test_too_complex_is_refused_without_a_single_upstream_call(systems: DemoSystems) -> None:
    systems.clear_faults()
    async with client_for(systems, CG_MAX_COST="1000", CG_MAX_COST_PER_ROLE="executive=100000") as client:
        systems.reset_stats()
        refused = await client.post(
            "/graphql", json={"query": PAGE, "variables": {"n": 50}}, headers=auth(["finance"])
        )
        assert refused.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert (
            refused.json()["errors"][0]["message"] == "Query cost 1451 exceeds the limit 1000 for your roles."
        )
        assert total_calls(systems) == 0

        allowed = await client.post(
            "/graphql", json={"query": PAGE, "variables": {"n": 50}}, headers=auth(["finance", "executive"])
        )
        body = allowed.json()
        assert "errors" not in body, body
        assert len(body["data"]["customers"]["nodes"]) == 50
        assert total_calls(systems) > 0


async def test_rate_limited_requests_reach_no_system(systems: DemoSystems, examples: DemoExamples) -> None:
    systems.clear_faults()
    query = {
        "query": "query($id: ID!) { customer(id: $id) { name } }",
        "variables": {"id": customer_id(examples.company)},
    }
    async with client_for(systems, CG_RATE_LIMIT_PER_MINUTE="60", CG_RATE_LIMIT_BURST="1") as client:
        systems.reset_stats()
        first = await client.post("/graphql", json=query, headers=auth(ALL_SEEING))
        assert first.json()["data"]["customer"]["name"]
        calls = total_calls(systems)
        second = await client.post("/graphql", json=query, headers=auth(ALL_SEEING))
        assert second.status_code == 429
        assert total_calls(systems) == calls
