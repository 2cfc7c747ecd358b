"""A write is never sent unrecorded, and never recorded as nothing when its record was lost.

The outside review stopped the audit database: ``logActivity`` answered INTERNAL, the activity existed
in the sales system, and no audit record said so. Here the gateway runs on PostgreSQL behind a TCP
proxy that the test stops and starts (a real outage, not a mock):

- database down before the write: the write is refused and nothing reaches the sales system;
- database gone while the write is at the sales system: the caller gets INTERNAL, and once the
  database is back the journal's check writes the open intent into the trail (``outcome: unknown``);
- the normal path: intent and audit record close together.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from demo.data import DemoExamples
from demo.servers import DemoSystems
from gateway.app import Gateway, create_app
from tests.store.conftest import pg_url  # noqa: F401 (the fixture)
from tests.store.proxy import TcpProxy
from tests.test_webhooks import SALES_SECRET, post_sales, sales_body

from .conftest import customer_id, keyed_database, settings_for
from .test_request_limits import auth

pytestmark = pytest.mark.services

LOG = "mutation($id: ID!, $s: String!) { logActivity(input: {customerId: $id, type: CALL, subject: $s}) { activity { activityId } } }"


@pytest.fixture
async def behind_proxy(
    pg_url: str,  # noqa: F811 (the fixture imported above)
    systems: DemoSystems,
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, TcpProxy]]:
    target = make_url(pg_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    schema = f"cg_journal_{uuid.uuid4().hex[:10]}"
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = create_app(
        settings_for(systems, CG_DATABASE_URL=f"{url}?schema={schema}", CG_SALES_WEBHOOK_SECRET=SALES_SECRET)
    )
    gateway: Gateway = app.state.gateway
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30
            ) as client,
        ):
            try:
                yield client, gateway, proxy
            finally:
                if proxy._server is None:
                    await proxy.start()  # the gateway shuts down against a database that answers
    finally:
        await proxy.stop()
        await _drop(pg_url, schema)


async def _drop(url: str, schema: str) -> None:

    db = keyed_database(url)
    try:
        async with db.engine.begin() as conn:
            import sqlalchemy as sa

            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await db.aclose()


def _activities(systems: DemoSystems, account_no: str) -> list[dict[str, Any]]:
    response = httpx.get(
        systems.sales_url + "/api/v1/activities",
        params={"account_nos": account_no, "per_page": 200},
        headers=systems.auth_headers("sales"),
    )
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def _log(client: httpx.AsyncClient, account_no: str, subject: str, rep: str) -> dict[str, Any]:
    answer = await client.post(
        "/graphql",
        json={"query": LOG, "variables": {"id": customer_id(account_no), "s": subject}},
        headers=auth(["sales_rep"], rep),
    )
    body: dict[str, Any] = answer.json()
    return body


async def test_no_write_is_sent_while_the_journal_is_down(
    behind_proxy: tuple[httpx.AsyncClient, Gateway, TcpProxy], systems: DemoSystems, examples: DemoExamples
) -> None:
    client, _, proxy = behind_proxy
    systems.clear_faults()
    before = len(_activities(systems, examples.owned))
    await proxy.stop()
    refused = await _log(client, examples.owned, "not while the store is down", examples.rep)
    [error] = refused["errors"]
    assert error["extensions"]["code"] == "INTERNAL" and "not sent" in error["message"]
    assert len(_activities(systems, examples.owned)) == before  # nothing reached the sales system


async def test_a_write_whose_record_was_lost_is_flagged_in_the_trail(
    behind_proxy: tuple[httpx.AsyncClient, Gateway, TcpProxy], systems: DemoSystems, examples: DemoExamples
) -> None:
    client, gateway, proxy = behind_proxy
    subject = f"lost record {uuid.uuid4().hex[:6]}"
    systems.set_faults("sales", latency_ms=1500)  # the write stays at the sales system a while
    try:
        pending = asyncio.ensure_future(_log(client, examples.owned, subject, examples.rep))
        for _ in range(100):  # until the intent is committed: the write is then at the sales system
            if await gateway.journal.open_count() == 1:
                break
            await asyncio.sleep(0.05)
        await proxy.stop()  # ... and the database goes away before the outcome is recorded
        answer = await pending
    finally:
        systems.clear_faults()
    assert answer["errors"][0]["extensions"]["code"] == "INTERNAL", answer
    assert any(a["subject"] == subject for a in _activities(systems, examples.owned))  # it did happen
    await proxy.start()
    assert await gateway.journal.open_count() == 1
    # what the gateway's start-up (and minutely) check does: the open intent goes into the trail
    assert await gateway.journal.flag_stale(gateway.audit, older_than=timedelta(0)) == 1
    log = await client.post(
        "/graphql",
        json={
            "query": '{ auditLog(filter: {kinds: ["write"]}, first: 5) { nodes { userId customerIds detail } } }'
        },
        headers=auth(["data_steward"], "u-steward"),
    )
    [record] = [n for n in log.json()["data"]["auditLog"]["nodes"] if (n["detail"] or {}).get("outcome")]
    assert record["detail"]["outcome"] == "unknown" and record["detail"]["operation"] == "logActivity"
    assert record["userId"] == examples.rep and record["customerIds"] == [examples.owned]
    assert await gateway.journal.open_count() == 0


async def test_the_normal_path_closes_the_intent_with_the_record(
    behind_proxy: tuple[httpx.AsyncClient, Gateway, TcpProxy], systems: DemoSystems, examples: DemoExamples
) -> None:
    client, gateway, _ = behind_proxy
    systems.clear_faults()
    answer = await _log(client, examples.owned, "normal path", examples.rep)
    assert "errors" not in answer, answer
    assert await gateway.journal.open_count() == 0
    assert await gateway.journal.flag_stale(gateway.audit, older_than=timedelta(0)) == 0


async def test_a_webhook_is_503_with_retry_after_while_the_database_is_down(
    behind_proxy: tuple[httpx.AsyncClient, Gateway, TcpProxy],
) -> None:
    """The review got 500 (documented: 503 + Retry-After, so the system delivers it again)."""
    client, _, proxy = behind_proxy
    await proxy.stop()
    response = await post_sales(client, sales_body("ev_db_down"))
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    await proxy.start()
    assert (await post_sales(client, sales_body("ev_db_down"))).status_code == 202  # taken once it is back
