"""policy.md, cell by cell, through real GraphQL requests to the gateway over the demo systems.

The expected decisions and mask formats are written here from the policy document itself, not read
from the policy file, so a wrong file fails these tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from connectors.normalize import normalize_phone
from demo.data import DemoExamples
from demo.servers import DemoSystems

from .conftest import Graph, customer_id

COLUMNS = [
    "rep_own",
    "rep_pool",
    "sales_manager",
    "support_agent",
    "finance",
    "legal",
    "executive",
    "auditor",
    "data_steward",
]
A, D = "allow", "deny"
M = "mask"
# policy.md, "Fields" (the identity fields are tested separately: allow for every role that sees the row)
TABLE: dict[str, list[str]] = {
    "contactName": [A, A, A, A, A, A, A, D, A],
    "title": [A, A, A, A, A, A, A, D, A],
    "email": [A, M, A, A, M, M, M, D, A],
    "phone": [A, M, A, A, M, M, M, D, A],
    "address": [A, D, A, M, A, A, M, D, A],
    "taxId": [M, D, M, D, A, A, M, D, A],
    "orders": [A, D, A, A, A, D, A, D, D],
    "payments": [D, D, D, D, A, D, A, D, D],
    "opportunities": [A, D, A, D, D, D, A, D, D],
    "activities": [A, D, A, A, D, D, D, D, D],
    "tickets": [A, D, A, A, D, D, A, D, D],
    "satisfaction": [A, A, A, A, A, A, A, D, A],
    "contracts": [A, D, A, A, A, A, A, D, D],
}
SELECTION = {
    "orders": "orders(first: 1) { orderNo }",
    "payments": "payments(first: 1) { paymentId }",
    "opportunities": "opportunities { opportunityId }",
    "activities": "activities(first: 1) { activityId }",
    "tickets": "tickets(first: 1) { id }",
    "satisfaction": "satisfaction { rated }",
    "contracts": "contracts { contractId }",
}
IDENTITY = "id accountNo kind name region status inPool owner { userId } createdAt lastContactAt dormant"


def mask(field: str, value: str) -> str:
    """The exact formats of policy.md, written independently of the product's code."""
    if field == "phone":
        return value[:3] + "*" * (len(value) - 7) + value[-4:] if len(value) >= 8 else "****"
    if field == "email":
        local, _, domain = value.partition("@")
        return f"{local[0]}***@{domain}"
    if field == "address":
        return value[:6] + "****" if len(value) >= 7 else "****"
    if field == "taxId":
        return value[:4] + "*" * 10 + value[-4:] if len(value) == 18 else "****"
    raise AssertionError(field)


def test_mask_formats_of_the_policy_document() -> None:
    assert mask("phone", "+8613812345678") == "+86*******5678"
    assert mask("email", "wang.fang@chengchuan.cn") == "w***@chengchuan.cn"
    assert mask("address", "上海市浦东新区张江路 88 号") == "上海市浦东新****"
    assert mask("taxId", "91310115MA1K4Q2X3L") == "9131**********2X3L"


@dataclass(frozen=True)
class Caller:
    roles: list[str]
    sub: str
    region: str | None
    account: dict[str, Any]  # the raw sales account the column is tested on


def _sales(systems: DemoSystems, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"per_page": 200, **params},
        headers=systems.auth_headers("sales"),
    )
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _complete(accounts: list[dict[str, Any]]) -> dict[str, Any]:
    """An account with every contact field filled, so allow / mask / deny are all visible."""
    for account in accounts:
        fields = ("contact_name", "title", "email", "phone", "address", "tax_id")
        if all(account[f] for f in fields) and len(account["address"]) >= 7:
            return account
    raise AssertionError("no complete account")


