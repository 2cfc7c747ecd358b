"""Property: whatever valid query a caller sends — aliases, fragments, nesting, ``node``, lists,
variables — and whatever roles it holds, no value the policy masks or denies it appears anywhere in
the response, errors included."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.normalize import normalize_email, normalize_phone
from demo.data import DemoExamples
from demo.servers import DemoSystems
from policies import Principal, load_policy

from .conftest import Graph, customer_id

ROLES = [
    "sales_rep",
    "sales_manager",
    "support_agent",
    "finance",
    "legal",
    "executive",
    "auditor",
    "data_steward",
]
REGIONS = ["east", "north", "south", "west", "central"]

SCALARS = [
    "accountNo",
    "name",
    "contactName",
    "title",
    "email",
    "phone",
    "address",
    "taxId",
    "inPool",
    "lastContactAt",
]
NESTED = {
    "orders(first: 3)": ["orderNo", "total { amount }"],
    "payments(first: 3)": ["paymentId", "cardLast4", "bankAccount", "amount { amount currency }"],
    "activities(first: 3)": ["subject", "notes", "byUser"],
    "tickets(first: 3)": ["id", "subject", "requesterEmail", "comments { body author }"],
    "contracts": [
        "contractId",
        "partyTaxId",
        "partyName",
        "paymentTerms",
        "value { amount }",
        "confidential",
    ],
    "satisfaction": ["rated", "average"],
    "owner": ["userId", "name"],
}


@dataclass
class Raw:
    """One customer's raw data and the strings the policy may hide from a caller."""

    account: dict[str, Any]
    tickets: list[dict[str, Any]]
    comments: list[str]
    payments: list[dict[str, Any]]
    contracts: list[dict[str, Any]]


def _alias(draw: st.DrawFn, name: str) -> str:
    return f"a{draw(st.integers(0, 999))}: {name}" if draw(st.booleans()) else name


