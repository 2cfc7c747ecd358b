"""A data subject's export as the privacy officer meets it: requested in the graph, followed to the end,
downloaded as JSON and HTML — and equal to what the three demo systems hold for that customer, read from
their own databases. Nobody else may request or download it."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from demo.data import DemoExamples
from demo.servers import DemoSystems
from gateway.app import create_app
from gateway.auth import issue_token

from .conftest import SECRET, Graph, customer_id, settings_for
from .running import in_memory_copy

PRIVACY = ["privacy_officer"]
REQUEST = "mutation($id: ID!) { requestDataExport(customerId: $id) { id status } }"
FOLLOW = """query($id: ID!) { dataRequest(id: $id) { status progress error jsonUrl htmlUrl
  parts { name source readAt count } } }"""


@pytest.fixture(scope="module")
async def graph(systems: DemoSystems) -> AsyncIterator[Graph]:
    folder = tempfile.mkdtemp(prefix="cg-privacy-")
    demo = in_memory_copy(systems).start()
    app = create_app(
        settings_for(
            demo, CG_DATABASE_URL=f"sqlite+aiosqlite:///{folder}/gateway.db", CG_PRIVACY_FOLDER=folder
        )
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
        ):
            yield Graph(client)
    finally:
        demo.stop()


def _rows(db: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


async def _export(graph: Graph, account_no: str) -> dict[str, Any]:
    started = await graph.query(REQUEST, {"id": customer_id(account_no)}, roles=PRIVACY, sub="u-dpo")
    assert "errors" not in started, started
    request_id = started["data"]["requestDataExport"]["id"]
    for _ in range(600):
        state = (await graph.query(FOLLOW, {"id": request_id}, roles=PRIVACY, sub="u-dpo"))["data"][
            "dataRequest"
        ]
        if state["status"] in ("DONE", "FAILED"):
            break
        assert 0.0 <= state["progress"] <= 1.0
        await asyncio.sleep(0.05)
    assert state["status"] == "DONE", state
    assert state["progress"] == 1.0
    return {"id": request_id, **state}


async def test_an_export_equals_what_the_systems_hold(
    graph: Graph, systems: DemoSystems, examples: DemoExamples
) -> None:
    account_no = examples.confidential_contract  # a company with orders, tickets, and a confidential contract
    state = await _export(graph, account_no)
    assert {p["name"]: p["source"] for p in state["parts"]} == {
        "account": "sales",
        "orders": "sales",
        "payments": "sales",
        "opportunities": "sales",
        "activities": "sales",
        "requesters": "support",
        "tickets": "support",
        "satisfaction": "support",
        "contracts": "contracts",
        "supportIdentities": "gateway",
        "duplicatePairs": "gateway",
        "poolHistory": "gateway",
        "changeHistory": "gateway",
        "auditRecords": "gateway",
    }
    assert all(p["readAt"] for p in state["parts"])
    headers = {"Authorization": f"Bearer {issue_token(SECRET, sub='u-dpo', roles=PRIVACY)}"}
    response = await graph.client.get(state["jsonUrl"], headers=headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    export = response.json()
    parts = {p["name"]: p for p in export["parts"]}
    assert all(p["readAt"] and p["count"] == len(p["items"]) for p in export["parts"])

    sales, support, contracts = (
        str(p) for p in (systems.data.sales_db, systems.data.support_db, systems.data.contracts_db)
    )
    [(email, tax_id, name)] = _rows(
        sales, "SELECT lower(trim(email)), tax_id, name FROM accounts WHERE account_no = ?", account_no
    )
    assert (
        parts["account"]["items"][0]["account_no"] == account_no
        and parts["account"]["items"][0]["name"] == name
    )
    for part, table, key in (
        ("orders", "orders", "order_no"),
        ("payments", "payments", "payment_id"),
        ("opportunities", "opportunities", "opportunity_id"),
        ("activities", "activities", "activity_id"),
    ):
        held = {r[0] for r in _rows(sales, f"SELECT {key} FROM {table} WHERE account_no = ?", account_no)}
        assert {item[key] for item in parts[part]["items"]} == held, part
    tickets = {
        r[0]: r[1]
        for r in _rows(
            support,
            "SELECT id, (SELECT count(*) FROM comments c WHERE c.ticket_id = t.id) FROM tickets t WHERE requester_email = ?",
            email,
        )
    }
    assert tickets, "the example has tickets"
    exported = {int(item["ticket"]["id"]): len(item["comments"]) for item in parts["tickets"]["items"]}
    assert exported == tickets  # every ticket, every comment (internal notes included)
    assert [r["email"] for r in parts["requesters"]["items"]] == [email]
    held_contracts = {
        r[0]: bool(r[1])
        for r in _rows(
            contracts, "SELECT contract_id, confidential FROM contracts WHERE party_tax_id = ?", tax_id
        )
    }
    assert {c["contract_id"]: c["confidential"] for c in parts["contracts"]["items"]} == held_contracts
    assert True in held_contracts.values()  # confidential contracts are the subject's data too
    # the export itself is audited: a later export holds that record among those about the customer
    again = await _export(graph, account_no)
    later = (await graph.client.get(again["jsonUrl"], headers=headers)).json()
    [audit] = [p for p in later["parts"] if p["name"] == "auditRecords"]
    operations = [(r["detail"] or {}).get("operation") for r in audit["items"]]
    assert "requestDataExport" in operations

    page = await graph.client.get(state["htmlUrl"], headers=headers)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert name in page.text and "<script" not in page.text.lower()


async def test_only_the_privacy_officer(graph: Graph, examples: DemoExamples) -> None:
    for role in ("data_steward", "auditor", "sales_manager", "executive"):
        refused = await graph.query(
            REQUEST, {"id": customer_id(examples.person)}, roles=[role], region="east"
        )
        assert refused["errors"][0]["extensions"]["code"] in ("FORBIDDEN", "NOT_FOUND"), refused
    state = await _export(graph, examples.person)
    for role in ("data_steward", "auditor"):
        headers = {"Authorization": f"Bearer {issue_token(SECRET, sub='u-x', roles=[role])}"}
        assert (await graph.client.get(state["jsonUrl"], headers=headers)).status_code == 403
    assert (await graph.client.get(state["jsonUrl"])).status_code == 401
    other = await graph.query(FOLLOW, {"id": state["id"]}, roles=["data_steward"])
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_the_cli_exports_too(
    systems: DemoSystems, examples: DemoExamples, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from gateway.cli import main

    for key, value in {
        "CG_SALES_URL": systems.sales_url,
        "CG_SALES_API_KEY": systems.sales_api_key,
        "CG_SUPPORT_URL": systems.support_url,
        "CG_SUPPORT_TOKEN": systems.support_token,
        "CG_CONTRACTS_URL": systems.contracts_url,
        "CG_CONTRACTS_USER": systems.contracts_user,
        "CG_CONTRACTS_PASSWORD": systems.contracts_password,
        "CG_JWT_SECRET": SECRET,
    }.items():
        monkeypatch.setenv(key, value)
    db = f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
    argv = ["privacy", "export", examples.person, "--by", "u-dpo", "--out", str(tmp_path), "--no-progress"]
    assert await asyncio.to_thread(main, [*argv, "--database-url", db]) == 0
    [exported] = list(tmp_path.glob("*.json"))
    assert examples.person in exported.read_text() and exported.with_suffix(".html").is_file()
    missing = ["privacy", "export", "A999999", "--by", "u-dpo", "--out", str(tmp_path), "--no-progress"]
    assert await asyncio.to_thread(main, [*missing, "--database-url", db]) == 1