@pytest.fixture(scope="session")
def callers(systems: DemoSystems, examples: DemoExamples) -> dict[str, Caller]:
    [manager] = httpx.get(
        systems.sales_url + "/api/v1/users",
        params={"ids": examples.manager},
        headers=systems.auth_headers("sales"),
    ).json()["data"]
    anyone = _complete(_sales(systems))
    return {
        "rep_own": Caller(
            ["sales_rep"], examples.rep, None, _complete(_sales(systems, owner_id=examples.rep))
        ),
        "rep_pool": Caller(["sales_rep"], examples.rep, None, _complete(_sales(systems, unowned="true"))),
        "sales_manager": Caller(
            ["sales_manager"],
            examples.manager,
            manager["region"],
            _complete(_sales(systems, region=manager["region"])),
        ),
        **{role: Caller([role], f"u-{role}", None, anyone) for role in COLUMNS[3:]},
    }


def _value(field: str, account: dict[str, Any]) -> str:
    raw = {
        "contactName": account["contact_name"],
        "title": account["title"],
        "email": account["email"].strip().lower(),
        "phone": normalize_phone(account["phone"]),
        "address": account["address"],
        "taxId": account["tax_id"],
    }[field]
    assert raw is not None
    return str(raw)


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("field", list(TABLE))
async def test_field_table_cell(graph: Graph, callers: dict[str, Caller], column: str, field: str) -> None:
    caller = callers[column]
    decision = TABLE[field][COLUMNS.index(column)]
    selection = SELECTION.get(field, field)
    result = await graph.query(
        f"query($id: ID!) {{ customer(id: $id) {{ accountNo {selection} }} }}",
        {"id": customer_id(caller.account["account_no"])},
        roles=caller.roles,
        sub=caller.sub,
        region=caller.region,
    )
    customer = result["data"]["customer"]
    assert customer is not None, f"{column} must see the row"
    got = customer[field]
    errors = result.get("errors", [])
    if decision == D:
        assert got is None
        assert [(e["path"], e["extensions"]["code"]) for e in errors] == [(["customer", field], "FORBIDDEN")]
        assert field in errors[0]["message"]
        return
    assert errors == []
    if field in SELECTION:
        assert got is not None
    elif decision == A:
        assert got == _value(field, caller.account)
    else:
        assert got == mask(field, _value(field, caller.account))


@pytest.mark.parametrize("column", COLUMNS)
async def test_identity_fields_are_allowed_wherever_the_row_is_seen(
    graph: Graph, callers: dict[str, Caller], column: str
) -> None:
    caller = callers[column]
    result = await graph.query(
        f"query($id: ID!) {{ customer(id: $id) {{ {IDENTITY} }} }}",
        {"id": customer_id(caller.account["account_no"])},
        roles=caller.roles,
        sub=caller.sub,
        region=caller.region,
    )
    assert "errors" not in result
    assert result["data"]["customer"]["accountNo"] == caller.account["account_no"]


def _every_customer_query(first: int = 100) -> str:
    return f"{{ customers(first: {first}) {{ totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ accountNo region inPool owner {{ userId }} }} }} }} }}"