@st.composite
def customer_selection(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A random selection on Customer (with aliases and fragments) and the fragments it uses."""
    parts: list[str] = []
    fragments: list[str] = []
    for field in draw(st.lists(st.sampled_from(SCALARS), min_size=1, max_size=6, unique=True)):
        parts.append(_alias(draw, field))
    for field in draw(st.lists(st.sampled_from(list(NESTED)), max_size=4, unique=True)):
        inner = " ".join(
            _alias(draw, f) for f in draw(st.lists(st.sampled_from(NESTED[field]), min_size=1, unique=True))
        )
        parts.append(f"{_alias(draw, field)} {{ {inner} }}")
    style = draw(st.sampled_from(["plain", "inline", "named"]))
    body = " ".join(parts)
    if style == "inline":
        return f"... on Customer {{ {body} }}", fragments
    if style == "named":
        fragments.append(f"fragment F on Customer {{ {body} }}")
        return "...F", fragments
    return body, fragments


@st.composite
def queries(draw: st.DrawFn, ids: list[str]) -> tuple[str, dict[str, Any]]:
    selection, fragments = draw(customer_selection())
    root = draw(st.sampled_from(["customer", "node", "customers", "both"]))
    variables: dict[str, Any] = {"id": draw(st.sampled_from(ids))}
    pieces = []
    if root in ("customer", "both"):
        pieces.append(f"{_alias(draw, 'customer')}(id: $id) {{ id {selection} }}")
    if root == "node":
        pieces.append(f"node(id: $id) {{ id ... on Customer {{ {selection} }} }}")
    if root in ("customers", "both"):
        pieces.append(f"customers(first: $n) {{ edges {{ node {{ {selection} }} }} }}")
        variables["n"] = draw(st.integers(1, 25))
    header = "query Q($id: ID!" + (", $n: Int" if "n" in variables else "") + ")"
    return f"{header} {{ {' '.join(pieces)} }} {' '.join(fragments)}", variables


def _get(systems: DemoSystems, system: str, path: str, **params: Any) -> Any:
    response = httpx.get(
        systems.urls[system] + path, params=params, headers=systems.auth_headers(system), timeout=10
    )
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def raw_data(systems: DemoSystems, examples: DemoExamples) -> dict[str, Raw]:
    accounts = _get(systems, "sales", "/api/v1/accounts", per_page=25)["data"]
    extra = [examples.company, examples.pool, examples.owned, examples.confidential_contract, examples.person]
    accounts += _get(systems, "sales", "/api/v1/accounts", ids=",".join(extra))["data"]
    found: dict[str, Raw] = {}
    for account in accounts:
        email = normalize_email(account["email"]) if account["email"] else None
        tickets = (
            httpx.post(
                systems.support_url + "/v2/tickets/search",
                json={"requester_emails": [email], "limit": 3},
                headers=systems.auth_headers("support"),
            ).json()["tickets"]
            if email
            else []
        )
        comments = [
            c["body"]
            for t in tickets
            for c in _get(systems, "support", f"/v2/tickets/{t['id']}")["comments"]
            if len(c["body"]) >= 8
        ]
        payments = _get(systems, "sales", "/api/v1/payments", account_nos=account["account_no"])["data"][:3]
        contracts = (
            _get(systems, "contracts", "/contracts", party_tax_id=account["tax_id"])
            if account["tax_id"]
            else []
        )
        found[account["account_no"]] = Raw(account, tickets, comments, payments, contracts)
    return found


POLICY = load_policy()


def hidden_strings(principal: Principal, raw: Raw) -> set[str]:
    """Strings of at least 8 characters that the policy masks or denies to this caller."""
    policy = POLICY
    account = raw.account

    @dataclass
    class _A:
        owner_id: str | None
        region: str

    view = policy.view(principal, _A(account["owner_id"], account["region"]))
    hidden: set[str] = set()
    if not view.visible:
        values = [
            account["contact_name"],
            account["email"],
            account["phone"],
            account["address"],
            account["tax_id"],
        ]
        return {v for v in values if v and len(v) >= 8} | set(raw.comments)
    plain = {
        "contactName": account["contact_name"],
        "email": normalize_email(account["email"]) if account["email"] else None,
        "phone": normalize_phone(account["phone"]) if account["phone"] else None,
        "address": account["address"],
        "taxId": account["tax_id"],
    }
    for field, value in plain.items():
        if value and len(value) >= 8 and not view[field].allowed:
            hidden.add(value)
    if not view["tickets"].allowed or not view["Ticket.comments"].allowed:
        hidden |= set(raw.comments)
    if not view["payments"].allowed or not view["Payment.bankAccount"].allowed:
        hidden |= {p["bank_account"] for p in raw.payments if p["bank_account"]}
    for contract in raw.contracts:
        if contract["confidential"] and not view["contracts"].allowed:
            hidden.add(contract["contract_id"])
        if contract["confidential"] and view.hidden.get("contracts"):
            hidden.add(contract["contract_id"])
    return hidden


@st.composite
def principals(draw: st.DrawFn, rep: str) -> Principal:
    roles = draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True))
    sub = rep if "sales_rep" in roles else f"u-{draw(st.integers(1, 99))}"
    region = draw(st.sampled_from(REGIONS)) if "sales_manager" in roles else None
    return Principal.of(sub, roles, region)


def test_no_masked_or_denied_value_leaves(
    graph: Graph, systems: DemoSystems, examples: DemoExamples, raw_data: dict[str, Raw]
) -> None:
    ids = [customer_id(n) for n in raw_data]
    loop = asyncio.get_event_loop_policy().get_event_loop()

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(principal=principals(examples.rep), query=queries(ids))
    def check(principal: Principal, query: tuple[str, dict[str, Any]]) -> None:
        document, variables = query
        result = loop.run_until_complete(
            graph.query(
                document, variables, roles=sorted(principal.roles), sub=principal.sub, region=principal.region
            )
        )
        text = json.dumps(result, ensure_ascii=False)
        assert "errors" not in result or all(
            e["extensions"]["code"] in {"FORBIDDEN", "BAD_USER_INPUT"} for e in result["errors"]
        ), result
        for raw in raw_data.values():
            for secret in hidden_strings(principal, raw):
                assert secret not in text, f"{secret!r} leaked to {sorted(principal.roles)} via {document}"

    check()
