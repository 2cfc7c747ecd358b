"""The audit trail through the graph: served values, denials, writes and grant uses are recorded
before the answer leaves; auditors read them; a store that cannot record means nothing is served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems
from features.store import AuditLog, Database
from gateway.app import create_app

from .conftest import Graph, customer_id, settings_for

AUDIT = """query($filter: AuditLogFilter) { auditLog(filter: $filter, first: 20) {
  nodes { kind userId roles operationName operationType customerIds fields grantId before after detail } } }"""


@pytest.fixture(scope="module")
async def audited(systems: DemoSystems, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Graph]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('audit')}/gateway.db"
    app = create_app(settings_for(systems, CG_DATABASE_URL=url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        client.app = app  # type: ignore[attr-defined]
        yield Graph(client)


async def records(graph: Graph, reader: str = "auditor", **filter: Any) -> list[dict[str, Any]]:
    result = await graph.query(AUDIT, {"filter": filter}, roles=[reader], sub=f"u-{reader}")
    assert "errors" not in result, result
    nodes: list[dict[str, Any]] = result["data"]["auditLog"]["nodes"]
    return nodes


async def test_served_masked_and_denied_values_are_recorded(audited: Graph, examples: DemoExamples) -> None:
    result = await audited.query(
        "query Look($id: ID!) { customer(id: $id) { name phone email tickets { id } } }",
        {"id": customer_id(examples.company)},
        roles=["finance"],
        sub="u-fin-1",
    )
    assert result["data"]["customer"]["tickets"] is None
    found = await records(audited, userId="u-fin-1")
    read = next(r for r in found if r["kind"] == "read")
    assert read["fields"] == {examples.company: {"phone": "mask", "email": "mask"}}
    assert (read["operationName"], read["operationType"], read["roles"]) == ("Look", "query", ["finance"])
    denial = next(r for r in found if r["kind"] == "denial")
    assert denial["fields"] == {examples.company: {"tickets": "deny"}}
    assert "name" not in str(read["fields"])  # identity fields are not audited


async def test_only_auditors_and_stewards_read_the_log(audited: Graph) -> None:
    for role, allowed in [
        ("auditor", True),
        ("data_steward", True),
        ("executive", False),
        ("sales_manager", False),
    ]:
        result = await audited.query(AUDIT, {"filter": {}}, roles=[role], region="east")
        assert ("errors" not in result) is allowed, (role, result)
        if not allowed:
            assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_writes_are_recorded_with_before_and_after(
    audited: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    result = await audited.query(
        "mutation($input: UpdateCustomerContactInput!) { updateCustomerContact(input: $input) { customer { title } } }",
        {"input": {"customerId": customer_id(examples.no_email), "title": "审计测试"}},
        roles=["data_steward"],
        sub="u-steward-9",
    )
    assert "errors" not in result, result
    write = next(
        r for r in await records(audited, "data_steward", userId="u-steward-9") if r["kind"] == "write"
    )
    assert write["after"] == {"title": "审计测试"}
    as_auditor = next(r for r in await records(audited, userId="u-steward-9") if r["kind"] == "write")
    assert as_auditor["after"] == {"title": None}  # the auditor sees identity fields only, here too
    assert write["before"]["title"] != "审计测试"
    assert write["customerIds"] == [examples.no_email]
    assert write["operationType"] == "mutation"


async def test_access_request_grant_and_its_use(
    audited: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    [pool] = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"ids": examples.pool},
        headers=systems.auth_headers("sales"),
    ).json()["data"]
    gid = customer_id(examples.pool)
    phone = "query($id: ID!) { customer(id: $id) { phone } }"
    rep = {"roles": ["sales_rep"], "sub": examples.rep}
    masked = await audited.query(phone, {"id": gid}, **rep)
    assert "*" in masked["data"]["customer"]["phone"]

    asked = await audited.query(
        "mutation($input: RequestAccessInput!) { requestAccess(input: $input) { accessRequest { id status fields } } }",
        {"input": {"customerId": gid, "fields": ["phone"], "reason": "回访客户需要电话"}},
        **rep,
    )
    request = asked["data"]["requestAccess"]["accessRequest"]
    assert request["status"] == "PENDING" and request["fields"] == ["phone"]

    decide = "mutation($input: DecideAccessRequestInput!) { decideAccessRequest(input: $input) { accessRequest { status expiresAt } } }"
    self_approval = await audited.query(decide, {"input": {"id": request["id"], "approve": True}}, **rep)
    assert self_approval["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    other_region = next(r for r in ("east", "north", "south", "west", "central") if r != pool["region"])
    outside = await audited.query(
        decide,
        {"input": {"id": request["id"], "approve": True}},
        roles=["sales_manager"],
        sub="u-m2",
        region=other_region,
    )
    assert outside["errors"][0]["extensions"]["code"] in {"FORBIDDEN", "NOT_FOUND"}
    pending = await audited.query(
        "{ accessRequests(mine: false, status: PENDING) { nodes { id } } }",
        roles=["sales_manager"],
        sub="u-m1",
        region=pool["region"],
    )
    assert request["id"] in {n["id"] for n in pending["data"]["accessRequests"]["nodes"]}
    approved = await audited.query(
        decide,
        {"input": {"id": request["id"], "approve": True, "ttlHours": 2}},
        roles=["sales_manager"],
        sub="u-m1",
        region=pool["region"],
    )
    assert approved["data"]["decideAccessRequest"]["accessRequest"]["status"] == "APPROVED"

    clear = await audited.query(phone, {"id": gid}, **rep)
    assert "*" not in clear["data"]["customer"]["phone"]
    use = next(r for r in await records(audited, grantId=request["id"]) if r["kind"] == "grant_use")
    assert use["fields"] == {examples.pool: {"phone": "allow"}}
    # another rep (or the same rep on another customer) gains nothing from the grant
    other = await audited.query(phone, {"id": gid}, roles=["sales_rep"], sub="u-other-rep")
    assert "*" in other["data"]["customer"]["phone"]


async def test_too_long_a_grant_is_refused(audited: Graph, examples: DemoExamples) -> None:
    asked = await audited.query(
        "mutation($input: RequestAccessInput!) { requestAccess(input: $input) { accessRequest { id } } }",
        {"input": {"customerId": customer_id(examples.company), "fields": ["taxId"], "reason": "核对发票"}},
        roles=["support_agent"],
        sub="u-sa-7",
    )
    request_id = asked["data"]["requestAccess"]["accessRequest"]["id"]
    result = await audited.query(
        "mutation($input: DecideAccessRequestInput!) { decideAccessRequest(input: $input) { accessRequest { status } } }",
        {"input": {"id": request_id, "approve": True, "ttlHours": 24 * 8}},
        roles=["data_steward"],
    )
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_nothing_is_served_when_the_audit_store_fails(
    audited: Graph, examples: DemoExamples, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gateway = audited.client.app.state.gateway  # type: ignore[attr-defined]
    working = gateway.audit
    broken_dir = tmp_path_factory.mktemp("gone")
    gone = Database(f"sqlite+aiosqlite:///{broken_dir}/missing/dir/gateway.db")
    gateway.audit = AuditLog(gone)  # a real store that cannot write
    try:
        result = await audited.query(
            "query($id: ID!) { customer(id: $id) { name email phone } }",
            {"id": customer_id(examples.company)},
            roles=["executive"],
        )
    finally:
        gateway.audit = working
        await gone.aclose()
    assert result["data"] is None
    assert [e["extensions"]["code"] for e in result["errors"]] == ["INTERNAL"]
    assert "@" not in str(result)
    # identity-only answers audit nothing, so they still flow
    fine = await audited.query(
        "query($id: ID!) { customer(id: $id) { name } }",
        {"id": customer_id(examples.company)},
        roles=["executive"],
    )
    assert fine["data"]["customer"]["name"]
