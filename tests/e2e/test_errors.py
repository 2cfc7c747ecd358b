"""Errors in the documented shape: authentication, bad input, unknown objects, failed systems."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems
from gateway.auth import issue_token

from .conftest import ALL_SEEING, Graph, customer_id


def codes(result: dict[str, object]) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]  # type: ignore[attr-defined,index]


@pytest.fixture
def faults(systems: DemoSystems) -> Iterator[DemoSystems]:
    systems.clear_faults()
    yield systems
    systems.clear_faults()


async def test_no_token_is_unauthenticated_but_introspection_works(
    graph: Graph, examples: DemoExamples
) -> None:
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { name } }", {"id": customer_id(examples.company)}
    )
    assert result["data"] == {"customer": None}
    assert codes(result) == ["UNAUTHENTICATED"]
    introspection = await graph.query("{ __schema { queryType { name } } }")
    assert introspection == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (issue_token("another-secret-entirely-0123456789", sub="u-1", roles=["finance"]), "signature"),
        (
            issue_token("e2e-test-secret-0123456789abcdef", sub="u-1", roles=["finance"], ttl_seconds=-60),
            "expired",
        ),
        ("not.a.jwt", "well-formed"),
    ],
)
async def test_bad_tokens_are_unauthenticated(graph: Graph, token: str, why: str) -> None:
    result = await graph.query("{ viewer { id } }", token=token)
    assert result["data"] is None
    assert codes(result) == ["UNAUTHENTICATED"]
    assert why in result["errors"][0]["message"]
    assert token not in str(result)


async def test_viewer_is_the_caller(graph: Graph) -> None:
    result = await graph.query(
        "{ viewer { id roles region name } }", roles=["sales_manager"], sub="u-2001", region="east"
    )
    assert result == {
        "data": {"viewer": {"id": "u-2001", "roles": ["sales_manager"], "region": "east", "name": None}}
    }


@pytest.mark.parametrize("bad_id", ["%%%", "bm90LWFuLWlk", customer_id("A1,A2"), "T3JkZXI6TzU1MDAxMjM"])
async def test_malformed_or_foreign_ids_are_bad_user_input(graph: Graph, bad_id: str) -> None:
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { name } }", {"id": bad_id}, roles=ALL_SEEING
    )
    assert result["data"] == {"customer": None}
    assert codes(result) == ["BAD_USER_INPUT"]


async def test_unknown_customer_is_null_without_error(graph: Graph, examples: DemoExamples) -> None:
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { name } node(id: $id) { id } }",
        {"id": customer_id(examples.unknown_account)},
        roles=ALL_SEEING,
    )
    assert result == {"data": {"customer": None, "node": None}}


async def test_node_resolves_a_customer(graph: Graph, examples: DemoExamples) -> None:
    gid = customer_id(examples.company)
    result = await graph.query(
        "query($id: ID!) { node(id: $id) { id __typename ... on Customer { accountNo } } }",
        {"id": gid},
        roles=ALL_SEEING,
    )
    assert result == {"data": {"node": {"id": gid, "__typename": "Customer", "accountNo": examples.company}}}


async def test_bad_arguments_are_bad_user_input(graph: Graph, examples: DemoExamples) -> None:
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { name orders(first: -1) { orderNo } } }",
        {"id": customer_id(examples.company)},
        roles=ALL_SEEING,
    )
    assert result["data"]["customer"]["name"]
    assert result["data"]["customer"]["orders"] is None
    assert codes(result) == ["BAD_USER_INPUT"]
    wrong_type = await graph.query(
        "query($n: Int) { customers(first: $n) { totalCount } }", {"n": "ten"}, roles=ALL_SEEING
    )
    assert "data" not in wrong_type  # a request error: execution never started (GraphQL spec)
    assert codes(wrong_type) == ["BAD_USER_INPUT"]


async def test_a_failed_system_costs_only_its_own_fields(
    graph: Graph, faults: DemoSystems, examples: DemoExamples
) -> None:
    faults.set_faults("support", error_rate=1.0)
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { name email orders(first: 1) { orderNo } tickets { id } "
        "satisfaction { rated } contracts { contractId } } }",
        {"id": customer_id(examples.company)},
        roles=ALL_SEEING,
    )
    customer = result["data"]["customer"]
    assert customer["name"] and customer["orders"] and customer["contracts"] is not None
    assert customer["tickets"] is None and customer["satisfaction"] is None
    errors = {tuple(e["path"]): e["extensions"] for e in result["errors"]}
    assert errors == {
        ("customer", "tickets"): {"code": "UPSTREAM_UNAVAILABLE", "system": "support"},
        ("customer", "satisfaction"): {"code": "UPSTREAM_UNAVAILABLE", "system": "support"},
    }
    assert faults.support_url not in str(result)


async def test_sales_down_nulls_the_customer_with_a_sales_error(
    graph: Graph, faults: DemoSystems, examples: DemoExamples
) -> None:
    faults.set_faults("sales", down=True)
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { name } }",
        {"id": customer_id(examples.company)},
        roles=ALL_SEEING,
    )
    assert result["data"] == {"customer": None}
    assert result["errors"][0]["extensions"] == {"code": "UPSTREAM_UNAVAILABLE", "system": "sales"}
