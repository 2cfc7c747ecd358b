"""What a caller of the demo systems notices: limits, paging, rate limits, concurrency, idempotency,
faults and stats."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from openapi_core import OpenAPI

from demo import contracts as contracts_system
from demo import sales as sales_system
from demo import support as support_system
from demo.data import DAY, DORMANT_DAYS, DemoExamples, anchor_epoch, day, iso
from demo.servers import DemoSystems

from .conftest import ANCHOR, CUSTOMERS, SEED, check_against


def async_client(demo: DemoSystems, system: str, **kwargs: Any) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    return httpx.AsyncClient(
        base_url=demo.urls[system], headers=demo.auth_headers(system), limits=limits, **kwargs
    )


def email_of(sales: httpx.Client, account_no: str) -> str:
    email: str = sales.get(f"/api/v1/accounts/{account_no}").json()["email"]
    return email


# --- batch limits and paging -----------------------------------------------------------------


def test_batch_limits_are_exact(sales: httpx.Client, support: httpx.Client) -> None:
    ids = [f"A{100001 + i}" for i in range(101)]
    assert len(sales.get("/api/v1/accounts", params={"ids": ",".join(ids[:100])}).json()["data"]) == 100
    assert sales.get("/api/v1/accounts", params={"ids": ",".join(ids)}).status_code == 400
    emails = [f"user{i}@example.cn" for i in range(201)]
    for path in ("/v2/requesters", "/v2/satisfaction"):
        assert support.get(path, params={"emails": ",".join(emails[:200])}).status_code == 200
        assert support.get(path, params={"emails": ",".join(emails)}).status_code == 400
    search = "/v2/tickets/search"
    assert support.post(search, json={"requester_emails": emails[:200], "limit": 500}).status_code == 200
    assert support.post(search, json={"requester_emails": emails}).status_code == 400


def search_all(support: httpx.Client, body: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    tickets: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        page = support.post("/v2/tickets/search", json=body | {"cursor": cursor}).json()
        pages += 1
        tickets += page["tickets"]
        cursor = page["next_cursor"]
        if cursor is None:
            return tickets, pages


def test_cursor_paging_returns_every_ticket_once(
    demo: DemoSystems, support: httpx.Client, sales: httpx.Client, examples: DemoExamples
) -> None:
    email = email_of(sales, examples.paged_tickets)
    with sqlite3.connect(demo.data.support_db) as db:
        expected = {
            r[0] for r in db.execute("SELECT id FROM tickets WHERE requester_email = ?", (email.lower(),))
        }
    assert len(expected) > 500
    tickets, pages = search_all(support, {"requester_emails": [email], "limit": 100})
    ids = [t["id"] for t in tickets]
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert pages == -(-len(expected) // 100)
    created = [t["created_at"] for t in tickets]
    assert created == sorted(created, reverse=True)


def test_cursor_paging_over_several_requesters(
    support: httpx.Client, sales: httpx.Client, examples: DemoExamples
) -> None:
    emails = [email_of(sales, n) for n in (*examples.heavy_tickets, examples.company, examples.person)]
    everything = support.post(
        "/v2/tickets/search", json={"requester_emails": emails[-2:], "limit": 500}
    ).json()
    tickets, _ = search_all(support, {"requester_emails": [*emails, "nobody@nowhere.cn"], "limit": 37})
    keys = [(t["requester_email"], -t["created_at"], -t["id"]) for t in tickets]
    assert keys == sorted(keys) and len({t["id"] for t in tickets}) == len(tickets)
    assert {t["requester_email"] for t in tickets} == {e.lower() for e in emails}
    assert all(t in tickets for t in everything["tickets"])
    with_other_body = {"requester_emails": emails[:1], "limit": 37}
    cursor = support.post("/v2/tickets/search", json={"requester_emails": emails, "limit": 37}).json()
    reused = support.post("/v2/tickets/search", json=with_other_body | {"cursor": cursor["next_cursor"]})
    assert reused.status_code == 400


# --- support's rate limit --------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after(demo: DemoSystems, specs: dict[str, OpenAPI]) -> None:
    with DemoSystems(
        demo.data_dir,
        customers=CUSTOMERS,
        seed=SEED,
        anchor=ANCHOR,
        systems=["support"],
        support_port=0,
        in_memory=True,
    ) as limited:
        assert limited.support_rate == 50
        async with async_client(limited, "support") as client:
            answers = await asyncio.gather(*(client.get("/v2/requesters?emails=a@x.cn") for _ in range(80)))
            statuses = Counter(r.status_code for r in answers)
            assert statuses[200] >= 50 and statuses[429] >= 20 and statuses[200] + statuses[429] == 80
            for response in answers:
                check_against(specs["support"], response)
            refused = next(r for r in answers if r.status_code == 429)
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["errors"][0]["title"] == "Too Many Requests"

            # Past the rate nothing is done: the ticket is not created.
            while (await client.get("/v2/requesters?emails=a@x.cn")).status_code != 429:
                pass
            ticket = {"requester_email": "rate@example.cn", "subject": "s", "category": "question"}
            ticket |= {"priority": "low", "channel": "web", "body": "b"}
            assert (await client.post("/v2/tickets", json=ticket)).status_code == 429
            await asyncio.sleep(int(refused.headers["Retry-After"]))
            search = {"requester_emails": ["rate@example.cn"], "limit": 10}
            found = await client.post("/v2/tickets/search", json=search)
            assert found.status_code == 200 and found.json()["tickets"] == []


async def test_rate_limit_is_per_token(demo: DemoSystems) -> None:
    app = support_system.create_app(demo.data.support_db, tokens=["t1", "t2"], rate=5, in_memory=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://support") as client:
        first = [
            await client.get("/v2/requesters?emails=a@x.cn", headers={"Authorization": "Bearer t1"})
            for _ in range(7)
        ]
        assert [r.status_code for r in first] == [200] * 5 + [429] * 2
        other = await client.get("/v2/requesters?emails=a@x.cn", headers={"Authorization": "Bearer t2"})
        assert other.status_code == 200


# --- the register's in-flight limit ----------------------------------------------------------


async def test_fifth_concurrent_register_call_is_busy(faults: DemoSystems, examples: DemoExamples) -> None:
    faults.set_faults("contracts", latency_ms=400)
    async with async_client(faults, "contracts") as client:

        async def call() -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await client.get(f"/contracts/{examples.nda_contract_id}")
            return response, time.perf_counter() - started

        results = await asyncio.gather(*(call() for _ in range(5)))
        assert sorted(r.status_code for r, _ in results) == [200, 200, 200, 200, 503]
        busy, elapsed = next((r, t) for r, t in results if r.status_code == 503)
        assert busy.text == "busy" and elapsed < 0.3  # answered at once
        faults.clear_faults("contracts")
        assert (await client.get(f"/contracts/{examples.nda_contract_id}")).status_code == 200


async def test_register_limit_is_per_credentials(demo: DemoSystems, examples: DemoExamples) -> None:
    users = {"alice": "a", "bob": "b"}
    app = contracts_system.create_app(demo.data.contracts_db, users=users, latency_ms=(300, 300))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://register"
    ) as client:
        path = f"/contracts/{examples.nda_contract_id}"
        calls = [client.get(path, auth=("alice", "a")) for _ in range(5)]
        calls.append(client.get(path, auth=("bob", "b")))
        answers = await asyncio.gather(*calls)
        assert sorted(r.status_code for r in answers[:5]) == [200, 200, 200, 200, 503]
        assert answers[5].status_code == 200


# --- optimistic concurrency and idempotency --------------------------------------------------


async def test_two_reps_racing_for_an_account_one_gets_412(demo: DemoSystems, examples: DemoExamples) -> None:
    async with async_client(demo, "sales") as client:
        account = (await client.get("/api/v1/accounts/A100210")).json()
        tag = {"If-Match": f'"{account["version"]}"'}
        path = "/api/v1/accounts/A100210/owner"
        answers = await asyncio.gather(
            client.put(path, json={"owner_id": examples.rep}, headers=tag),
            client.put(path, json={"owner_id": None}, headers=tag),
        )
        assert sorted(r.status_code for r in answers) == [200, 412]
        winner = next(r for r in answers if r.status_code == 200).json()
        assert winner["version"] == account["version"] + 1
        assert (await client.get("/api/v1/accounts/A100210")).json() == winner


def test_stale_if_match_on_patch_is_412(sales: httpx.Client) -> None:
    response = sales.get("/api/v1/accounts/A100211")
    etag = response.headers["ETag"]
    assert sales.patch(
        "/api/v1/accounts/A100211", json={"phone": "13800000000"}, headers={"If-Match": etag}
    ).is_success
    stale = sales.patch("/api/v1/accounts/A100211", json={"phone": "13900000000"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert sales.get("/api/v1/accounts/A100211").json()["phone"] == "13800000000"


def test_idempotency_key_on_patch_returns_the_first_answer(sales: httpx.Client) -> None:
    etag = sales.get("/api/v1/accounts/A100212").headers["ETag"]
    headers = {"Idempotency-Key": "patch-212", "If-Match": etag}
    first = sales.patch("/api/v1/accounts/A100212", json={"status": "churned"}, headers=headers)
    again = sales.patch("/api/v1/accounts/A100212", json={"status": "churned"}, headers=headers)
    assert first.status_code == again.status_code == 200  # not 412: the repeat is not re-applied
    assert again.json() == first.json() and again.headers["ETag"] == first.headers["ETag"]
    assert sales.get("/api/v1/accounts/A100212").json()["version"] == first.json()["version"]
    other = sales.patch(
        "/api/v1/accounts/A100212", json={"status": "lead"}, headers={"Idempotency-Key": "patch-212"}
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "conflict"


def test_idempotency_key_on_new_activity(sales: httpx.Client, examples: DemoExamples) -> None:
    body = {"account_no": "A100213", "type": "call", "occurred_at": "2025-06-28T02:00:00Z"}
    body |= {"subject": "回访", "notes": "客户满意。", "by_user": examples.rep}
    first = sales.post("/api/v1/activities", json=body, headers={"Idempotency-Key": "act-213"})
    again = sales.post("/api/v1/activities", json=body, headers={"Idempotency-Key": "act-213"})
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    listed = sales.get("/api/v1/activities", params={"account_nos": "A100213"}).json()["data"]
    assert [a["activity_id"] for a in listed].count(first.json()["activity_id"]) == 1
    assert sum(a["subject"] == "回访" and a["occurred_at"] == "2025-06-28T02:00:00Z" for a in listed) == 1


def test_request_id_makes_new_ticket_idempotent(support: httpx.Client) -> None:
    body = {"requester_email": "once@example.cn", "subject": "重复提交", "category": "request"}
    body |= {"priority": "normal", "channel": "email", "body": "只应有一张工单。"}
    first = support.post("/v2/tickets", json=body, headers={"X-Request-Id": "req-once"})
    again = support.post("/v2/tickets", json=body, headers={"X-Request-Id": "req-once"})
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    found = support.post("/v2/tickets/search", json={"requester_emails": ["once@example.cn"], "limit": 10})
    assert [t["id"] for t in found.json()["tickets"]] == [first.json()["ticket"]["id"]]


async def test_writes_reach_the_change_hook(demo: DemoSystems, examples: DemoExamples) -> None:
    events: list[dict[str, Any]] = []
    sales_app = sales_system.create_app(demo.data.sales_db, in_memory=True, on_change=events.append)
    support_app = support_system.create_app(demo.data.support_db, in_memory=True, on_change=events.append)
    headers = {"X-Api-Key": sales_system.DEFAULT_API_KEY}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sales_app), base_url="http://s") as client:
        await client.patch("/api/v1/accounts/A100220", json={"title": "董事长"}, headers=headers)
        await client.put("/api/v1/accounts/A100220/owner", json={"owner_id": None}, headers=headers)
        activity = {"account_no": "A100220", "type": "call", "occurred_at": "2025-06-01T00:00:00Z"}
        activity |= {"subject": "s", "notes": "n", "by_user": examples.rep}
        await client.post("/api/v1/activities", json=activity, headers=headers)
    headers = {"Authorization": f"Bearer {support_system.DEFAULT_TOKEN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=support_app), base_url="http://h"
    ) as client:
        ticket = {"requester_email": "Hook@Example.cn", "subject": "s", "category": "question"}
        ticket |= {"priority": "low", "channel": "web", "body": "b"}
        created = (await client.post("/v2/tickets", json=ticket, headers=headers)).json()["ticket"]
    assert [e.get("type") or e.get("kind") for e in events] == [
        "account.updated",
        "account.owner_changed",
        "activity.created",
        "ticket.created",
    ]
    assert all(e["event_id"].startswith("ev_") and e["account_no"] == "A100220" for e in events[:3])
    assert events[3]["id"].startswith("evt-") and events[3]["ticket_id"] == created["id"]
    assert events[3]["requester_email"] == "hook@example.cn"
    with sqlite3.connect(demo.data.sales_db) as db:  # in_memory: the file did not change
        assert db.execute("SELECT title FROM accounts WHERE account_no = 'A100220'").fetchone()[0] != "董事长"


# --- faults ----------------------------------------------------------------------------------


async def test_latency_is_non_blocking(faults: DemoSystems) -> None:
    faults.set_faults("sales", latency_ms=300, jitter_ms=50)
    async with async_client(faults, "sales") as client:
        started = time.perf_counter()
        answers = await asyncio.gather(*(client.get(f"/api/v1/accounts/A10000{i}") for i in range(1, 9)))
        elapsed = time.perf_counter() - started
    assert all(r.status_code == 200 for r in answers)
    assert 0.3 <= elapsed < 0.9  # eight calls at once, not one after the other
    assert faults.stats("sales")["peak_in_flight"] >= 8


def test_error_rate_answers_each_systems_own_503(
    faults: DemoSystems, sales: httpx.Client, support: httpx.Client, contracts: httpx.Client
) -> None:
    for system in ("sales", "support", "contracts"):
        assert faults.set_faults(system, error_rate=1)["error_rate"] == 1
    response = sales.get("/api/v1/accounts/A100001")
    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
    response = support.get("/v2/tickets/88001")
    assert response.status_code == 503 and response.json()["errors"][0]["title"] == "Service Unavailable"
    response = contracts.get("/contracts/HT-2024-00001")
    assert response.status_code == 503 and response.text == "busy"
    assert sales.get("/health").status_code == 200  # /health is not faulted
    faults.set_faults("sales", error_rate=0.5)
    statuses = {sales.get("/api/v1/accounts/A100001").status_code for _ in range(40)}
    assert statuses == {200, 503}


def test_hang_until_the_client_gives_up(faults: DemoSystems, client: Any) -> None:
    faults.set_faults("sales", hang=True)
    impatient = client("sales", timeout=0.3)
    with pytest.raises(httpx.ReadTimeout):
        impatient.get("/api/v1/accounts/A100001")
    assert impatient.get("/health").status_code == 200
    faults.clear_faults("sales")
    assert impatient.get("/api/v1/accounts/A100001").status_code == 200
    deadline = time.monotonic() + 2
    while faults.stats("sales")["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert faults.stats("sales")["in_flight"] == 0  # the abandoned call ended


async def test_hang_until_the_fault_is_cleared(faults: DemoSystems) -> None:
    faults.set_faults("support", hang=True)
    async with async_client(faults, "support", timeout=5) as client:
        body = {"requester_emails": ["a@x.cn"], "limit": 5}
        pending = asyncio.ensure_future(client.post("/v2/tickets/search", json=body))
        await asyncio.sleep(0.3)
        assert not pending.done()
        faults.clear_faults("support")
        response = await pending
    assert response.status_code == 200 and response.json() == {"tickets": [], "next_cursor": None}


def test_down_drops_connections(faults: DemoSystems, client: Any) -> None:
    support = client("support")
    assert support.get("/health").status_code == 200
    faults.set_faults("support", down=True)
    with pytest.raises(httpx.TransportError):
        support.get("/v2/tickets/88001")
    with pytest.raises(httpx.TransportError):
        support.get("/health")
    assert faults.stats("support")["statuses"].get("dropped", 0) >= 1
    assert support.get("/_demo/faults").json()["down"] is True  # the control routes still answer
    faults.clear_faults("support")
    assert support.get("/v2/tickets/88001").status_code == 200


def test_faults_api(demo: DemoSystems) -> None:
    url = f"{demo.sales_url}/_demo/faults"
    try:
        assert httpx.post(url, json={"latency_ms": 5, "hang": False}).json() == {
            "latency_ms": 5.0,
            "jitter_ms": 0.0,
            "error_rate": 0.0,
            "down": False,
            "hang": False,
        }
        assert httpx.post(url, json={"error_rate": 0.1}).json()["latency_ms"] == 0  # replaces all
        assert httpx.post(url, json={"error_rate": 2}).status_code == 400
        assert httpx.post(url, json={"slow": True}).status_code == 400
        assert httpx.post(url, content=b"").json()["error_rate"] == 0  # an empty body clears
        assert httpx.get(url).json()["error_rate"] == 0
    finally:
        demo.clear_faults("sales")


# --- stats -----------------------------------------------------------------------------------


async def test_stats_count_calls_per_endpoint(demo: DemoSystems, client: Any) -> None:
    demo.reset_stats("sales")
    sales = client("sales")
    for account_no in ("A100001", "A100002", "A000000"):
        sales.get(f"/api/v1/accounts/{account_no}")
    sales.get("/api/v1/users?ids=u-1001")
    client("sales", auth=False).get("/api/v1/users?ids=u-1001")
    sales.get("/health")
    demo.stats("sales")
    stats = demo.stats("sales")
    assert stats["system"] == "sales" and stats["count"] == 5
    assert stats["endpoints"]["GET /api/v1/accounts/{account_no}"]["count"] == 3
    assert stats["endpoints"]["GET /api/v1/accounts/{account_no}"]["statuses"] == {"200": 2, "404": 1}
    assert stats["endpoints"]["GET /api/v1/users"]["statuses"] == {"200": 1, "401": 1}
    assert set(stats["endpoints"]) == {"GET /api/v1/accounts/{account_no}", "GET /api/v1/users"}

    demo.set_faults("sales", latency_ms=200)
    try:
        async with async_client(demo, "sales") as concurrent:
            await asyncio.gather(*(concurrent.get("/api/v1/users?ids=u-1001") for _ in range(6)))
    finally:
        demo.clear_faults("sales")
    stats = demo.stats("sales")
    assert stats["endpoints"]["GET /api/v1/users"]["peak_in_flight"] == 6 and stats["in_flight"] == 0

    demo.reset_stats("sales")
    stats = demo.stats("sales")
    assert stats["count"] == 0 and stats["endpoints"] == {} and stats["peak_in_flight"] == 0


# --- the data through the APIs ---------------------------------------------------------------


def test_dormant_customer_has_nothing_in_the_last_year(
    sales: httpx.Client, support: httpx.Client, contracts: httpx.Client, examples: DemoExamples
) -> None:
    cut = anchor_epoch(ANCHOR) - DORMANT_DAYS * DAY
    account = sales.get(f"/api/v1/accounts/{examples.dormant}").json()
    activities = sales.get(
        "/api/v1/activities", params={"account_nos": account["account_no"], "since": iso(cut)}
    )
    assert activities.json()["data"] == []
    assert sales.get("/api/v1/activities", params={"account_nos": account["account_no"]}).json()["data"]
    if account["email"]:
        body = {"requester_emails": [account["email"]], "updated_after": cut, "limit": 10}
        assert support.post("/v2/tickets/search", json=body).json()["tickets"] == []
    if account["tax_id"]:
        for contract in contracts.get("/contracts", params={"party_tax_id": account["tax_id"]}).json():
            assert max(contract["starts_on"], contract["signed_on"] or "", contract["updated_on"]) < day(cut)
