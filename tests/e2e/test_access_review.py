"""Access review through the graph: ``activeGrants`` (a manager sees the grants of its region, a steward
all, nobody else any; customers through the caller's own read policy) and ``revokeAccessGrant``
(the approvers only, audited, the grant stops at once)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from demo.servers import DemoSystems
from gateway.app import create_app

from .conftest import Graph, customer_id, settings_for

PHONE = "query($id: ID!) { customer(id: $id) { phone } }"
ASK = "mutation($input: RequestAccessInput!) { requestAccess(input: $input) { accessRequest { id } } }"
DECIDE = "mutation($input: DecideAccessRequestInput!) { decideAccessRequest(input: $input) { accessRequest { status } } }"
GRANTS = """query($filter: ActiveGrantFilter, $first: Int, $after: String) {
  activeGrants(filter: $filter, first: $first, after: $after) {
    edges { cursor node { id userId customerId accountNo region fields reason grantedBy grantedAt expiresAt
                          customer { accountNo phone orders(first: 1) { orderNo } } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""
REVOKE = """mutation($id: ID!, $reason: String!) { revokeAccessGrant(id: $id, reason: $reason) {
  accessRequest { id status revokedBy revokedAt revokeReason expiresAt } } }"""
STEWARD = {"roles": ["data_steward"], "sub": "u-steward-r"}
REP = "u-rev-rep"


@pytest.fixture(scope="module")
async def graph(systems: DemoSystems, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Graph]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('review')}/gateway.db"
    app = create_app(settings_for(systems, CG_DATABASE_URL=url, CG_RATE_LIMIT_PER_MINUTE="0"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield Graph(client)


def pool_by_region(systems: DemoSystems) -> dict[str, str]:
    """One pool customer (a sales rep sees its phone masked) per region."""
    body = httpx.get(
        systems.sales_url + "/api/v1/accounts",
        params={"unowned": "true", "per_page": 200},
        headers=systems.auth_headers("sales"),
    ).json()
    found: dict[str, str] = {}
    for account in body["data"]:
        if account.get("phone"):
            found.setdefault(account["region"], account["account_no"])
    return found


def code(result: dict[str, Any]) -> str:
    assert "errors" in result, result
    return str(result["errors"][0]["extensions"]["code"])


async def granted(graph: Graph, account_no: str, rep: str, fields: list[str]) -> str:
    asked = await graph.query(
        ASK,
        {"input": {"customerId": customer_id(account_no), "fields": fields, "reason": "跟进报价"}},
        roles=["sales_rep"],
        sub=rep,
    )
    assert "errors" not in asked, asked
    grant_id: str = asked["data"]["requestAccess"]["accessRequest"]["id"]
    decided = await graph.query(
        DECIDE, {"input": {"id": grant_id, "approve": True, "ttlHours": 4}}, **STEWARD
    )
    assert decided["data"]["decideAccessRequest"]["accessRequest"]["status"] == "APPROVED", decided
    return grant_id


async def nodes(graph: Graph, filter: dict[str, Any] | None = None, **who: Any) -> list[dict[str, Any]]:
    result = await graph.query(GRANTS, {"filter": filter, "first": 50}, **who)
    assert "data" in result and result["data"] and result["data"]["activeGrants"], result
    return [edge["node"] for edge in result["data"]["activeGrants"]["edges"]]


async def test_active_grants_by_region_and_filters(graph: Graph, systems: DemoSystems) -> None:
    regions = pool_by_region(systems)
    (r1, a1), (r2, a2) = sorted(regions.items())[:2]
    g1 = await granted(graph, a1, "u-ag-rep1", ["phone"])
    g2 = await granted(graph, a2, "u-ag-rep2", ["phone", "address"])

    everything = await nodes(graph, **STEWARD)
    assert {g1, g2} <= {n["id"] for n in everything}
    manager = {"roles": ["sales_manager"], "sub": "u-ag-m1", "region": r1}
    mine = await nodes(graph, **manager)
    assert g1 in {n["id"] for n in mine} and g2 not in {n["id"] for n in mine}
    assert all(n["region"] == r1 for n in mine)
    assert await nodes(graph, {"region": r2.upper()}, **manager) == []  # a filter never widens

    [node] = await nodes(graph, {"userId": "u-ag-rep2"}, **STEWARD)
    assert (node["id"], node["accountNo"], node["customerId"]) == (g2, a2, customer_id(a2))
    assert (node["fields"], node["reason"], node["grantedBy"]) == (
        ["phone", "address"],
        "跟进报价",
        STEWARD["sub"],
    )
    assert node["expiresAt"] and node["grantedAt"] and node["region"] == r2
    assert [n["id"] for n in await nodes(graph, {"field": "address"}, **STEWARD)] == [g2]
    assert [n["id"] for n in await nodes(graph, {"customerId": customer_id(a1)}, **STEWARD)] == [g1]
    assert [n["id"] for n in await nodes(graph, {"region": r2.upper(), "field": "phone"}, **STEWARD)] == [g2]

    # the customer follows the caller's own read policy: a steward reads phones, never orders
    result = await graph.query(GRANTS, {"filter": {"userId": "u-ag-rep1"}}, **STEWARD)
    customer = result["data"]["activeGrants"]["edges"][0]["node"]["customer"]
    assert customer["accountNo"] == a1 and "*" not in customer["phone"] and customer["orders"] is None
    assert {e["extensions"]["code"] for e in result["errors"]} == {"FORBIDDEN"}

    # paging
    first = await graph.query(GRANTS, {"first": 1}, **STEWARD)
    page = first["data"]["activeGrants"]
    assert page["pageInfo"]["hasNextPage"] and page["pageInfo"]["endCursor"] == page["edges"][0]["cursor"]
    second = await graph.query(GRANTS, {"first": 1, "after": page["pageInfo"]["endCursor"]}, **STEWARD)
    assert second["data"]["activeGrants"]["pageInfo"]["hasPreviousPage"]
    assert second["data"]["activeGrants"]["edges"][0]["node"]["id"] != page["edges"][0]["node"]["id"]


@pytest.mark.parametrize("role", ["sales_rep", "support_agent", "finance", "executive", "auditor", "legal"])
async def test_others_may_not_review_grants(graph: Graph, role: str) -> None:
    result = await graph.query(GRANTS, {}, roles=[role], sub=f"u-{role}", region="east")
    assert code(result) == "FORBIDDEN" and result["data"] is None


async def test_bad_review_input(graph: Graph) -> None:
    assert code(await graph.query(GRANTS, {"filter": {"field": "emial"}}, **STEWARD)) == "BAD_USER_INPUT"
    assert code(await graph.query(GRANTS, {"first": 0}, **STEWARD)) == "BAD_USER_INPUT"
    assert code(await graph.query(GRANTS, {"after": "bogus"}, **STEWARD)) == "BAD_USER_INPUT"
    assert code(await graph.query(GRANTS, {"filter": {"customerId": "nope"}}, **STEWARD)) == "BAD_USER_INPUT"


async def test_revoke_stops_the_grant_at_once_and_is_audited(graph: Graph, systems: DemoSystems) -> None:
    regions = pool_by_region(systems)
    region, account_no = sorted(regions.items())[-1]
    other_region = next(r for r in regions if r != region)
    gid = customer_id(account_no)
    grant_id = await granted(graph, account_no, REP, ["phone"])
    rep = {"roles": ["sales_rep"], "sub": REP}
    assert "*" not in (await graph.query(PHONE, {"id": gid}, **rep))["data"]["customer"]["phone"]

    reason = {"id": grant_id, "reason": "客户已投诉"}
    for who in (
        rep,
        {"roles": ["sales_manager"], "sub": "u-rv-m2", "region": other_region},
        {"roles": ["finance"], "sub": "u-rv-fin"},
        {"roles": ["auditor"], "sub": "u-rv-aud"},
    ):
        assert code(await graph.query(REVOKE, reason, **who)) == "FORBIDDEN", who
    assert "*" not in (await graph.query(PHONE, {"id": gid}, **rep))["data"]["customer"]["phone"]
    manager = {"roles": ["sales_manager"], "sub": "u-rv-m1", "region": region}
    assert code(await graph.query(REVOKE, {"id": grant_id, "reason": "  "}, **manager)) == "BAD_USER_INPUT"
    assert code(await graph.query(REVOKE, {"id": "nope", "reason": "x"}, **manager)) == "NOT_FOUND"

    revoked = await graph.query(REVOKE, reason, **manager)
    assert "errors" not in revoked, revoked
    request = revoked["data"]["revokeAccessGrant"]["accessRequest"]
    assert (request["status"], request["revokedBy"], request["revokeReason"]) == (
        "REVOKED",
        "u-rv-m1",
        "客户已投诉",
    )
    # the very next request: masked again
    assert "*" in (await graph.query(PHONE, {"id": gid}, **rep))["data"]["customer"]["phone"]
    assert grant_id not in {n["id"] for n in await nodes(graph, **STEWARD)}
    mine = await graph.query("{ accessRequests(status: REVOKED) { nodes { id status } } }", **rep)
    assert mine["data"]["accessRequests"]["nodes"] == [{"id": grant_id, "status": "REVOKED"}]
    assert code(await graph.query(REVOKE, reason, **manager)) == "CONFLICT"

    audit = await graph.query(
        """query($f: AuditLogFilter) { auditLog(filter: $f) { nodes { userId grantId customerIds detail } } }""",
        {"f": {"grantId": grant_id, "kinds": ["access_revocation"]}},
        roles=["auditor"],
        sub="u-aud",
    )
    [record] = audit["data"]["auditLog"]["nodes"]
    assert (record["userId"], record["customerIds"]) == ("u-rv-m1", [account_no])
    assert record["detail"] == {"accessRequestId": grant_id, "fields": ["phone"], "requester": REP}
    refusals = await graph.query(
        "query($f: AuditLogFilter) { auditLog(filter: $f) { nodes { userId detail } } }",
        {"f": {"kinds": ["denial"], "customerId": gid}},
        roles=["auditor"],
        sub="u-aud",
    )
    refused_by = {n["userId"] for n in refusals["data"]["auditLog"]["nodes"]}
    assert {REP, "u-rv-m2", "u-rv-fin", "u-rv-aud"} <= refused_by
