"""The gateway makes the minimum number of upstream calls, in the fewest sequential waves."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import ALL_SEEING, Graph, customer_id

EVERY_FIELD = """
  id accountNo kind name contactName title email phone address taxId region status inPool createdAt
  owner { userId name }
  orders(first: 5) { orderNo total { amount } }
  payments(first: 5) { paymentId amount { amount } }
  opportunities { opportunityId stage }
  activities(first: 5) { activityId occurredAt }
  tickets(first: 5) { id status }
  satisfaction { rated average }
  contracts { contractId status }
  lastContactAt dormant
"""


def calls(systems: DemoSystems) -> dict[str, dict[str, int]]:
    return {
        name: {endpoint: e["count"] for endpoint, e in systems.stats(name)["endpoints"].items()}
        for name in ("sales", "support", "contracts")
    }


@pytest.fixture
def fresh_stats(systems: DemoSystems) -> Iterator[DemoSystems]:
    systems.clear_faults()
    systems.reset_stats()
    yield systems
    systems.clear_faults()


async def test_one_customer_every_field_is_nine_calls(
    graph: Graph, fresh_stats: DemoSystems, examples: DemoExamples
) -> None:
    result = await graph.query(
        f"query($id: ID!) {{ customer(id: $id) {{ {EVERY_FIELD} }} }}",
        {"id": customer_id(examples.company)},
        roles=ALL_SEEING,
    )
    assert "errors" not in result
    assert result["data"]["customer"]["owner"] is not None
    assert calls(fresh_stats) == {
        "sales": {
            "GET /api/v1/accounts": 1,
            "GET /api/v1/orders": 1,
            "GET /api/v1/payments": 1,
            "GET /api/v1/opportunities": 1,
            "GET /api/v1/activities": 1,
            "GET /api/v1/users": 1,
        },
        "support": {"POST /v2/tickets/search": 1, "GET /v2/satisfaction": 1},
        "contracts": {"GET /contracts": 1},
    }


async def test_one_customer_takes_two_waves(
    graph: Graph, fresh_stats: DemoSystems, examples: DemoExamples
) -> None:
    latency = 150
    for name in ("sales", "support", "contracts"):
        fresh_stats.set_faults(name, latency_ms=latency)
    started = time.perf_counter()
    result = await graph.query(
        f"query($id: ID!) {{ customer(id: $id) {{ {EVERY_FIELD} }} }}",
        {"id": customer_id(examples.company)},
        roles=ALL_SEEING,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert "errors" not in result
    # Wave 1: the account and the four account_no-keyed resources, all at once.
    assert fresh_stats.stats("sales")["peak_in_flight"] == 5
    # Wave 2 (owner, tickets, satisfaction, contracts) starts once the account is known; a third
    # wave would take at least 3 x latency.
    assert 2 * latency <= elapsed_ms < 2.8 * latency


async def test_page_of_fifty_every_field_makes_the_minimum_calls(
    graph: Graph, fresh_stats: DemoSystems
) -> None:
    result = await graph.query(
        f"{{ customers(first: 50) {{ edges {{ node {{ {EVERY_FIELD} }} }} }} }}", roles=ALL_SEEING
    )
    assert "errors" not in result
    nodes = [edge["node"] for edge in result["data"]["customers"]["edges"]]
    assert len(nodes) == 50
    emails = sorted({n["email"] for n in nodes if n["email"]})
    tax_ids = {n["taxId"] for n in nodes if n["taxId"]}
    tickets = httpx.post(
        fresh_stats.support_url + "/v2/tickets/search",
        json={"requester_emails": emails, "limit": 500},
        headers=fresh_stats.auth_headers("support"),
    )
    ticket_pages = 1
    while tickets.json()["next_cursor"]:
        ticket_pages += 1
        tickets = httpx.post(
            fresh_stats.support_url + "/v2/tickets/search",
            json={"requester_emails": emails, "limit": 500, "cursor": tickets.json()["next_cursor"]},
            headers=fresh_stats.auth_headers("support"),
        )
    made = calls(fresh_stats)
    made["support"]["POST /v2/tickets/search"] -= ticket_pages  # the oracle's own calls above
    assert made == {
        "sales": {
            "GET /api/v1/accounts": 1,  # the list call
            "GET /api/v1/orders": 1,
            "GET /api/v1/payments": 1,
            "GET /api/v1/opportunities": 1,
            "GET /api/v1/activities": 1,
            "GET /api/v1/users": 1,
        },
        "support": {"POST /v2/tickets/search": ticket_pages, "GET /v2/satisfaction": 1},
        "contracts": {"GET /contracts": len(tax_ids)},
    }
    assert fresh_stats.stats("contracts")["peak_in_flight"] <= 4


async def test_register_never_sees_more_than_four_calls_in_flight(
    graph: Graph, fresh_stats: DemoSystems
) -> None:
    fresh_stats.set_faults("contracts", latency_ms=40)
    result = await graph.query(
        "{ customers(first: 60) { edges { node { contracts { contractId } } } } }", roles=ALL_SEEING
    )
    assert "errors" not in result
    stats = fresh_stats.stats("contracts")
    assert stats["statuses"] == {"200": stats["count"]}  # no 503 busy
    assert stats["peak_in_flight"] == 4


async def test_fields_not_asked_for_are_not_fetched(
    graph: Graph, fresh_stats: DemoSystems, examples: DemoExamples
) -> None:
    await graph.query(
        "query($id: ID!) { customer(id: $id) { name tickets { id } } }",
        {"id": customer_id(examples.company)},
        roles=ALL_SEEING,
    )
    assert calls(fresh_stats) == {
        "sales": {"GET /api/v1/accounts": 1},
        "support": {"POST /v2/tickets/search": 1},
        "contracts": {},
    }
