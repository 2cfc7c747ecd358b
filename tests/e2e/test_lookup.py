"""``customer(accountNo:)`` (the key app teams hold) answers exactly like ``customer(id:)``; ids, keys
and cursors are matched whole (a trailing newline is not part of any)."""

from __future__ import annotations

import base64

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import Graph, customer_id


def another_reps_customer(systems: DemoSystems, examples: DemoExamples) -> str:
    """A customer owned by another rep than the example rep: outside that rep's rows."""
    accounts = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"per_page": 200},
        headers=systems.auth_headers("sales"),
    ).json()["data"]
    return next(a["account_no"] for a in accounts if a["owner_id"] not in (None, examples.rep))


FIELDS = "accountNo name email phone taxId orders(first: 2) { orderNo } contracts { contractId }"


@pytest.mark.parametrize("roles", [["finance"], ["sales_rep"], ["auditor"], ["data_steward"]])
async def test_by_account_number_equals_by_id(graph: Graph, examples: DemoExamples, roles: list[str]) -> None:
    for account_no in (examples.company, examples.pool, examples.owned, examples.unknown_account):
        by_id = await graph.query(
            f"query($id: ID!) {{ customer(id: $id) {{ {FIELDS} }} }}",
            {"id": customer_id(account_no)},
            roles=roles,
            sub=examples.rep,
        )
        by_key = await graph.query(
            f"query($no: String!) {{ customer(accountNo: $no) {{ {FIELDS} }} }}",
            {"no": account_no},
            roles=roles,
            sub=examples.rep,
        )
        for answer in (by_id, by_key):  # the documents differ, so do the errors' columns
            for error in answer.get("errors", []):
                error.pop("locations", None)
        assert by_key == by_id, account_no


async def test_outside_the_rows_looks_like_unknown(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    other = another_reps_customer(systems, examples)
    query = "query($no: String!) { customer(accountNo: $no) { name } }"
    hidden = await graph.query(query, {"no": other}, roles=["sales_rep"], sub=examples.rep)
    unknown = await graph.query(
        query, {"no": examples.unknown_account}, roles=["sales_rep"], sub=examples.rep
    )
    assert hidden == unknown == {"data": {"customer": None}}


@pytest.mark.parametrize(
    "arguments",
    [
        "",
        '(id: "Q3VzdG9tZXI6QTEwMDAwMQ", accountNo: "A100001")',
        '(accountNo: "A100001\\n")',
        '(accountNo: "")',
    ],
)
async def test_bad_lookups_are_bad_user_input(graph: Graph, arguments: str) -> None:
    result = await graph.query(f"{{ customer{arguments} {{ name }} }}", roles=["finance"])
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("raw", ["Customer:A100001\n", "Customer:A100001\r\n"])
async def test_a_newline_is_never_part_of_an_id(graph: Graph, raw: str) -> None:
    newline_key = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    for id_ in (newline_key, customer_id("A100001") + "\n"):
        result = await graph.query(
            "query($id: ID!) { customer(id: $id) { name } }", {"id": id_}, roles=["finance"]
        )
        assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", id_


async def test_a_cursor_with_a_trailing_newline_is_refused(graph: Graph) -> None:
    cursor = base64.urlsafe_b64encode(b"o:5\n").decode()
    result = await graph.query(
        "query($after: String) { customers(first: 2, after: $after) { totalCount } }",
        {"after": cursor},
        roles=["finance"],
    )
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_reps_owned_customers_are_counted(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    owned = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"per_page": 1, "owner_id": examples.rep},
        headers=systems.auth_headers("sales"),
    ).json()["meta"]["total"]
    result = await graph.query(
        "{ customers(first: 5, filter: {inPool: false}) { totalCount edges { node { owner { userId } } } } }",
        roles=["sales_rep"],
        sub=examples.rep,
    )
    connection = result["data"]["customers"]
    assert connection["totalCount"] == owned > 0
    assert {e["node"]["owner"]["userId"] for e in connection["edges"]} == {examples.rep}


async def test_contract_conformance_of_sales_users_and_satisfaction(
    graph: Graph, examples: DemoExamples
) -> None:
    """graph.md: enum values upper-cased (``SalesUser.region`` too); a customer without an e-mail has
    nothing rated (``rated: 0``), not a null that graph.md reserves for denied or failed fields."""
    owned = await graph.query(
        "query($id: ID!) { customer(id: $id) { region owner { region } } }",
        {"id": customer_id(examples.owned)},
        roles=["data_steward"],
    )
    region = owned["data"]["customer"]["owner"]["region"]
    assert (
        region is not None
        and region == region.upper()
        and region in {"EAST", "NORTH", "SOUTH", "WEST", "CENTRAL"}
    )
    no_email = await graph.query(
        "query($id: ID!) { customer(id: $id) { email satisfaction { rated average lastRatedAt } } }",
        {"id": customer_id(examples.no_email)},
        roles=["data_steward"],
    )
    assert no_email == {
        "data": {
            "customer": {"email": None, "satisfaction": {"rated": 0, "average": None, "lastRatedAt": None}}
        }
    }


async def test_request_access_says_the_same_for_hidden_and_unknown_customers(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    other = another_reps_customer(systems, examples)
    mutation = 'mutation($id: ID!) { requestAccess(input: {customerId: $id, fields: ["phone"], reason: "call back"}) { accessRequest { id } } }'
    answers = [
        await graph.query(mutation, {"id": customer_id(no)}, roles=["sales_rep"], sub=examples.rep)
        for no in (other, examples.unknown_account)
    ]
    assert answers[0] == answers[1]
    assert answers[0]["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_refusal_names_the_rule_never_a_server_path(graph: Graph, examples: DemoExamples) -> None:
    asked = await graph.query(
        'mutation($id: ID!) { requestAccess(input: {customerId: $id, fields: ["phone"], reason: "call back"}) { accessRequest { id } } }',
        {"id": customer_id(examples.pool)},
        roles=["sales_rep"],
        sub=examples.rep,
    )
    request_id = asked["data"]["requestAccess"]["accessRequest"]["id"]
    refused = await graph.query(
        "mutation($id: ID!) { decideAccessRequest(input: {id: $id, approve: true, ttlHours: 1}) { accessRequest { id } } }",
        {"id": request_id},
        roles=["finance"],
        sub="u-finance-approver",
    )
    [error] = refused["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "writes.decideAccessRequest" in error["message"]
    assert ".yaml" not in error["message"] and "/" not in error["message"], error["message"]
