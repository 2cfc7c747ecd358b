"""Writes: policy write rules, idempotency, optimistic concurrency, answers through the read policy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import Graph, customer_id

UPDATE = """mutation($input: UpdateCustomerContactInput!) {
  updateCustomerContact(input: $input) { customer { accountNo version title email phone } } }"""


def _accounts(systems: DemoSystems, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"per_page": 200, "page": 2, **params},
        headers=systems.auth_headers("sales"),
    )
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _raw(systems: DemoSystems, account_no: str) -> dict[str, Any]:
    [account] = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"ids": account_no},
        headers=systems.auth_headers("sales"),
    ).json()["data"]
    return account  # type: ignore[no-any-return]


@pytest.fixture
def target(systems: DemoSystems) -> dict[str, Any]:
    """A company customer with an e-mail that no read test depends on (page 2 of the list)."""
    return next(a for a in _accounts(systems) if a["email"] and a["tax_id"] and a["owner_id"])


@pytest.mark.parametrize("role", ["support_agent", "data_steward"])
async def test_contact_change_by_allowed_roles(
    graph: Graph, systems: DemoSystems, target: dict[str, Any], role: str
) -> None:
    result = await graph.query(
        UPDATE,
        {
            "input": {
                "customerId": customer_id(target["account_no"]),
                "title": f"Head of {role}",
                "version": None,
            }
        },
        roles=[role],
    )
    assert "errors" not in result, result
    customer = result["data"]["updateCustomerContact"]["customer"]
    assert customer["title"] == f"Head of {role}"
    assert _raw(systems, target["account_no"])["title"] == f"Head of {role}"


@pytest.mark.parametrize("role", ["sales_rep", "sales_manager", "finance", "legal", "executive", "auditor"])
async def test_contact_change_refused_for_other_roles(
    graph: Graph, systems: DemoSystems, target: dict[str, Any], role: str
) -> None:
    before = _raw(systems, target["account_no"])
    result = await graph.query(
        UPDATE,
        {"input": {"customerId": customer_id(target["account_no"]), "title": "Hacked"}},
        roles=[role],
        sub=target["owner_id"] if role == "sales_rep" else "u-x",
        region=target["region"],
    )
    assert result["data"]["updateCustomerContact"] is None
    assert result["errors"][0]["extensions"]["code"] in {"FORBIDDEN", "NOT_FOUND"}
    assert _raw(systems, target["account_no"]) == before


async def test_stale_version_is_a_conflict(
    graph: Graph, systems: DemoSystems, target: dict[str, Any]
) -> None:
    version = _raw(systems, target["account_no"])["version"]
    first = await graph.query(
        UPDATE,
        {"input": {"customerId": customer_id(target["account_no"]), "title": "v-next", "version": version}},
        roles=["data_steward"],
    )
    assert first["data"]["updateCustomerContact"]["customer"]["version"] == version + 1
    stale = await graph.query(
        UPDATE,
        {
            "input": {
                "customerId": customer_id(target["account_no"]),
                "title": "lost update",
                "version": version,
            }
        },
        roles=["data_steward"],
    )
    assert stale["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert _raw(systems, target["account_no"])["title"] == "v-next"


async def test_idempotency_key_makes_a_retry_safe(
    graph: Graph, systems: DemoSystems, target: dict[str, Any]
) -> None:
    query = """mutation($input: LogActivityInput!) { logActivity(input: $input) { activity { activityId subject } } }"""
    variables = {
        "input": {
            "customerId": customer_id(target["account_no"]),
            "type": "CALL",
            "subject": "Follow-up",
            "idempotencyKey": "k-123",
        }
    }
    first = await graph.query(query, variables, roles=["support_agent"])
    await asyncio.sleep(1.1)  # a client's retry comes later: the activity's default time must not move
    again = await graph.query(query, variables, roles=["support_agent"])
    assert "errors" not in first, first
    assert "errors" not in again, again
    assert (
        first["data"]["logActivity"]["activity"]["activityId"]
        == again["data"]["logActivity"]["activity"]["activityId"]
    )
    activities = httpx.get(
        systems.sales_url + "/api/v1/activities",
        params={"account_nos": target["account_no"]},
        headers=systems.auth_headers("sales"),
    ).json()["data"]
    assert sum(1 for a in activities if a["subject"] == "Follow-up") == 1


async def test_rep_logs_activity_on_own_customer_not_on_pool(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    query = """mutation($input: LogActivityInput!) { logActivity(input: $input) { activity { byUser type } customer { accountNo } } }"""
    own = await graph.query(
        query,
        {"input": {"customerId": customer_id(examples.owned), "type": "VISIT", "subject": "Visit"}},
        roles=["sales_rep"],
        sub=examples.rep,
    )
    assert own["data"]["logActivity"]["activity"] == {"byUser": examples.rep, "type": "VISIT"}
    pool = await graph.query(
        query,
        {"input": {"customerId": customer_id(examples.pool), "type": "VISIT", "subject": "Visit"}},
        roles=["sales_rep"],
        sub=examples.rep,
    )
    assert pool["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "logActivity" in pool["errors"][0]["message"]


async def test_open_ticket_and_read_it_back_through_the_policy(
    graph: Graph, systems: DemoSystems, target: dict[str, Any]
) -> None:
    query = """mutation($input: OpenTicketInput!) { openTicket(input: $input) { ticket { id subject requesterEmail status } customer { email } } }"""
    result = await graph.query(
        query,
        {
            "input": {
                "customerId": customer_id(target["account_no"]),
                "subject": "发票问题",
                "body": "请重开发票",
                "category": "REQUEST",
            }
        },
        roles=["support_agent"],
    )
    assert "errors" not in result, result
    ticket = result["data"]["openTicket"]["ticket"]
    assert ticket["subject"] == "发票问题" and ticket["status"] == "NEW"
    assert ticket["requesterEmail"] == result["data"]["openTicket"]["customer"]["email"]
    refused = await graph.query(
        query,
        {"input": {"customerId": customer_id(target["account_no"]), "subject": "x", "body": "y"}},
        roles=["finance"],
    )
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_assign_owner_by_manager_in_region_only(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    pool = _accounts(systems, unowned="true", page=1)[-1]  # the last one: no read test uses it
    query = """mutation($input: AssignOwnerInput!) { assignOwner(input: $input) { customer { inPool owner { userId } } } }"""
    variables = {"input": {"customerId": customer_id(pool["account_no"]), "ownerId": examples.rep}}
    other_region = next(r for r in ("east", "north", "south", "west", "central") if r != pool["region"])
    outside = await graph.query(query, variables, roles=["sales_manager"], sub="u-m", region=other_region)
    assert outside["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    inside = await graph.query(query, variables, roles=["sales_manager"], sub="u-m", region=pool["region"])
    assert inside["data"]["assignOwner"]["customer"] == {"inPool": False, "owner": {"userId": examples.rep}}
    back = await graph.query(
        query,
        {"input": {"customerId": customer_id(pool["account_no"]), "ownerId": None}},
        roles=["data_steward"],
    )
    assert back["data"]["assignOwner"]["customer"] == {"inPool": True, "owner": None}


async def test_invalid_values_are_bad_user_input(graph: Graph, target: dict[str, Any]) -> None:
    result = await graph.query(
        UPDATE,
        {"input": {"customerId": customer_id(target["account_no"]), "email": "not-an-email"}},
        roles=["data_steward"],
    )
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "not-an-email" not in str(result)
