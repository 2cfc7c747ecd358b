"""A data subject's erasure as privacy officers meet it — asked by one, refused to the same one, approved by
a second, followed to the end system by system — and what everyone else meets afterwards: no query by any
role, caches warm beforehand, returns an erased value; the gateway's own database holds none of them; the
audit chain still verifies; the sales system holds nulls; support and contracts report a legal hold."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from demo.data import DemoExamples
from demo.servers import DemoSystems
from features.erasure import STALE_AFTER
from features.store import AuditLog
from features.store.models import erasures, metadata
from gateway.app import Gateway, create_app
from gateway.auth import issue_token
from gateway.upstreams import build_upstreams

from .conftest import SECRET, Graph, customer_id, settings_for
from .running import in_memory_copy

CUSTOMER = """query($id: ID!) { customer(id: $id) {
  accountNo name contactName title email phone address taxId
  tickets(first: 50) { id subject requesterEmail }
  satisfaction { rated }
  supportIdentities { email origin }
  activities(first: 5) { subject }
  contracts { contractId partyName }
  history(first: 100) { edges { node { at source kind actor before after detail } } }
} }"""
AUDIT = """query($filter: AuditLogFilter) { auditLog(filter: $filter, first: 200) {
  nodes { id kind userId customerIds before after detail redacted } } }"""
STEWARD = """{ duplicateCandidates(first: 100) { edges { node {
    score first { accountNo email } second { accountNo email } } } }
  unmatchedRequesters(first: 100) { edges { node { email displayName } } } }"""
SEARCH = """query($q: String!) { customers(first: 20, filter: { search: $q }) {
  totalCount edges { node { accountNo contactName email phone } } } }"""
UPDATE = """mutation($input: UpdateCustomerContactInput!) {
  updateCustomerContact(input: $input) { customer { email phone } } }"""
REQUEST = """mutation($id: ID!, $reason: String!) { requestErasure(customerId: $id, reason: $reason) {
  id status requestedBy systems { system status } } }"""
DECIDE = """mutation($id: ID!, $approve: Boolean!) { decideErasure(id: $id, approve: $approve) {
  id status decidedBy } }"""
FOLLOW = """query($id: ID!) { erasureRequest(id: $id) { status finishedAt
  systems { system status note at } } }"""
EXPORT = "mutation($id: ID!) { requestDataExport(customerId: $id) { id } }"
EXPORTED = "query($id: ID!) { dataRequest(id: $id) { status jsonUrl } }"

PRIVACY = ["privacy_officer"]
EVERY_ROLE: list[tuple[list[str], str]] = [
    (["sales_manager"], "u-mgr"),
    (["support_agent"], "u-agent"),
    (["finance"], "u-fin"),
    (["legal"], "u-legal"),
    (["executive"], "u-exec"),
    (["auditor"], "u-aud"),
    (["data_steward"], "u-steward"),
    (["privacy_officer"], "u-dpo-a"),
]


@dataclass
class Setup:
    graph: Graph
    gateway: Gateway
    demo: DemoSystems
    folder: Path


@pytest.fixture(scope="module")
async def setup(systems: DemoSystems) -> AsyncIterator[Setup]:
    folder = Path(tempfile.mkdtemp(prefix="cg-erasure-"))
    demo = in_memory_copy(systems).start()
    app = create_app(
        settings_for(
            demo,
            CG_DATABASE_URL=f"sqlite+aiosqlite:///{folder}/gateway.db",
            CG_PRIVACY_FOLDER=str(folder),
            CG_CACHE="true",  # erased values must not outlive the erasure in a cache
        )
    )
    gateway: Gateway = app.state.gateway
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
        ):
            yield Setup(Graph(client), gateway, demo, folder)
    finally:
        demo.stop()


def _sales_account(demo: DemoSystems, account_no: str) -> dict[str, Any]:
    response = httpx.get(
        f"{demo.sales_url}/api/v1/accounts/{account_no}", headers=demo.auth_headers("sales"), timeout=5
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _erased_forms(values: list[str]) -> list[str]:
    """Every form an erased value could take in an answer: as typed, lower case, E.164 digits."""
    forms: set[str] = set()
    for value in values:
        forms |= {value, value.lower(), value.replace(" ", ""), value.replace(" ", "").replace("-", "")}
    return sorted(f for f in forms if len(f) >= 4)


async def _ok(
    graph: Graph, query: str, variables: dict[str, Any], roles: list[str], sub: str
) -> dict[str, Any]:
    result = await graph.query(query, variables, roles=roles, sub=sub)
    assert "errors" not in result, result
    return result


async def _opened(gateway: Gateway) -> str:
    """Every table of the gateway database read with its data keys (sealed values opened), as text."""
    opened: dict[str, Any] = {}
    async with gateway.database.read() as db:
        for table in metadata.sorted_tables:
            opened[table.name] = [dict(r) for r in (await db.execute(sa.select(table))).mappings()]
    return json.dumps(opened, ensure_ascii=False, default=str)


async def _until_done(graph: Graph, erasure_id: str) -> dict[str, Any]:
    for _ in range(400):
        state = (await _ok(graph, FOLLOW, {"id": erasure_id}, PRIVACY, "u-dpo-a"))["data"]["erasureRequest"]
        if state["status"] in ("DONE", "FAILED"):
            return dict(state)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the erasure did not end: {state}")


async def test_an_erasure_leaves_no_erased_value_in_any_answer(setup: Setup, examples: DemoExamples) -> None:
    graph, demo = setup.graph, setup.demo
    account_no = examples.company
    cid = customer_id(account_no)
    raw = _sales_account(demo, account_no)
    owner = raw["owner_id"]
    old_email = raw["email"]
    new_email = f"erase.me.{account_no.lower()}@example.cn"

    # Before: a contact change through the gateway (its values in the audit trail; the old e-mail kept
    # as a previous support identity, so its tickets follow), a rep's search for the contact, an export.
    await _ok(graph, UPDATE, {"input": {"customerId": cid, "email": new_email}}, ["support_agent"], "u-agent")
    assert {"email": old_email.strip().lower(), "origin": "PREVIOUS"} in (
        await graph.query(CUSTOMER, {"id": cid}, roles=["support_agent"], sub="u-agent")
    )["data"]["customer"]["supportIdentities"]
    await _ok(graph, SEARCH, {"q": raw["contact_name"]}, ["sales_rep"], owner)
    export = (await _ok(graph, EXPORT, {"id": cid}, PRIVACY, "u-dpo-a"))["data"]["requestDataExport"]["id"]
    for _ in range(400):
        exported = (await _ok(graph, EXPORTED, {"id": export}, PRIVACY, "u-dpo-a"))["data"]["dataRequest"]
        if exported["status"] == "DONE":
            break
        await asyncio.sleep(0.05)
    assert exported["status"] == "DONE"
    erased = _erased_forms(
        [
            v
            for v in (raw["contact_name"], raw["title"], raw["phone"], raw["address"], old_email, new_email)
            if v
        ]
    )
    # every role reads the customer now: the caches are warm with its values
    for roles, sub in [*EVERY_ROLE, (["sales_rep"], owner)]:
        await graph.query(CUSTOMER, {"id": cid}, roles=roles, sub=sub)  # some fields denied: partial
    assert raw["contact_name"] in await _opened(setup.gateway)  # the rep's search term: the probe can tell
    before = json.dumps(
        await graph.query(CUSTOMER, {"id": cid}, roles=["data_steward"], sub="u-steward"), ensure_ascii=False
    )
    assert any(form in before for form in erased)  # the probe can tell

    # One privacy officer asks; the same one may not approve; nothing has happened yet.
    asked = await _ok(
        graph, REQUEST, {"id": cid, "reason": "data subject's request of 2026-12-01"}, PRIVACY, "u-dpo-a"
    )
    erasure = asked["data"]["requestErasure"]
    assert erasure["status"] == "PENDING_APPROVAL" and erasure["requestedBy"] == "u-dpo-a"
    own = await graph.query(DECIDE, {"id": erasure["id"], "approve": True}, roles=PRIVACY, sub="u-dpo-a")
    assert own["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    again = await graph.query(REQUEST, {"id": cid, "reason": "twice"}, roles=PRIVACY, sub="u-dpo-a")
    assert again["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert _sales_account(demo, account_no)["contact_name"] == raw["contact_name"]
    for roles in (["data_steward"], ["support_agent"]):  # other roles cannot see or decide erasures
        denied = await graph.query(DECIDE, {"id": erasure["id"], "approve": True}, roles=roles, sub="u-x")
        assert denied["errors"][0]["extensions"]["code"] in ("FORBIDDEN", "NOT_FOUND")

    # A second one approves; it runs to the end.
    approved = await _ok(graph, DECIDE, {"id": erasure["id"], "approve": True}, PRIVACY, "u-dpo-b")
    assert approved["data"]["decideErasure"]["decidedBy"] == "u-dpo-b"
    state = await _until_done(graph, erasure["id"])
    assert state["status"] == "DONE", state
    steps = {s["system"]: s for s in state["systems"]}
    assert {k: s["status"] for k, s in steps.items()} == {
        "sales": "DONE",
        "support": "RETAINED",
        "contracts": "RETAINED",
        "gateway": "DONE",
    }
    assert "legal hold" in steps["support"]["note"] and "legal hold" in steps["contracts"]["note"]
    assert not any(form in json.dumps(state, ensure_ascii=False) for form in erased)

    # The sales system holds nulls where the contact was; the name and the bookkeeping stay.
    now = _sales_account(demo, account_no)
    assert [now[f] for f in ("contact_name", "title", "email", "phone", "address")] == [None] * 5
    assert now["name"] == raw["name"]

    # No answer to any role carries an erased value: the customer, its history, the audit trail, the
    # steward's lists, a search for the contact's name.
    for roles, sub in [*EVERY_ROLE, (["sales_rep"], owner)]:
        answers = [await graph.query(CUSTOMER, {"id": cid}, roles=roles, sub=sub)]
        answers.append(await graph.query(SEARCH, {"q": raw["contact_name"]}, roles=roles, sub=sub))
        if roles[0] in ("auditor", "data_steward"):
            trail = await _ok(graph, AUDIT, {"filter": {"customerId": cid}}, roles, sub)
            changed = [
                r for r in trail["data"]["auditLog"]["nodes"] if r["kind"] == "write" and r["redacted"]
            ]
            assert any("before.email" in r["redacted"] for r in changed)  # the fact stays, the value went
            answers.append(trail)
            answers.append(await _ok(graph, AUDIT, {"filter": {"kinds": ["search"]}}, roles, sub))
        if roles[0] == "data_steward":
            answers.append(await _ok(graph, STEWARD, {}, roles, sub))
        for answer in answers:  # every error is a field the policy denies, never a query that did not run
            assert all(
                e.get("path") and e["extensions"]["code"] == "FORBIDDEN" for e in answer.get("errors", [])
            )
        text = json.dumps(answers, ensure_ascii=False)
        leaked = [form for form in erased if form in text]
        assert not leaked, (roles, leaked)
    agent = (await graph.query(CUSTOMER, {"id": cid}, roles=["support_agent"], sub="u-agent"))["data"]
    assert agent["customer"]["tickets"] == []  # the helpdesk's, no longer linked
    assert agent["customer"]["supportIdentities"] == []
    legal = (await graph.query(CUSTOMER, {"id": cid}, roles=["legal"], sub="u-legal"))["data"]
    assert legal["customer"]["contracts"]  # the register's, kept under legal hold, still the company's

    # The export's file is gone; the gateway's database holds no erased value; the chain verifies.
    gone = await graph.client.get(exported["jsonUrl"], headers={"Authorization": _bearer("u-dpo-a")})
    assert gone.status_code == 404
    await setup.gateway.audit.aclose()
    with sqlite3.connect(setup.folder / "gateway.db") as conn:  # the file as stored
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        stored = json.dumps(
            {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables},
            ensure_ascii=False,
            default=str,
        )
    dump = stored + await _opened(setup.gateway)
    assert not [form for form in erased if form in dump]
    assert (await AuditLog(setup.gateway.database).verify()).ok


async def test_a_rejected_erasure_changes_nothing(setup: Setup, examples: DemoExamples) -> None:
    graph = setup.graph
    cid = customer_id(examples.person)
    raw = _sales_account(setup.demo, examples.person)
    asked = await _ok(graph, REQUEST, {"id": cid, "reason": "asked by phone"}, PRIVACY, "u-dpo-a")
    erasure_id = asked["data"]["requestErasure"]["id"]
    rejected = await _ok(graph, DECIDE, {"id": erasure_id, "approve": False}, PRIVACY, "u-dpo-b")
    assert rejected["data"]["decideErasure"]["status"] == "REJECTED"
    twice = await graph.query(DECIDE, {"id": erasure_id, "approve": True}, roles=PRIVACY, sub="u-dpo-c")
    assert twice["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert _sales_account(setup.demo, examples.person)["email"] == raw["email"]


async def test_a_failed_system_is_resumed_without_redoing_the_rest(
    setup: Setup, examples: DemoExamples
) -> None:
    """The sales system refuses the gateway's credentials during the erasure (an operator's mistake): the
    erasure fails at that step with nothing of the gateway's done; once mended, a second officer resumes
    it and only the rest runs."""
    graph, demo = setup.graph, setup.demo
    account_no = examples.pool
    cid = customer_id(account_no)
    asked = await _ok(graph, REQUEST, {"id": cid, "reason": "subject's request"}, PRIVACY, "u-dpo-a")
    erasure_id = asked["data"]["requestErasure"]["id"]
    eraser = setup.gateway.privacy.eraser
    working = eraser._sales
    refused = build_upstreams(settings_for(demo, CG_SALES_API_KEY="not-the-key")).sales
    eraser._sales = lambda: refused
    try:
        await _ok(graph, DECIDE, {"id": erasure_id, "approve": True}, PRIVACY, "u-dpo-b")
        failed = await _until_done(graph, erasure_id)
    finally:
        eraser._sales = working
    assert failed["status"] == "FAILED"
    steps = {s["system"]: s for s in failed["systems"]}
    assert steps["sales"]["status"] == "FAILED" and "resume" in steps["sales"]["note"]
    assert steps["gateway"]["status"] == "PENDING"  # nothing of the gateway's before sales is done
    assert _sales_account(demo, account_no)["email"] is not None
    resume = "mutation($id: ID!) { resumeErasure(id: $id) { status } }"
    own = await graph.query(resume, {"id": erasure_id}, roles=PRIVACY, sub="u-dpo-a")
    assert own["errors"][0]["extensions"]["code"] == "FORBIDDEN"  # the requester may not push it on alone
    resumed = await _ok(graph, resume, {"id": erasure_id}, PRIVACY, "u-dpo-b")
    assert resumed["data"]["resumeErasure"]["status"] == "RUNNING"
    done = await _until_done(graph, erasure_id)
    assert done["status"] == "DONE", done
    assert _sales_account(demo, account_no)["email"] is None
    again = await graph.query(resume, {"id": erasure_id}, roles=PRIVACY, sub="u-dpo-b")
    assert again["errors"][0]["extensions"]["code"] == "CONFLICT"  # done: nothing to resume


def _bearer(sub: str) -> str:
    return "Bearer " + issue_token(SECRET, sub=sub, roles=PRIVACY)


async def test_an_erasure_whose_instance_stopped_runs_on_elsewhere(
    setup: Setup, examples: DemoExamples
) -> None:
    """An instance died while running an erasure (it stays ``RUNNING``, its heartbeat stops): after
    ``STALE_AFTER`` another instance's minute check takes it over and finishes it."""
    graph = setup.graph
    account_no = examples.no_phone
    asked = await _ok(
        graph, REQUEST, {"id": customer_id(account_no), "reason": "by letter"}, PRIVACY, "u-dpo-a"
    )
    erasure_id = asked["data"]["requestErasure"]["id"]
    stopped = datetime.now(UTC) - STALE_AFTER - timedelta(seconds=1)
    async with setup.gateway.database.write_transaction() as conn:
        await conn.execute(
            erasures.update()
            .where(erasures.c.id == erasure_id)
            .values(status="running", decided_by="u-dpo-b", decided_at=stopped, heartbeat_at=stopped)
        )
    assert await setup.gateway.privacy.resume_stopped() == 1
    assert await setup.gateway.privacy.resume_stopped() == 0  # taken once
    done = await _until_done(graph, erasure_id)
    assert done["status"] == "DONE", done
    assert _sales_account(setup.demo, account_no)["email"] is None
