"""Live updates end to end: a change made through a demo system's API reaches a graphql-transport-ws
subscription on the gateway (served by uvicorn) within 2 s, through the subscriber's read policy.

The demo systems here are a copy in memory of the session's data (writes do not leak into other
tests) that POST their signed webhooks to the gateway's ``/hooks/*``, as ``customer-graph demo`` does.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx

from gateway.auth import issue_token

from .conftest import SECRET, customer_id
from .running import BUDGET, CHANGES, ONE, Live, connect, open_ticket, patch, subscribed, token, until


async def test_a_sales_change_reaches_each_subscriber_through_its_policy(quiet: Live) -> None:
    live = quiet
    # warm the cache: the change must evict it, or the subscribers would see the old title
    async with httpx.AsyncClient() as client:
        body = {
            "query": "query($id: ID!) { customer(id: $id) { title } }",
            "variables": {"id": customer_id(live.pool)},
        }
        headers = {"Authorization": f"Bearer {token(['support_agent'])}"}
        warm = await client.post(live.ws_url.replace("ws:", "http:"), json=body, headers=headers)
        assert warm.status_code == 200 and warm.json()["data"]["customer"] is not None

    async with (
        connect(live, token(["sales_rep"], live.rep)) as rep,
        connect(live, token(["support_agent"])) as agent,
    ):
        await rep.subscribe("rep", CHANGES)
        await agent.subscribe("agent", CHANGES)
        await subscribed(live, 2)
        changed = await patch(live, live.pool, title="Head of Purchasing")

        got = await rep.receive()
        latency = time.monotonic() - changed
        assert got["type"] == "next" and got["id"] == "rep", got
        change = got["payload"]["data"]["myCustomersChanged"]
        assert change["kind"] == "ACCOUNT_UPDATED" and change["system"] == "sales"
        customer = change["customer"]
        assert customer["accountNo"] == live.pool and customer["title"] == "Head of Purchasing"
        assert "*" in customer["phone"] and "***@" in customer["email"]  # a rep sees a pool customer masked
        assert latency < BUDGET, f"{latency:.3f} s from the change to the subscriber"

        seen = (await agent.receive())["payload"]["data"]["myCustomersChanged"]
        assert seen["eventId"] == change["eventId"]
        assert "*" not in seen["customer"]["phone"] and "***" not in seen["customer"]["email"]


async def test_a_rep_never_hears_of_another_reps_customer(quiet: Live) -> None:
    live = quiet
    async with connect(live, token(["sales_rep"], live.rep)) as rep:
        await rep.subscribe("1", CHANGES)
        await subscribed(live, 1)
        await patch(live, live.other, title="Not yours")  # first, so it would arrive first
        await patch(live, live.pool, title="Pool again")
        change = (await rep.receive())["payload"]["data"]["myCustomersChanged"]
        assert change["customer"]["accountNo"] == live.pool
        await rep.silent(1.0)


async def test_a_ticket_reaches_the_customers_rep_but_not_a_rep_on_the_pool(quiet: Live) -> None:
    """Support events name an e-mail; the gateway finds its customers. A rep may see tickets of its
    own customers, not of pool customers: it hears of the first, never of the second."""
    live = quiet
    async with connect(live, token(["sales_rep"], live.rep)) as rep:
        await rep.subscribe("1", CHANGES)
        await subscribed(live, 1)
        await open_ticket(live, live.pool_email, "Pool customer asks")  # first, so it would arrive first
        opened = await open_ticket(live, live.own_email, "Own customer asks")
        got = await rep.receive()
        latency = time.monotonic() - opened
        change = got["payload"]["data"]["myCustomersChanged"]
        assert change["kind"] == "TICKET_CREATED" and change["system"] == "support"
        assert change["customer"]["accountNo"] == live.own
        assert latency < BUDGET
        await rep.silent(1.0)


async def test_customer_changed_follows_one_customer(quiet: Live) -> None:
    live = quiet
    async with connect(live, header=token(["sales_rep"], live.rep), init=False) as rep:
        # the token may come with the upgrade request instead of connection_init
        await rep.ws.send(json.dumps({"type": "connection_init"}))
        assert (await rep.receive())["type"] == "connection_ack"
        await rep.subscribe("own", ONE, {"id": customer_id(live.own)})
        await subscribed(live, 1)
        await patch(live, live.pool, title="Someone else")  # not this subscription's customer
        await open_ticket(live, live.own_email, "Invoice question")
        got = (await rep.receive())["payload"]
        change = got["data"]["customerChanged"]
        assert change["kind"] == "TICKET_CREATED"
        assert change["customer"]["accountNo"] == live.own
        assert change["customer"]["tickets"][0]["subject"] == "Invoice question"  # fresh, not cached
        await rep.silent(0.5)


async def test_not_found_unauthenticated_and_no_queries(quiet: Live) -> None:
    live = quiet
    async with connect(live, token(["sales_rep"], live.rep)) as rep:
        await rep.subscribe("other", ONE, {"id": customer_id(live.other)})
        refused = await rep.receive()
        assert refused["type"] == "error" and refused["id"] == "other"
        assert refused["payload"][0]["extensions"]["code"] == "NOT_FOUND"

        await rep.subscribe("q", "{ viewer { id } }")
        refused = await rep.receive()
        assert refused["type"] == "error" and refused["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    async with connect(live) as anonymous:
        await anonymous.subscribe("1", CHANGES)
        refused = await anonymous.receive()
        assert refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    async with connect(live, "not-a-jwt") as bad:
        await bad.subscribe("1", CHANGES)
        refused = (await bad.receive())["payload"][0]
        assert refused["extensions"]["code"] == "UNAUTHENTICATED" and "JWT" in refused["message"]


async def test_change_to_subscriber_latency(quiet: Live) -> None:
    """The median over several changes; printed for the record (``pytest -s``)."""
    live = quiet
    latencies: list[float] = []
    async with connect(live, token(["sales_rep"], live.rep)) as rep:
        await rep.subscribe("1", CHANGES)
        await subscribed(live, 1)
        for n in range(12):
            changed = await patch(live, live.own, title=f"Buyer {n}")
            change = (await rep.receive())["payload"]["data"]["myCustomersChanged"]
            latencies.append(time.monotonic() - changed)
            assert change["customer"]["title"] == f"Buyer {n}"
    median = statistics.median(latencies)
    print(
        f"\nchange → subscriber: median {median * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        f" over {len(latencies)} changes"
    )
    assert max(latencies) < BUDGET


async def test_a_subscription_stops_when_its_token_expires(quiet: Live) -> None:
    live = quiet
    short = issue_token(SECRET, sub=live.rep, roles=["sales_rep"], ttl_seconds=2)
    expires = time.time() + 2
    async with connect(live, short) as rep:
        await rep.subscribe("1", CHANGES)
        await subscribed(live, 1)
        await asyncio.sleep(max(0.0, expires - time.time()) + 0.2)
        await patch(live, live.own, title="After expiry")
        ended = await rep.receive()
        assert ended["type"] == "next" and ended["payload"]["data"] is None
        assert ended["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert (await rep.receive())["type"] == "complete"
    await until(lambda: live.gateway.live.bus.subscribers == 0)


async def test_each_event_is_audited_before_it_is_sent(quiet: Live) -> None:
    live = quiet
    async with connect(live, token(["sales_rep"], live.rep)) as rep:
        await rep.subscribe("audited", CHANGES)
        await subscribed(live, 1)
        await patch(live, live.pool, title="Audited title")
        got = await rep.receive()
        assert got["type"] == "next"
    from features.store import AuditFilter

    page = await live.gateway.audit.query(AuditFilter(user_sub=live.rep, customer_id=live.pool), first=10)
    streamed = [r for r in page.records if r.operation_type == "subscription" and r.kind == "read"]
    assert streamed, "the subscription's event left no audit record"
    assert streamed[0].fields[live.pool] == {"phone": "mask", "email": "mask", "title": "allow"}