async def _all_rows(graph: Graph, **who: Any) -> tuple[list[dict[str, Any]], int | None]:
    nodes: list[dict[str, Any]] = []
    after = None
    total = None
    while True:
        result = await graph.query(
            "query($after: String) { customers(first: 100, after: $after) { totalCount pageInfo { hasNextPage endCursor } "
            "edges { node { accountNo region owner { userId } } } } }",
            {"after": after},
            **who,
        )
        assert "errors" not in result, result
        connection = result["data"]["customers"]
        total = connection["totalCount"]
        nodes += [edge["node"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            return nodes, total
        after = connection["pageInfo"]["endCursor"]


async def test_sales_rep_rows_are_its_own_and_the_pool(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    nodes, total = await _all_rows(graph, roles=["sales_rep"], sub=examples.rep)
    own = [a["account_no"] for a in _all_sales(systems, owner_id=examples.rep)]
    pool = [a["account_no"] for a in _all_sales(systems, unowned="true")]
    assert [n["accountNo"] for n in nodes] == sorted(own + pool)
    assert total == len(own) + len(pool)
    assert all(n["owner"] is None or n["owner"]["userId"] == examples.rep for n in nodes)


async def test_sales_manager_rows_are_its_region(
    graph: Graph, systems: DemoSystems, callers: dict[str, Caller]
) -> None:
    caller = callers["sales_manager"]
    nodes, total = await _all_rows(graph, roles=caller.roles, sub=caller.sub, region=caller.region)
    region = [a["account_no"] for a in _all_sales(systems, region=caller.region)]
    assert [n["accountNo"] for n in nodes] == region
    assert total == len(region)


@pytest.mark.parametrize(
    "role", ["support_agent", "finance", "legal", "executive", "auditor", "data_steward"]
)
async def test_roles_that_see_all_rows(graph: Graph, systems: DemoSystems, role: str) -> None:
    result = await graph.query("{ customers(first: 1) { totalCount } }", roles=[role])
    assert result["data"]["customers"]["totalCount"] == len(_all_sales(systems))


async def test_rows_outside_the_scope_do_not_exist(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    others = [a for a in _sales(systems) if a["owner_id"] not in (None, examples.rep)]
    gid = customer_id(others[0]["account_no"])
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { name } node(id: $id) { id } }",
        {"id": gid},
        roles=["sales_rep"],
        sub=examples.rep,
    )
    assert result == {"data": {"customer": None, "node": None}}
    manager = await graph.query(
        "query($id: ID!) { customer(id: $id) { name } }",
        {"id": gid},
        roles=["sales_manager"],
        sub="u-m",
        region=next(r for r in ("east", "north", "south", "west", "central") if r != others[0]["region"]),
    )
    assert manager == {"data": {"customer": None}}


async def test_a_rep_cannot_page_into_another_reps_customers(graph: Graph, examples: DemoExamples) -> None:
    result = await graph.query(
        '{ customers(first: 50, filter: {ownerId: "u-9999"}) { totalCount edges { node { accountNo } } } }',
        roles=["sales_rep"],
        sub=examples.rep,
    )
    assert result["data"]["customers"] == {"totalCount": 0, "edges": []}


def _all_sales(systems: DemoSystems, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        response = httpx.get(
            systems.sales_url + "/api/v1/accounts",
            params={"per_page": 200, "page": page, **params},
            headers=systems.auth_headers("sales"),
        )
        body = response.json()
        found += body["data"]
        if page * 200 >= body["meta"]["total"]:
            return found
        page += 1


# --- nested rules --------------------------------------------------------------------------------


async def test_executive_never_sees_card_or_bank_account(graph: Graph, systems: DemoSystems) -> None:
    result = await graph.query(
        "{ customers(first: 30) { edges { node { payments(first: 5) { paymentId amount { amount } cardLast4 bankAccount } } } } }",
        roles=["executive"],
    )
    payments = [p for e in result["data"]["customers"]["edges"] for p in e["node"]["payments"]]
    assert payments and all(p["cardLast4"] is None and p["bankAccount"] is None for p in payments)
    assert all(p["paymentId"] for p in payments)
    forbidden = sorted(tuple(x for x in e["path"] if isinstance(x, str)) for e in result["errors"])
    # once per field path pattern, not once per payment
    assert forbidden == [
        ("customers", "edges", "node", "payments", "bankAccount"),
        ("customers", "edges", "node", "payments", "cardLast4"),
    ]
    finance = await graph.query(
        "{ customers(first: 30) { edges { node { payments(first: 5) { cardLast4 bankAccount } } } } }",
        roles=["finance"],
    )
    assert "errors" not in finance


@pytest.mark.parametrize(
    ("role", "allowed"), [("support_agent", True), ("executive", False), ("sales_manager", False)]
)
async def test_ticket_comments_only_for_support(
    graph: Graph, examples: DemoExamples, callers: dict[str, Caller], role: str, allowed: bool
) -> None:
    caller = callers.get(role) or callers["support_agent"]
    account_no = caller.account["account_no"] if role == "sales_manager" else examples.company
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { tickets(first: 2) { id comments { id body } } } }",
        {"id": customer_id(account_no)},
        roles=[role],
        sub=caller.sub,
        region=caller.region,
    )
    tickets = result["data"]["customer"]["tickets"]
    assert tickets, "the example customer has tickets"
    if allowed:
        assert "errors" not in result
        assert any(t["comments"] for t in tickets)
    else:
        assert all(t["comments"] is None for t in tickets)
        assert {e["extensions"]["code"] for e in result["errors"]} == {"FORBIDDEN"}


@pytest.mark.parametrize(
    ("roles", "sees_confidential"),
    [(["legal"], True), (["executive"], True), (["finance"], False), (["support_agent"], False)],
)
async def test_confidential_contracts_left_out(
    graph: Graph, systems: DemoSystems, examples: DemoExamples, roles: list[str], sees_confidential: bool
) -> None:
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { contracts { contractId confidential } } }",
        {"id": customer_id(examples.confidential_contract)},
        roles=roles,
    )
    ids = {c["contractId"] for c in result["data"]["customer"]["contracts"]}
    assert (examples.confidential_contract_id in ids) is sees_confidential
    assert ids, "the non-confidential contracts are still there"


async def test_support_agent_never_sees_contract_value_or_terms(graph: Graph, examples: DemoExamples) -> None:
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { contracts { contractId value { amount } paymentTerms } } }",
        {"id": customer_id(examples.company)},
        roles=["support_agent"],
    )
    contracts = result["data"]["customer"]["contracts"]
    assert contracts and all(c["value"] is None and c["paymentTerms"] is None for c in contracts)
    assert {e["extensions"]["code"] for e in result["errors"]} == {"FORBIDDEN"}


async def test_the_same_datum_follows_its_field(graph: Graph, examples: DemoExamples) -> None:
    """A ticket's requester e-mail follows email; a contract's party tax id follows taxId."""
    result = await graph.query(
        "query($id: ID!) { customer(id: $id) { email taxId tickets(first: 1) { requesterEmail } contracts { partyTaxId } } }",
        {"id": customer_id(examples.company)},
        roles=["executive"],
    )
    customer = result["data"]["customer"]
    assert "***@" in customer["email"]
    assert customer["tickets"][0]["requesterEmail"] == customer["email"]
    assert "*" * 10 in customer["taxId"]
    assert {c["partyTaxId"] for c in customer["contracts"]} == {customer["taxId"]}


async def test_search_matches_only_emails_the_caller_sees_in_clear(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    pool = _complete(_sales(systems, unowned="true"))
    local = pool["email"].split("@")[0].lower()
    as_rep = await graph.query(
        "query($q: String) { customers(first: 20, filter: {search: $q}) { edges { node { accountNo } } } }",
        {"q": local},
        roles=["sales_rep"],
        sub=examples.rep,
    )
    found = {e["node"]["accountNo"] for e in as_rep["data"]["customers"]["edges"]}
    name_match = local in pool["name"].lower() or local in (pool["contact_name"] or "").lower()
    assert (pool["account_no"] in found) is name_match
    as_steward = await graph.query(
        "query($q: String) { customers(first: 20, filter: {search: $q}) { edges { node { accountNo } } } }",
        {"q": local},
        roles=["data_steward"],
    )
    assert pool["account_no"] in {e["node"]["accountNo"] for e in as_steward["data"]["customers"]["edges"]}


async def test_denied_fields_cause_no_upstream_call(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    systems.reset_stats()
    result = await graph.query(
        "{ customers(first: 20) { edges { node { name tickets { id } activities { activityId } payments { paymentId } } } } }",
        roles=["finance"],
    )
    assert {tuple(x for x in e["path"] if isinstance(x, str))[-1] for e in result["errors"]} == {
        "tickets",
        "activities",
    }
    assert systems.stats("support")["count"] == 0
    assert "GET /api/v1/activities" not in systems.stats("sales")["endpoints"]
    assert systems.stats("sales")["endpoints"]["GET /api/v1/payments"]["count"] == 1


@pytest.fixture(autouse=True)
def _no_faults(systems: DemoSystems) -> Iterator[None]:
    systems.clear_faults()
    yield
